"""Mixed precision: which ops of an int8 model keep int16 activations (int8 weights).

``--int16`` takes selectors (:func:`lhp_tf.converters.quantizer.select_ops`: an op type such
as ``LOGISTIC``, ``TYPE@REGEX`` or ``@REGEX`` on output tensor names) or ``auto``.

``auto`` works on groups of ops, one per network module (the stem, each transition, each
stage's CCW and fusion modules, the head: :func:`op_groups`), because int8's error in
Lite-HRNet is spread thin: on the synthetic lhp-large no single op type or block explains the
drift (int16 for every SCAF sigmoid, the ops with by far the worst int8 noise-to-signal:
+0.311 against +0.324 points; all activations in int16: -0.003). Each group's benefit is how
much the heatmap error against float (mean square, :data:`PROXY_IMAGES` calibration images)
drops when that group alone computes in int16; groups are taken best first, and the fewest
that bring the NME drift within budget are kept: 0, 1, 2, 4, ... groups until one passes,
then a bisection down to the smallest count that passes (:func:`choose`). The drift is scored
with the board's runtime and decoder on faces of the recipe's TRAINING split through the
evaluation preprocessing, so the held-out faces the drift is reported on stay unseen. The
range table is calibrated once and reused by every trial.

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

#: training faces the auto choice scores on
AUTO_FACES = 200
#: calibration images the group benefits are measured on
PROXY_IMAGES = 16

_GROUP = re.compile(r"^(stem|head|transition\d*|(?:ccw|fusion)_s\d+m\d+)")


@dataclass
class Trial:
    count: int
    drift: float

    def as_dict(self) -> dict[str, Any]:
        return {"int16_groups": self.count, "drift_points": self.drift}


@dataclass
class AutoChoice:
    """What ``auto`` picked and why (goes into the model's metadata)."""

    ops: list[str]
    groups: list[str]
    float_nme: float
    budget: float
    drift: float
    trials: list[Trial] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"groups": self.groups, "float_nme": self.float_nme, "budget_points": self.budget, "drift_points": self.drift,
                "within_budget": self.drift <= self.budget, "trials": [t.as_dict() for t in self.trials],
                "faces": "training split, evaluation preprocessing"}


def choose(ranked: Sequence[str], drift_of: Callable[[Sequence[str]], float], budget: float) -> tuple[list[str], list[Trial]]:
    """The shortest prefix of ``ranked`` whose drift is within ``budget`` (the best prefix tried
    when none is)."""
    trials: list[Trial] = []
    cache: dict[int, float] = {}

    def drift(k: int) -> float:
        if k not in cache:
            cache[k] = drift_of(list(ranked[:k]))
            trials.append(Trial(k, cache[k]))
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


def heatmap_error(model: bytes, images: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray | float:
    """The model's (dequantised) outputs on ``images``; with a ``reference``, their mean square
    difference from it."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=model)
    it.allocate_tensors()
    src, dst = it.get_input_details()[0], it.get_output_details()[0]
    out = []
    for img in images:
        x = np.asarray(img, np.float32)[None]
        if src["dtype"] != np.float32:
            scale, zero = src["quantization"]
            info = np.iinfo(src["dtype"])
            x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(src["dtype"])
        it.set_tensor(src["index"], x)
        it.invoke()
        y = it.get_tensor(dst["index"]).astype(np.float32)
        if dst["dtype"] != np.float32:
            scale, zero = dst["quantization"]
            y = (y - zero) * scale
        out.append(y)
    y = np.concatenate(out)
    return y if reference is None else float(np.mean((y - reference) ** 2))


def rank_groups(float_model: bytes, table: Any, images: np.ndarray) -> list[tuple[str, list[str], float]]:
    """``(group, its op names, benefit)``, best first; groups whose int16 does not help are left out."""
    from lhp_tf.converters.quantizer import FloatGraph, quantize

    graph = FloatGraph.read(float_model)
    groups = op_groups([graph.names[outs[0]] for _, _, outs in graph.ops if outs])
    reference = heatmap_error(float_model, images)
    base = heatmap_error(quantize(float_model, table), images, reference)
    ranked = [(g, names, base - heatmap_error(quantize(float_model, table, names), images, reference))
              for g, names in groups.items()]
    return sorted([r for r in ranked if r[2] > 0], key=lambda r: -r[2])


def auto_int16(float_model: bytes, table: Any, calib: np.ndarray, bundle: dict[str, Any], decoder: str,
               finish: Callable[[bytes], bytes]) -> AutoChoice:
    """Pick int16 ops for ``float_model`` calibrated as ``table``; ``finish`` embeds the metadata
    the runtime decodes with (the board's decoder needs the model's codec)."""
    from lhp_tf.converters.quantizer import quantize

    from .drift import score_tflite, tolerance

    with tempfile.TemporaryDirectory(prefix="lhp_int16_") as tmp:
        def score(data: bytes, name: str) -> float:
            path = Path(tmp) / name
            path.write_bytes(finish(data))
            return score_tflite(path, bundle, decoder)[0]

        float_nme = score(float_model, "float.tflite")
        budget = tolerance(float_nme)
        pure = score(quantize(float_model, table), "int8.tflite") - float_nme
        # groups are ranked (one quantisation per group) only when pure int8 is over budget
        ranked = rank_groups(float_model, table, calib[-PROXY_IMAGES:]) if pure > budget else []

        def drift_of(groups: Sequence[str]) -> float:
            if not groups:
                return pure
            names = [n for g, ops, _ in ranked if g in groups for n in ops]
            return score(quantize(float_model, table, names), "trial.tflite") - float_nme

        groups, trials = choose([g for g, _, _ in ranked], drift_of, budget)
    ops = [n for g, names, _ in ranked if g in groups for n in names]
    drift = next(t.drift for t in reversed(trials) if t.count == len(groups))
    return AutoChoice(ops, groups, float_nme, budget, drift, trials)
