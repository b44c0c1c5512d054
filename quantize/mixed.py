"""Mixed precision: which ops of an int8 model keep int16 activations (int8 weights).

``--int16`` takes selectors (:func:`lhp_tf.converters.quantizer.select_ops`: an op type such
as ``LOGISTIC``, ``TYPE@REGEX`` or ``@REGEX`` on output tensor names) or ``auto``.

``auto`` works on groups of ops, one per network module (the stem, each transition, each
stage's CCW and fusion modules, the head: :func:`op_groups`), because int8's error in
Lite-HRNet is spread thin: on the synthetic lhp-large no single op type or block explains the
drift (int16 for every SCAF sigmoid, the ops with by far the worst int8 noise-to-signal:
+0.311 against +0.324 points; all activations in int16: -0.003). Each group's benefit is how
much the heatmap error against float (mean square, :data:`PROXY_IMAGES` of the faces below)
drops when that group alone computes in int16; groups are taken best first, and the fewest
that bring the NME drift within budget are kept: 0, 1, 2, 4, ... groups until one passes,
then a bisection down to the smallest count that passes (:func:`choose`). The drift is scored
with the board's runtime and decoder on faces of the recipe's TRAINING split through the
training augmentation (:func:`lhp_tf.quantize.calibration.augmented_bundle`), so the held-out
faces the drift is reported on stay unseen: on the plain training crops, which the model has
fitted, int8 costs far less than on unseen faces (synthetic lhp-large, 10 epochs, min/max
ranges: +0.027 there, +0.131 held out), and auto kept too few int16 ops. The range table is
calibrated once and reused by every trial.

A trial passes when the drift's one-sided 95% prediction bound is within budget, not the mean
alone: the bound on the mean drift that ANOTHER set of as many faces (the held-out faces a
drift report scores) will measure, which carries the standard error of both samples: mean
per-face NME difference plus :data:`CONFIDENCE_Z` x sqrt(2) standard errors, the faces
paired (:func:`paired_drift`). Measured on the synthetic lhp-large (20 epochs, budget 0.100):
the mean-only rule stopped at 25 of 30 groups with +0.084 on the training faces, and the
held-out faces then measured +0.104; the bound on the mean alone (mean + 1.645 standard
errors, 0.091) stopped at 10 groups with +0.064 there, and the held-out faces measured +0.102;
the prediction bound (0.094) stops at 20 groups (1,314 ops) with +0.061 there, and the
held-out faces measure +0.084.

The bound covers sampling noise, not that training faces are easier for the model than unseen
ones, even augmented: the held-out drift of one int8 model measured 1.10 to 1.77x its drift on
the augmented training faces (seven models: the synthetic lhp-small and lhp-large at 10 and 20
epochs, pure int8 and auto's choice, on a machine whose trained weights drift more than the
README's first table's), and a choice passing on the bound alone then drifted +0.108 (lhp-small,
20 epochs) and +0.097 (lhp-large, 20 epochs) against budgets of 0.100. So a trial passes when
:data:`HELD_OUT_GAP` x the bound is within budget (:func:`held_out_drift`). Measured with it
(same checkpoints, held-out drift, budget 0.100; before -> after): lhp-small 10 epochs +0.067
(98 int16 ops) -> +0.018 (812 ops, 12 of 18 modules), 20 epochs +0.108 (32) -> +0.055 (601,
11); lhp-large 10 epochs +0.075 (1,267) -> +0.030 (2,014, 30 modules), 20 epochs +0.097 (1,179)
-> +0.066 (1,477, 20 modules). At such small drifts the ratio itself is noise (held-out over
training faces 0.7 to 3.0x, a difference of -0.008 to +0.044 points): the factor is a margin
sized on the larger drifts, not a model of the gap. The price is int16 ops: on an NPU with
int16 kernels, time; on XNNPACK, which has none, most of the graph leaves the delegate.

Default (``lhp convert --quant int8``): pure int8, no int16 op. XNNPACK runs no int16 op, so
every int16 op and each int8<->int16 conversion around it leave the delegate (see
:mod:`lhp_tf.converters.quantizer`): a mixed model trades the CPU's speed for accuracy and is
for targets with int16 kernels (Ethos-U and other integer NPUs). ``--int16 auto`` is one flag
away.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: training faces the auto choice scores on (drawn; those with a landmark outside the
#: augmented crop are left out, about a quarter on the synthetic recipe)
AUTO_FACES = 400
#: augmented training faces the group benefits are measured on
PROXY_IMAGES = 32
#: one-sided 95%: the prediction bound is the mean drift plus this many standard errors of the
#: difference between two means over as many faces (x sqrt(2) the standard error of one)
CONFIDENCE_Z = 1.645
#: held-out drift over training-face drift, the largest measured (1.77, module docs) rounded up:
#: the factor auto's bound is scaled by before it is held against the budget
HELD_OUT_GAP = 1.8

_GROUP = re.compile(r"^(stem|head|transition\d*|(?:ccw|fusion)_s\d+m\d+)")


@dataclass
class Trial:
    """``count`` groups in int16: mean drift and the bound held against the budget (what passes or
    fails, :func:`held_out_drift`), NME points."""

    count: int
    drift: float
    upper: float

    def as_dict(self) -> dict[str, Any]:
        return {"int16_groups": self.count, "drift_points": self.drift, "drift_upper_points": self.upper}


def paired_drift(int8_faces: np.ndarray, float_faces: np.ndarray) -> tuple[float, float]:
    """Mean per-face NME difference and its one-sided prediction bound for the mean over another
    set of as many faces (:data:`CONFIDENCE_Z`)."""
    d = np.asarray(int8_faces, np.float64) - np.asarray(float_faces, np.float64)
    se = float(d.std(ddof=1) / np.sqrt(d.size)) if d.size > 1 else 0.0
    return float(d.mean()), float(d.mean() + CONFIDENCE_Z * np.sqrt(2.0) * se)


def held_out_drift(int8_faces: np.ndarray, float_faces: np.ndarray) -> tuple[float, float]:
    """Mean per-face drift on the training faces scored, and the bound auto holds against the
    budget: :data:`HELD_OUT_GAP` x :func:`paired_drift`'s prediction bound."""
    mean, upper = paired_drift(int8_faces, float_faces)
    return mean, HELD_OUT_GAP * upper


@dataclass
class AutoChoice:
    """What ``auto`` picked and why (goes into the model's metadata)."""

    ops: list[str]
    groups: list[str]
    float_nme: float
    budget: float
    drift: float
    upper: float
    faces: int
    trials: list[Trial] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"groups": self.groups, "float_nme": self.float_nme, "budget_points": self.budget, "drift_points": self.drift,
                "drift_upper_points": self.upper, "confidence_z": CONFIDENCE_Z, "held_out_gap": HELD_OUT_GAP,
                "within_budget": self.upper <= self.budget,
                "trials": [t.as_dict() for t in self.trials],
                "faces": f"{self.faces} of the training split, training augmentation"}


def choose(ranked: Sequence[str], drift_of: Callable[[Sequence[str]], tuple[float, float]],
           budget: float) -> tuple[list[str], list[Trial]]:
    """The shortest prefix of ``ranked`` whose drift's upper bound is within ``budget`` (the best
    prefix tried when none is); ``drift_of`` gives (drift, upper bound)."""
    trials: list[Trial] = []
    cache: dict[int, float] = {}

    def drift(k: int) -> float:
        if k not in cache:
            mean, upper = drift_of(list(ranked[:k]))
            cache[k] = upper
            trials.append(Trial(k, mean, upper))
        return cache[k]

    if drift(0) <= budget or not ranked:
        return [], trials
    lo, hi = 0, 1
    while hi < len(ranked) and drift(hi) > budget:
        lo, hi = hi, min(2 * hi, len(ranked))
    if drift(hi) > budget:
        best = min(cache, key=lambda k: cache[k])
        return list(ranked[:best]), trials
    while hi - lo > 1:  # drift(lo) over budget, drift(hi) within
        mid = (lo + hi) // 2
        if drift(mid) <= budget:
            hi = mid
        else:
            lo = mid
    return list(ranked[:hi]), trials


def op_groups(names: Sequence[str]) -> dict[str, list[str]]:
    """Op output names grouped by network module (``stem``, ``transition1``, ``ccw_s1m0``,
    ``fusion_s2m1``, ``head``; ``other`` for what no module claims), in graph order."""
    groups: dict[str, list[str]] = {}
    for name in names:
        # "layer/op" (Keras 3 export) or "model/layer/op" (tf_keras): the first part naming a module
        found = (_GROUP.match(part) for part in name.split(";")[0].split("/"))
        m = next((f for f in found if f), None)
        groups.setdefault(m.group(1) if m else "other", []).append(name)
    return groups


def rank_groups(float_model: bytes, table: Any, images: np.ndarray) -> list[tuple[str, list[str], float]]:
    """``(group, its op names, benefit)`` for every group, best first. Groups whose int16 alone
    does not lower the proxy error still come last: int8's error in these networks adds up
    over many modules, so a prefix of only the "helpful" ones can stop short of the budget
    (synthetic lhp-large, 10 epochs: the best prefix of its 19 helpful groups reached an upper
    bound of +0.125 against a budget of 0.113), while all of them in int16 drift -0.003."""
    from lhp_tf.converters.quantizer import FloatGraph, heatmap_error, quantize

    graph = FloatGraph.read(float_model)
    groups = op_groups([graph.names[outs[0]] for _, _, outs in graph.ops if outs])
    reference = heatmap_error(float_model, images)
    base = heatmap_error(quantize(float_model, table), images, reference)
    ranked = [(g, names, base - heatmap_error(quantize(float_model, table, names), images, reference))
              for g, names in groups.items()]
    return sorted(ranked, key=lambda r: -r[2])


def auto_int16(float_model: bytes, table: Any, bundle: dict[str, Any], decoder: str,
               finish: Callable[[bytes], bytes]) -> AutoChoice:
    """Pick int16 ops for ``float_model`` calibrated as ``table``; ``finish`` embeds the metadata
    the runtime decodes with (the board's decoder needs the model's codec)."""
    from lhp_tf.converters.quantizer import quantize

    from lhp_tf.metrics import nme

    from .drift import score_tflite, tolerance

    with tempfile.TemporaryDirectory(prefix="lhp_int16_") as tmp:
        def faces(data: bytes, name: str) -> np.ndarray:
            """Per-face NME (percent) of ``data`` on the bundle."""
            path = Path(tmp) / name
            path.write_bytes(finish(data))
            pred = score_tflite(path, bundle, decoder)[1]
            return 100.0 * np.asarray(nme(pred, bundle["landmarks"], bundle["norm"]), np.float64)

        float_faces = faces(float_model, "float.tflite")
        float_nme = float(float_faces.mean())
        budget = tolerance(float_nme)
        pure = held_out_drift(faces(quantize(float_model, table), "int8.tflite"), float_faces)
        # groups are ranked (one quantisation per group) only when pure int8 may be over budget
        probe = bundle["images"][:PROXY_IMAGES].astype(np.float32) / 255.0  # the faces the trials score on
        ranked = rank_groups(float_model, table, probe) if pure[1] > budget else []

        def drift_of(groups: Sequence[str]) -> tuple[float, float]:
            if not groups:
                return pure
            names = [n for g, ops, _ in ranked if g in groups for n in ops]
            return held_out_drift(faces(quantize(float_model, table, names), "trial.tflite"), float_faces)

        groups, trials = choose([g for g, _, _ in ranked], drift_of, budget)
    ops = [n for g, names, _ in ranked if g in groups for n in names]
    chosen = next(t for t in reversed(trials) if t.count == len(groups))
    return AutoChoice(ops, groups, float_nme, budget, chosen.drift, chosen.upper, len(float_faces), trials)
