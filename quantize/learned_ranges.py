"""Int8 ranges learned end to end (``export.calibration: learned``).

The MSE search (:func:`lhp_tf.converters.quantizer.mse_ranges`) picks each activation's range
for its own tensor's rounding and clipping error; what the landmarks feel is the error that
reaches the heatmaps through the rest of the graph. Here the ranges are trained for that:

1. the converter's range table, calibrated with ``mse``, is the start;
2. the int8 deploy graph's simulation (:func:`lhp_tf.quantize.deploy_qat.simulation`: the
   same graph, every tensor rounded where the int8 model holds it) gets each fake-quant
   node's range from the table, matched by the Keras layer that writes the tensor
   (:meth:`~lhp_tf.converters.quantizer.FloatGraph.tensors_by_layer`);
3. only the ranges train, weights frozen, LSQ-style: ``lo + s * clip(round((x - lo) / s), 0,
   255)`` with ``s = (hi - lo) / 255`` and the rounding straight through, so clipping AND
   rounding error reach ``lo`` and ``hi`` (TensorFlow's fake-quant op passes no gradient to
   its range from inside it); loss: mean square heatmap difference from the float graph on
   batches of the calibration images; Adam with steps relative to each range's size;
   tensors int8 holds at one scale (joined by splits, slices, reshapes, concatenations and
   the deploy graph's permutation convs) train ONE range per group (:func:`tied_rows`),
   starting from the union of their table ranges;
4. the learned ranges go back into the table, and the converter's own edits finish it
   (:func:`~lhp_tf.converters.quantizer.fit_for_int8`: the tensors that only copy values take
   their group's learned range, bias and XNNPACK limits).

Why tied: the conversion gives each such group one range, the union of its members'; trained
apart, the members' ranges were not what the int8 model rounds with (on the four synthetic
checkpoints 78-79 of lhp-small's 458 learned ranges and 172-173 of lhp-large's 1,088 came out
wider in the converted model). Tied, lhp-small trains 395 ranges and lhp-large 944. Held-out
drift, the four synthetic checkpoints of the README (AVX-512/AMX machine; ``lhp quantize
ranges COPY/best.keras``, then ``lhp quantize drift COPY/best.keras --data
RUN/int8_drift/full.npz --set export.calibration=learned``), per tensor -> tied: lhp-small
10 epochs +0.043 -> -0.017, 20 epochs +0.026 -> +0.029; lhp-large 10 epochs +0.045 ->
+0.033, 20 epochs +0.096 -> +0.069 (the graph of that time, SCAF's channel means as convs;
with them as MEAN ops the same tied ranges give -0.020, +0.024, +0.021, +0.071). The simulated loss the learning ends at is higher tied
(lhp-large 20 epochs 6.2e-5 against 4.0e-5), but untied it was measured under ranges the
conversion does not keep.

The result is the same pure int8 graph as any other calibration (only scales differ). Measured
before the ranges were tied (``benchmarks/learned_ranges.py``, 400 steps, held-out faces of
the synthetic recipe), drift with the MSE table -> learned: on an AVX2 machine's checkpoints
lhp-small 10 epochs +0.111 -> +0.044, 20 epochs +0.176 -> +0.028, lhp-large 10 epochs +0.261
-> +0.026; on an AVX-512/AMX machine's +0.061 -> +0.043, +0.052 -> +0.026 and +0.193 ->
+0.045 (``auto``: +0.122).

Simulated tensors with no table entry (the image, fixed by the input contract) keep their
min/max range and do not train.

Learning costs minutes on a small CPU (lhp-small on 2 cores: ~22 s to build and calibrate the
simulation, ~25 s to trace its gradient, ~0.29 s per step of 16 images; XLA's ``jit_compile``
measured slower: 107 s to compile, 0.35 s per step), far beyond what a conversion should
take. So the ranges are learned once per checkpoint and deploy target and saved beside it
(``best.keras`` -> ``best.ranges.json``, :func:`ranges_path`): by ``lhp train`` when its recipe
asks for learned int8, or by ``lhp quantize ranges CKPT``. The file is a cache of a seeded
computation: ``lhp convert`` uses it when its :class:`Key` (the checkpoint's SHA-256, the
deploy target, calibration images and steps) is the conversion's own, and otherwise learns
the same ranges itself (and says so). Its ranges are keyed by the Keras layer that writes each
tensor: a reader can see and edit them.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import types
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from lhp_tf.converters.deploy import DEFAULT_TARGET

from lhp_tf.errors import LhpError

#: training steps (each a batch of :data:`BATCH` calibration images); ``export.learned_steps``
STEPS = 400
#: Adam's step, relative to each range bound's size
LEARNING_RATE = 0.01
#: calibration images per step
BATCH = 16
#: the saved file's ``format`` entry
FORMAT = "lhp-tf learned int8 ranges"
#: ``best.keras`` -> ``best.ranges.json`` (:func:`ranges_path`)
SUFFIX = ".ranges.json"
#: how the ranges are trained (:class:`Key`'s ``ties``): one range per group of tensors int8
#: holds at one scale (:func:`tied_rows`); files without the entry trained every tensor's own
TIES = "scale groups"


@dataclass(frozen=True)
class Key:
    """What the learned ranges depend on besides the recipe's calibration images themselves."""

    checkpoint_sha256: str
    target: str
    calib_samples: int
    steps: int
    learning_rate: float = LEARNING_RATE
    #: "" in files saved before ranges were tied (each tensor trained alone)
    ties: str = ""

    @classmethod
    def of(cls, checkpoint: str | os.PathLike[str] | None, target: str, calib_samples: int, steps: int) -> Key:
        """The key of ``checkpoint``'s file (None: an in-memory model, no digest)."""
        digest = hashlib.sha256(Path(checkpoint).read_bytes()).hexdigest() if checkpoint is not None else ""
        return cls(digest, target, int(calib_samples), int(steps), ties=TIES)


@dataclass
class LearnedRanges:
    """Learned int8 ranges by the Keras layer writing each tensor (``{layer: [lo, hi]}``), the
    :class:`Key` they were learned under and how the learning went (``stats``)."""

    ranges: dict[str, list[float]]
    key: Key
    stats: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "key": asdict(self.key), "stats": self.stats,
                           "ranges": self.ranges}, indent=1, sort_keys=True) + "\n"


def learns(recipe: Any) -> bool:
    """Whether ``recipe``'s int8 export takes learned ranges (so training should save them)."""
    from lhp_tf.kinds import LEARNED

    return recipe.export.quant == "int8" and recipe.export.calibration == LEARNED


def ranges_path(checkpoint: str | os.PathLike[str], target: str = DEFAULT_TARGET) -> Path:
    """Where the ranges learned for ``checkpoint``'s ``target`` graph are saved: ``best.keras``
    -> ``best.ranges.json`` for the default target, ``best.npu.ranges.json`` for ``npu``."""
    path = Path(checkpoint)
    return path.with_name(path.stem + ("" if target == DEFAULT_TARGET else f".{target}") + SUFFIX)


def load(path: str | os.PathLike[str]) -> LearnedRanges:
    """A saved :class:`LearnedRanges`; a malformed file is an error naming it and the bad entry."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise LhpError(f"{path}: not a learned-ranges file ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise LhpError(f"{path}: 'format' is not {FORMAT!r}")
    try:
        key = Key(**data["key"])
    except (KeyError, TypeError) as exc:
        raise LhpError(f"{path}: bad 'key' ({exc})") from exc
    ranges = data.get("ranges")
    if not isinstance(ranges, dict):
        raise LhpError(f"{path}: 'ranges' must map layer names to [lo, hi]")
    for layer, bounds in ranges.items():
        if (not isinstance(bounds, list) or len(bounds) != 2 or not all(isinstance(b, int | float) for b in bounds)
                or not np.all(np.isfinite(bounds)) or not bounds[0] <= 0.0 <= bounds[1] or bounds[0] == bounds[1]):
            raise LhpError(f"{path}: ranges.{layer}: expected [lo, hi] with lo <= 0 <= hi, lo < hi; got {bounds!r}")
    return LearnedRanges({k: [float(b) for b in v] for k, v in ranges.items()}, key, dict(data.get("stats") or {}))


def save(path: str | os.PathLike[str], learned: LearnedRanges) -> Path:
    """Write ``learned`` to ``path`` atomically."""
    from lhp_tf.checkpoint import atomic_write_text

    atomic_write_text(path, learned.to_json())
    return Path(path)


def saved_for(checkpoint: str | os.PathLike[str], key: Key) -> tuple[LearnedRanges | None, str]:
    """The ranges saved beside ``checkpoint`` if they were learned under ``key``, else None; and
    why not, in words (empty when found)."""
    path = ranges_path(checkpoint, key.target)
    if not path.is_file():
        return None, f"no {path.name} beside the checkpoint"
    saved = load(path)
    differ = [name for name, value in asdict(key).items() if asdict(saved.key).get(name) != value]
    if differ:
        return None, f"{path} was learned under another {', '.join(differ)}"
    return saved, ""


def _lsq(tf: Any, x: Any, lo: Any, hi: Any) -> Any:
    """``x`` on the 8-bit grid of [lo, hi], with gradients to x (inside), lo and hi."""
    s = (hi - lo) / 255.0
    u = (x - lo) / s
    return tf.clip_by_value(u + tf.stop_gradient(tf.round(u) - u), 0.0, 255.0) * s + lo


class TrainableRanges:
    """The ranges of simulation fake-quant nodes ``fqs`` as one trainable ``(n, 2)`` variable
    (``bounds``), each node rounding LSQ-style (:func:`_lsq`) from then on, stepped by Adam with
    steps relative to each bound's size (``rate``): a bound at 0 (a ReLU's) stays there.
    ``rows[i]``: the row of ``bounds`` node i rounds with (default: its own); nodes sharing a
    row start from the union of their ranges."""

    def __init__(self, fqs: Sequence[Any], rate: float, rows: Sequence[int] | None = None) -> None:
        import tensorflow as tf

        self.fqs = list(fqs)
        self.rate = rate
        self.rows = list(range(len(self.fqs)) if rows is None else rows)
        start = np.tile(np.array([[np.inf, -np.inf]], np.float32), (max(self.rows) + 1, 1))
        for fq, row in zip(self.fqs, self.rows, strict=True):
            start[row] = min(start[row, 0], float(fq.lo.numpy())), max(start[row, 1], float(fq.hi.numpy()))
        self.bounds = tf.Variable(start, name="int8_ranges")
        bounds = self.bounds
        for fq, row in zip(self.fqs, self.rows, strict=True):
            fq.call = types.MethodType(lambda self, x, _r=row: _lsq(tf, x, bounds[_r, 0], bounds[_r, 1]), fq)
        self.first = tf.Variable(tf.zeros_like(bounds))
        self.second = tf.Variable(tf.zeros_like(bounds))
        self.count = tf.Variable(0.0)

    def step(self, grad: Any) -> None:
        """One Adam step on ``bounds`` along ``grad`` (its loss gradient)."""
        import tensorflow as tf

        self.count.assign_add(1.0)
        self.first.assign(0.9 * self.first + 0.1 * grad)
        self.second.assign(0.999 * self.second + 0.001 * grad * grad)
        m, v = self.first / (1.0 - 0.9 ** self.count), self.second / (1.0 - 0.999 ** self.count)
        self.bounds.assign_sub(self.rate * m / (tf.sqrt(v) + 1e-12) * tf.abs(self.bounds))

    def ranges(self) -> dict[str, list[float]]:
        """``{writing layer: [lo, hi]}``, zero inside, as a ranges file holds them."""
        from .deploy_qat import MIN_RANGE

        out = {}
        bounds = self.bounds.numpy()
        for fq, row in zip(self.fqs, self.rows, strict=True):
            lo, hi = bounds[row]
            out[fq.source] = [float(min(lo, 0.0)), float(max(hi, 0.0, min(lo, 0.0) + MIN_RANGE))]
        return out


def tied_rows(table: Any, graph: Any, names: Sequence[str]) -> list[int]:
    """For the tensors ``names`` of ``graph`` (a :class:`FloatGraph`), the row of the trainable
    bounds each trains: one per group int8 holds at one scale
    (:func:`~lhp_tf.converters.quantizer.scale_groups`), one of its own where it is in no group
    or in one with a fixed range (the input's, a LOGISTIC's).

    The conversion gives each group the union of its members' ranges (``fit_for_int8``), so
    ranges trained apart are not what it quantises with (the module docs: why, and what it
    gained). A group with a fixed range is left untied: its fixed member does not train, and
    the conversion gives the group that range, or leaves its members apart where what free ops
    write into it does not fit inside."""
    from lhp_tf.converters.quantizer import scale_groups

    group_of = {graph.names[t]: g for g, group in enumerate(scale_groups(table, graph)) if not group.fixed
                for t in group.members}
    rows: dict[tuple[str, int], int] = {}
    return [rows.setdefault(("group", group_of[name]) if name in group_of else ("own", i), len(rows))
            for i, name in enumerate(names)]


def learn(trained: Any, float_model: bytes, table: Any, images: Sequence[np.ndarray], key: Key,
          seed: int = 0) -> LearnedRanges:
    """Ranges for ``float_model`` (the int8 deploy graph of ``trained`` for ``key.target`` as a
    float .tflite) learned from ``table`` (its calibrated :class:`RangeTable`, left unchanged)
    on ``images``, ``key.steps`` steps."""
    import tensorflow as tf
    from lhp_tf.converters.quantizer import FloatGraph

    from .deploy_qat import calibrate, simulation, start_ranges

    if key.steps < 1:
        raise LhpError(f"export.learned_steps must be >= 1, got {key.steps}")
    start = time.perf_counter()
    images = np.asarray(images, np.float32)
    batch = min(BATCH, len(images))
    # a fixed batch: the NPU form's reshapes need one; the last batch wraps round to the first images
    batches = [np.take(images, range(i, i + batch), axis=0, mode="wrap") for i in range(0, len(images), batch)]
    sim = simulation(trained, key.target, batch)
    calibrate(sim, batches)
    graph = FloatGraph.read(float_model)
    by_layer = graph.tensors_by_layer({fq.source for fq in sim.fake_quants if fq.source})
    matched = [fq for fq in sim.fake_quants
               if fq.fixed is None and fq.source in by_layer and table.range(by_layer[fq.source]) is not None]
    if not matched:
        raise LhpError(f"learned ranges: no simulated tensor of {trained.name} matches the float .tflite's tensors")
    start_ranges(sim, {fq.source: table.range(by_layer[fq.source]) for fq in matched})
    sim.rounding(False)
    reference = np.concatenate([np.asarray(sim.model([x], training=False)) for x in batches])[:len(images)]
    sim.rounding(True)
    trainable = TrainableRanges(matched, key.learning_rate,
                                tied_rows(table, graph, [by_layer[fq.source] for fq in matched]) if key.ties else None)
    xs, ys = tf.constant(images), tf.constant(reference)

    @tf.function(autograph=False)  # no Python control flow to convert
    def step(idx: Any) -> Any:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(sim.model([tf.gather(xs, idx)], training=False) - tf.gather(ys, idx)))
        trainable.step(tape.gradient(loss, trainable.bounds))
        return loss

    order = np.random.default_rng(seed).integers(0, len(images), (key.steps, batch), dtype=np.int32)
    options = tf.config.optimizer.get_experimental_options()
    # grappler's passes over the ~1,000-node graph and its gradient: 39 s of tracing instead of
    # 25 s, and no faster steps
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    try:
        losses = [float(step(tf.constant(idx))) for idx in order]
    finally:
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": False, **options})
    ranges = trainable.ranges()
    stats = {"trained": len(matched), "trainable": int(trainable.bounds.shape[0]),
             "fake_quants": len(sim.fake_quants), "loss_first": losses[0],
             "loss_last": losses[-1], "seconds": round(time.perf_counter() - start, 1)}
    return LearnedRanges(ranges, key, stats)


def apply(table: Any, float_model: bytes, learned: LearnedRanges) -> int:
    """Write ``learned`` into ``table`` (a calibrated :class:`RangeTable` of ``float_model``) and
    finish it for quantisation; returns how many tensors took a learned range. A saved layer that
    the graph no longer has is an error (the file belongs to another model)."""
    from lhp_tf.converters.quantizer import FloatGraph, fit_for_int8

    graph = FloatGraph.read(float_model)
    by_layer = graph.tensors_by_layer(learned.ranges)
    missing = [layer for layer in learned.ranges if layer not in by_layer or table.range(by_layer[layer]) is None]
    if missing:
        raise LhpError(f"learned ranges: {len(missing)} layer(s) have no int8 tensor in this model "
                       f"(e.g. {missing[0]!r}): they were learned for another model")
    for layer, (lo, hi) in learned.ranges.items():
        table.set_range(by_layer[layer], lo, hi)
    fit_for_int8(table, graph, copies_follow=True)
    table.method = "learned"
    return len(learned.ranges)


def learned_ranges(trained: Any, float_model: bytes, table: Any, images: Sequence[np.ndarray], target: str,
                   steps: int, checkpoint: str | os.PathLike[str] | None = None) -> LearnedRanges:
    """The ranges saved beside ``checkpoint`` for this conversion, or learned now on ``trained``
    (a line on stderr says why, and how to save them)."""
    key = Key.of(checkpoint, target, len(images), steps)
    if checkpoint is not None:
        saved, why = saved_for(checkpoint, key)
        if saved is not None:
            return saved
        how = f"lhp quantize ranges {checkpoint}" + ("" if target == DEFAULT_TARGET else f" --target {target}")
        print(f"learning int8 ranges ({why}; '{how}' saves them): "
              f"{steps} steps, minutes on a small CPU", file=sys.stderr, flush=True)
    if trained is None:
        raise LhpError("calibration 'learned': no saved ranges, and no Keras model to learn them on")
    return learn(trained, float_model, table, images, key)


def learn_for_checkpoint(checkpoint: str | os.PathLike[str], recipe: str | os.PathLike[str] | None = None,
                         overrides: Sequence[str] = (), target: str | None = None, calib_samples: int | None = None,
                         force: bool = False) -> tuple[Path, LearnedRanges, bool]:
    """Learn ``checkpoint``'s ranges as ``lhp convert --quant int8 --target TARGET`` would and
    save them beside it (``lhp quantize ranges``, the end of ``lhp train``); a file already
    learned under the same :class:`Key` is kept unless ``force``. Returns the file, its ranges
    and whether they were learned now."""
    from lhp_tf.converters.inference_model import load_checkpoint

    rec, images, key = conversion_key(checkpoint, recipe, overrides, target, calib_samples)
    target = key.target
    path = ranges_path(checkpoint, target)
    if not force and path.is_file():
        saved, _ = saved_for(checkpoint, key)
        if saved is not None:
            return path, saved, False
    trained, spec = load_checkpoint(checkpoint, rec)
    learned = learn(trained, *_start_table(trained, spec, checkpoint, target, images), images, key)
    return save(path, learned), learned, True


def _start_table(trained: Any, spec: Any, checkpoint: str | os.PathLike[str], target: str,
                 images: Sequence[np.ndarray]) -> tuple[bytes, Any]:
    """The float .tflite of ``trained``'s int8 deploy graph for ``target`` and its calibrated
    range table, as ``lhp convert`` starts learned calibration from them."""
    from lhp_tf.converters.inference_model import inference_model
    from lhp_tf.converters.quantizer import calibrate
    from lhp_tf.converters.tflite import float_tflite

    from lhp_tf.kinds import LEARNED_START

    float_model = float_tflite(inference_model(trained, spec, 1, where=str(checkpoint), target=target, quant="int8"))
    return float_model, calibrate(float_model, images, LEARNED_START)


def converted_ranges(trained: Any, spec: Any, checkpoint: str | os.PathLike[str], learned: LearnedRanges,
                     recipe: str | os.PathLike[str] | None = None, overrides: Sequence[str] = (),
                     calib_samples: int | None = None) -> dict[str, list[float]]:
    """``{layer: [lo, hi]}``: the ranges ``lhp convert --quant int8`` of ``checkpoint``
    (``trained``, ``spec``) quantises ``learned``'s layers with. :func:`apply` finishes the table
    after writing the learned ranges in: tensors int8 holds at one scale (joined by splits and
    concatenations) share the union of their ranges, and a few are widened for int32 biases and
    XNNPACK. With ranges learned per tensor, 78-79 of lhp-small's 458 and 172-173 of
    lhp-large's 1,088 came out wider on the four synthetic checkpoints (relative change >
    1e-5); learned tied, 0 of 458 (20-epoch lhp-small) and 2 of 1,088 (20-epoch lhp-large; an
    ad-hoc script calling this function on the runs' files, not kept). QAT
    on the deploy graph trains under these: its simulation then rounds as the converted model
    does, whatever file it is given (a QAT checkpoint's kept ranges, one edited by hand)."""
    from lhp_tf.converters.quantizer import FloatGraph

    _, images, key = conversion_key(checkpoint, recipe, overrides, learned.key.target, calib_samples)
    float_model, table = _start_table(trained, spec, checkpoint, key.target, images)
    apply(table, float_model, learned)
    by_layer = FloatGraph.read(float_model).tensors_by_layer(learned.ranges)
    out = {}
    for layer in learned.ranges:  # zero inside, as int8 quantises them (and a ranges file holds them)
        lo, hi = table.range(by_layer[layer])
        out[layer] = [min(float(lo), 0.0), max(float(hi), 0.0)]
    return out


def conversion_key(checkpoint: str | os.PathLike[str], recipe: str | os.PathLike[str] | None = None,
                   overrides: Sequence[str] = (), target: str | None = None,
                   calib_samples: int | None = None) -> tuple[Any, np.ndarray, Key]:
    """``(recipe, calibration images, Key)`` of ``lhp convert --quant int8 --target TARGET`` of
    ``checkpoint``: the key its saved ranges must carry to be used."""
    from lhp_tf.converters.run_folder import find_recipe

    from .calibration import calibration_images, one_split_read

    rec = find_recipe(checkpoint, recipe, overrides)
    with one_split_read():
        images = calibration_images(rec, calib_samples)
    return rec, images, Key.of(checkpoint, target or DEFAULT_TARGET, len(images), rec.export.learned_steps)


def keep_for_checkpoint(checkpoint: str | os.PathLike[str], ranges: dict[str, list[float]], stats: dict[str, Any],
                        recipe: str | os.PathLike[str] | None = None, overrides: Sequence[str] = (),
                        calib_samples: int | None = None) -> Path:
    """Save ``ranges`` (``{layer: [lo, hi]}``, made otherwise than by :func:`learn`; ``stats``
    says how) as the ranges ``lhp convert --quant int8`` of ``checkpoint`` takes for the default
    target. QAT on the deploy graph trains its weights under fixed ranges
    (:mod:`lhp_tf.quantize.deploy_qat`): those are the ones to convert with."""
    _, _, key = conversion_key(checkpoint, recipe, overrides, DEFAULT_TARGET, calib_samples)
    return save(ranges_path(checkpoint, key.target), LearnedRanges(dict(ranges), key, dict(stats)))
