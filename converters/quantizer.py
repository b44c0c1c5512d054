"""Float .tflite -> integer .tflite: calibrate, edit the range table, quantise (ai-edge-quantizer).

The deploy graph (:mod:`lhp_tf.converters.deploy`) decides the float graph's structure; this
module decides only how that float .tflite becomes integer, so either can change alone. It is
Google's ai-edge-quantizer (AEQ) in its three public steps, with our range passes between:

1. **calibrate** (:func:`calibrate`): AEQ runs the float model over the calibration images
   (its profiler-based mode: min/max collected in C++, 7x faster than preserving every tensor
   for Python, same table within 3e-6) and records each activation's range in its QSV table
   (``{tensor name: {"min", "max"}}``): per-image min and max, averaged over the images with a
   0.95 moving average, so a few outlier images do not set the range. Our update function
   (AEQ's ``qsv_update_func``) keeps each tensor's extremes in the same pass, in plain floats:
   the same table (tested), without the second pass over every image the extremes took;
2. **edit the table**: the input gets the image contract's [0, 1] (x / 255, so uint8 pixels
   quantise exactly); outputs get their extremes (heatmap peaks are what the decoder reads,
   never clipped); ``mse`` calibration searches each activation's range from its extremes
   down to the one with the least int8 rounding + clipping error (:func:`mse_ranges`);
   :func:`widen_for_bias` widens conv inputs whose range is so narrow that the int32 bias
   would overflow at their scale; :func:`share_ranges` gives one range to the tensors int8
   must hold at one scale (through splits, reshapes and concatenations), so no requantising
   QUANTIZE is needed between them;
   :func:`widen_for_xnnpack` widens conv output ranges too narrow for XNNPACK to requantise
   into; int16 tensors get their extremes (:meth:`RangeTable.widest`);
3. **quantize** (:func:`quantize`): int8 activations and per-channel symmetric int8 weights
   (AEQ's ``static_wi8_ai8``), except the ops chosen for int16 activations with int8 weights
   (mixed precision; :func:`select_ops`, :mod:`lhp_tf.quantize.mixed`). Input and output
   are int8 (int16 when an int16 op reads the input or writes the output); AEQ leaves no
   float op. Where scales still differ it writes the requantising QUANTIZE nodes the int8
   kernels' same-scale rules need; the ones it writes between equal scales are dropped after
   (:func:`lhp_tf.converters.passes.drop_identity_quantize`). In a mixed model the int8 copies
   of int16 tensors get the scale pure int8 gives them
   (:func:`lhp_tf.converters.passes.int8_copies_at_int8_ranges`; AEQ writes them at the int16
   extent).

Measured on the trained synthetic lhp-small (100 calibration images): AEQ's int8 model runs at
the speed of TF's MLIR quantiser's (p10 1.688 vs 1.676 ms, 1 thread, interleaved), with a
lower heatmap error against float (mean abs 0.0045 vs 0.0055, both min/max); on 30 held-out
faces the mean abs heatmap error is 0.00473 with AEQ's averaged ranges, 0.00541 with the
absolute extremes, 0.00472-0.00475 with ``mse`` from either. It needs no private TF module,
no calibrate-only converter flag and no float-island repair.

Tried and not adopted: empirical bias correction (each int8 conv's int32 bias moved by the
mean error the conv adds itself: its int8 input run through its float weights, against its
int8 output, 64 calibration images; 8,107 bias entries moved): trained synthetic lhp-small, 10
epochs, held-out NME 4.504 -> 4.514 (float 4.393). Nor is the output's rounding the drift:
the float model's heatmaps rounded to the int8 output's grid score 4.394 (ad-hoc scripts, not
kept); the loss is spread over the graph (``lhp quantize drift`` ranks the ops).

What does work, and is the default (``export.calibration: learned``,
:mod:`lhp_tf.quantize.learned_ranges`): this module's ``mse`` table, its ranges then trained end
to end on the deploy graph's int8 simulation against the float heatmaps, written back
(:meth:`RangeTable.set_range`, matched by :meth:`FloatGraph.tensors_by_layer`) and finished by
:func:`fit_for_int8`; held-out drift of the same checkpoints, ``mse`` -> learned
(``benchmarks/learned_ranges.py``; the module's docs and the README give other machines'):
lhp-small 10 epochs +0.111 -> +0.044, 20 epochs +0.176 -> +0.028; lhp-large 10 epochs +0.261
-> +0.026 (AVX2 machine). The MSE search picks each range for its own tensor's error; the learned ranges
trade clipping and rounding across the whole graph for the output's.

int16 is an option, not the default: XNNPACK has no int16 kernels. On lhp-small with every
LOGISTIC in int16 (``lhp convert --quant int8 --int16 LOGISTIC``, then ``lhp bench``), XNNPACK took
914 of 1,154 nodes in 31 partitions (the 80 LOGISTICs and 160
int8<->int16 QUANTIZEs ran on the reference kernels), and tflite-runtime 2.14 cannot load the
model at all (its int8->int16 QUANTIZE kernel is missing; ``lhp bench`` says so in one line).
Integer NPUs take it: Vela placed every int16 op of a mixed lhp-large on Ethos-U55 and U85
(``lhp npu-check``).
"""

from __future__ import annotations

import contextlib
import functools
import io
import re
import warnings
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lhp_tf.errors import LhpError
from lhp_tf.kinds import CALIBRATIONS, LEARNED

from .passes import (
    INPUT_NAME,
    SIGNATURE_KEY,
    WEIGHT_CHANNEL_AXIS,
    int8_copies_at_int8_ranges,
    run_passes,
)

#: Calibration images the MSE range search reads (every value of every activation: on
#: lhp-small's 24x24 maps 16 images are 5x the 32 x 2,048 sampled values it used to read);
#: also the images the noise ranking (:func:`rank_ops`, ``lhp quantize drift``) samples.
SEARCH_IMAGES = 16
#: Values sampled per tensor per image by the noise ranking (:func:`rank_ops`).
SEARCH_VALUES = 2048
#: Candidate ranges: the min/max range scaled by these factors.
SCALES = np.linspace(0.2, 1.0, 41)
#: Bins of the histogram the MSE search reads, over each tensor's extremes: at the narrowest
#: candidate (0.2 of the range) 6.4 bins per int8 step. The search costs 41 candidates x the
#: occupied bins instead of 41 x the values.
HIST_BINS = 8192
#: AEQ's moving-average factor (``qsv_utils.moving_average_update``): each image moves a
#: range 5 % of the way. ``tests/test_quantizer.py`` holds our table equal to AEQ's own.
SMOOTHING = 0.95
#: Calibration interpreter threads: the per-op profiling serialises on Python, so more threads
#: only add contention (AEQ's default of 16 was slower on the 2-core CI machine).
CALIBRATION_THREADS = 1
#: XNNPACK refuses an int8 convolution whose requantisation scale
#: input_scale * filter_scale / output_scale is 256 or more (the whole graph then fails to load).
XNNPACK_MAX_REQUANT = 256.0
#: int8 LOGISTIC's fixed output quantisation (scale 1/256, zero point -128): its real range.
LOGISTIC_RANGE = (0.0, 255.0 / 256.0)


class RangeTable(dict):
    """AEQ's QSV table (``{tensor name: {"min", "max"}}``: the int8 ranges), plus ``calibrated``:
    each tensor's extremes over all calibration images, the range int16 tensors get (with
    65536 levels clipping buys nothing) and the widest candidate of the MSE search."""

    def __init__(self, qsvs: dict[str, dict[str, np.ndarray]]) -> None:
        super().__init__(qsvs)
        self.calibrated: dict[str, tuple[float, float]] = {}
        #: how the ranges were chosen (``minmax``/``mse``), and for ``auto`` each candidate's error
        self.method = ""
        self.errors: dict[str, float] = {}

    def range(self, name: str) -> tuple[float, float] | None:
        """``name``'s per-tensor int8 range (None for a tensor without one: a constant, or a
        per-channel entry)."""
        q = self.get(name)
        if not q or "min" not in q or "max" not in q:
            return None
        lo, hi = np.asarray(q["min"]), np.asarray(q["max"])
        if lo.size != 1 or hi.size != 1:
            return None
        return float(lo.ravel()[0]), float(hi.ravel()[0])

    def set_range(self, name: str, lo: float, hi: float) -> None:
        """Set ``name``'s int8 range (the entry keeps AEQ's array shape and dtype)."""
        q = self[name]
        q["min"] = np.full_like(np.asarray(q["min"], np.float32), lo)
        q["max"] = np.full_like(np.asarray(q["max"], np.float32), hi)

    def widest(self, names: Iterable[str]) -> RangeTable:
        """A copy in which ``names`` have their calibrated (un-narrowed) ranges."""
        out = RangeTable({k: dict(v) for k, v in self.items()})
        out.calibrated = dict(self.calibrated)
        out.method, out.errors = self.method, dict(self.errors)
        for name in names:
            if name in self.calibrated:
                out.set_range(name, *self.calibrated[name])
        return out


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """AEQ's progress bars (tqdm on sys.stderr; it sets ``disable`` itself, so TQDM_DISABLE
    does not reach them) and the 'preserve_all_tensors is for debugging' warning, off."""
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore", UserWarning)
        yield


def _quantizer(float_model: bytes, int16_outputs: Sequence[str] = (), all_int16: bool = False) -> Any:
    from ai_edge_quantizer import quantizer, recipe

    qt = quantizer.Quantizer(bytearray(float_model))
    qt.load_quantization_recipe(recipe.static_wi8_ai16() if all_int16 else recipe.static_wi8_ai8())
    if int16_outputs:
        # AEQ matches an op by its scope (its output names joined by ";", plus a trailing ";")
        # against every config's regex. The exact scopes, in one alternation: a prefix would
        # also catch an op whose fused name starts with "name;", and one config per op costs
        # ops x configs regex searches.
        graph = FloatGraph.read(float_model)
        scopes = {graph.names[outs[0]]: "".join(graph.names[o] + ";" for o in outs) for _, _, outs in graph.ops if outs}
        unknown = [name for name in int16_outputs if name not in scopes]
        if unknown:
            raise LhpError(f"int16: no op writes {', '.join(unknown[:3])}")
        alternation = "|".join(re.escape(scopes[name]) for name in int16_outputs)
        qt.add_static_config(f"^(?:{alternation})$", recipe.TFLOperationName.ALL_SUPPORTED,
                             activation_num_bits=16, weight_num_bits=8)
    return qt


def _feed(images: Iterable[np.ndarray]) -> dict[str, list[dict[str, np.ndarray]]]:
    return {SIGNATURE_KEY: [{INPUT_NAME: np.asarray(img, np.float32)[None]} for img in images]}


@dataclass
class FloatGraph:
    """What the range passes need of the float model: ops (kind, inputs, outputs), tensor names,
    constant weights, the graph's input and output tensors."""

    ops: list[tuple[str, list[int], list[int]]]
    names: list[str]
    constants: dict[int, np.ndarray]
    inputs: list[int]
    outputs: list[int]
    #: indices of the ops that only permute channels (see :func:`is_permutation_conv`)
    permutations: frozenset[int] = frozenset()

    @classmethod
    def read(cls, float_model: bytes) -> FloatGraph:
        from lhp_tf.tflite_graph import read_graph

        g = read_graph(float_model)
        constants = {i: np.frombuffer(t.data, np.float32).reshape(t.shape)
                     for i, t in enumerate(g.tensors) if t.data and t.dtype == "float32"}
        permutations = frozenset(i for i, op in enumerate(g.operators) if op.op == "CONV_2D"
                                 and op.options.get("activation") == "none"
                                 and is_permutation_conv([constants.get(t) if t >= 0 else None for t in op.inputs[1:]]))
        return cls(ops=[(op.op, list(op.inputs), list(op.outputs)) for op in g.operators],
                   names=[t.name for t in g.tensors], constants=constants,
                   inputs=list(g.inputs), outputs=list(g.outputs), permutations=permutations)

    def tensors_by_layer(self, layers: Collection[str]) -> dict[str, str]:
        """The tensor each of the Keras ``layers`` (by name) computes last, by tensor name: the
        last one an op of the layer writes that is not a copy (AEQ's same-as-input and
        same-as-output ops: reshapes, slices, concatenations ...), else the last it writes. A
        layer that reshapes its result (:class:`~lhp_tf.model.ops.PooledChannelMean`'s MEAN)
        has its range on the value int8 rounds, not on a copy that takes the value's scale
        (the conversion gives a group of copies the union of what free ops write into it, so
        a range on a copy was dropped: so were two ReLUs' learned ranges in the ``amx`` form,
        whose packed conv the converter fused through the unpacking reshape; the 20-epoch
        lhp-small's amx int8 drift +0.029 -> +0.018 with this mapping, its saved ranges).

        The converter names a tensor after the scope that computed it: ``layer/Op;...`` for
        the fused ops it names, ``layer_1/...`` for a layer's second call. A scope that is a
        layer's name is that layer; one that is not loses its ``_N`` call suffix. A layer whose
        last op the converter fused into another (a ReLU into its conv) shares that op's tensor.
        """
        from ai_edge_quantizer.algorithms.utils.common_utils import OpQuantConstraint

        copies = _constrained(OpQuantConstraint.SAME_AS_INPUT_SCALE) | _constrained(OpQuantConstraint.SAME_AS_OUTPUT_SCALE)
        found: dict[str, str] = {}
        computed: dict[str, str] = {}
        for kind, _, outs in self.ops:
            for t in outs:
                scope = self.names[t].split(";")[0].split("/")[0]
                layer = scope if scope in layers else re.sub(r"_\d+$", "", scope)
                if layer in layers:
                    found[layer] = self.names[t]
                    if kind not in copies:
                        computed[layer] = self.names[t]
        return {**found, **computed}


def is_permutation_conv(weights: Sequence[np.ndarray | None]) -> bool:
    """Whether a CONV_2D's (kernel, bias) only reorders channels: a 1x1 kernel of 0s and 1s, one 1
    per output and per input channel, no bias or a zero one (the deploy graph's channel shuffle)."""
    kernel = weights[0] if weights else None
    if kernel is None or kernel.ndim != 4 or kernel.shape[1:3] != (1, 1) or kernel.shape[0] != kernel.shape[3]:
        return False
    if len(weights) > 1 and weights[1] is not None and np.any(weights[1] != 0):
        return False
    m = kernel[:, 0, 0, :]
    return bool(np.all((m == 0) | (m == 1)) and np.all(m.sum(0) == 1) and np.all(m.sum(1) == 1))


def calibrate(float_model: bytes, images: Sequence[np.ndarray], calibration: str = "mse",
              probe: Sequence[np.ndarray] | None = None) -> RangeTable:
    """The float model's activation range table (``calibration``: ``minmax``, ``mse`` or
    ``auto``), edited so XNNPACK accepts every int8 convolution; ``table.method`` says which.

    ``auto`` builds both and keeps the one whose pure-int8 landmarks move least from the float
    model's on the ``probe`` images (``table.errors``: each one's :func:`landmark_shift`; by
    default the last :data:`PROBE_IMAGES` calibration images; ``lhp convert`` passes augmented
    training faces, :func:`lhp_tf.quantize.calibration.probe_images`). Neither wins everywhere:
    MSE ranges clip outliers that min/max keeps, and which costs more depends on the weights
    (held-out drift, synthetic checkpoints:
    lhp-small 20 epochs mse +0.045, min/max +0.238; lhp-large 20 epochs mse +0.309, min/max
    +0.215; QAT-tuned weights, which trained under moving min/max ranges: lhp-large mse +0.328,
    min/max +0.000, but lhp-small mse +0.014, min/max +0.189). The mean square heatmap error
    is no guide: it preferred min/max on all four synthetic checkpoints, lhp-small's included.
    """
    if calibration == LEARNED:
        raise LhpError("calibration 'learned' trains ranges on the Keras model: "
                       "lhp_tf.quantize.learned_ranges, from this function's 'mse' table")
    if calibration not in CALIBRATIONS:
        raise LhpError(f"calibration {calibration!r}: expected one of {', '.join(CALIBRATIONS)}")
    if not len(images):
        raise LhpError("int8 calibration needs at least one image")
    base = _calibration_pass(float_model, images)
    graph = FloatGraph.read(float_model)
    for t in graph.inputs:
        base.calibrated[graph.names[t]] = INPUT_RANGE
    for t in (*graph.inputs, *graph.outputs):
        if graph.names[t] in base:
            base.set_range(graph.names[t], *base.calibrated[graph.names[t]])
    tables = {}
    for method in ("minmax", "mse") if calibration == "auto" else (calibration,):
        table = base.widest(())  # a copy
        if method == "mse":
            mse_ranges(table, float_model, graph, images)
        fit_for_int8(table, graph)
        table.method = method
        tables[method] = table
    if calibration != "auto":
        return tables[calibration]
    probe = np.asarray(images[-PROBE_IMAGES:] if probe is None else probe)
    reference = landmark_shift(float_model, probe)
    errors = {m: float(landmark_shift(quantize(float_model, t), probe, reference)) for m, t in tables.items()}
    best = tables[min(errors, key=errors.__getitem__)]
    best.errors = errors
    return best


#: images ``auto`` calibration compares its candidates on
PROBE_IMAGES = 64


def landmark_shift(model: bytes, images: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray | float:
    """The model's heatmap peaks on ``images`` (DARK-decoded, heatmap pixels, (N, K, 2)); with
    ``reference`` peaks, their mean distance from them: how far int8 moves the landmarks."""
    from lhp_tf.decode import decode_dark

    coords = decode_dark(heatmap_error(model, images))[0]
    return coords if reference is None else float(np.mean(np.linalg.norm(coords - reference, axis=-1)))


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


#: the model input's range: images scaled by 1/255 (the metadata's input_scale contract)
INPUT_RANGE = (0.0, 1.0)


def _calibration_pass(float_model: bytes, images: Sequence[np.ndarray]) -> RangeTable:
    """AEQ's calibration (its QSV table) and each tensor's extremes, in one run over ``images``.

    The update function is AEQ's ``qsv_update_func`` hook: the moving average AEQ applies by
    default, plus the running min and max, on floats (AEQ's own update allocates numpy arrays
    per tensor per image, which was most of its run time).
    """
    from ai_edge_quantizer import calibrator, recipe, recipe_manager

    def update(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        lo, hi = float(new["min"][0]), float(new["max"][0])
        if "lo" not in old:  # AEQ stores a tensor's first QSV as its first image gave it
            first = (float(old["min"][0]), float(old["max"][0]))
            old = {"min": first[0], "max": first[1], "lo": first[0], "hi": first[1]}
        return {"min": SMOOTHING * old["min"] + (1.0 - SMOOTHING) * lo,
                "max": SMOOTHING * old["max"] + (1.0 - SMOOTHING) * hi,
                "lo": min(old["lo"], lo), "hi": max(old["hi"], hi)}

    manager = recipe_manager.RecipeManager()
    manager.load_quantization_recipe(recipe.static_wi8_ai8())
    with _quiet():
        # the profiler-based mode collects min/max in C++: 7x faster than preserving every
        # tensor for Python (50 images of lhp-small: 2.8 vs 20.4 s), same table (within 3e-6)
        run = calibrator.Calibrator(float_model, num_threads=CALIBRATION_THREADS, qsv_update_func=update,
                                    mode=calibrator.CalibrationMode.CALIBRATION_PROFILER_BASED)
        run.calibrate(_feed(images), manager)
    qsvs: dict[str, dict[str, np.ndarray]] = {}
    extremes: dict[str, tuple[float, float]] = {}
    for name, qsv in run.get_model_qsvs().items():
        lo, hi = (float(np.ravel(qsv["min"])[0]), float(np.ravel(qsv["max"])[0]))
        qsvs[name] = {"min": np.array([lo]), "max": np.array([hi])}
        extremes[name] = (float(qsv.get("lo", lo)), float(qsv.get("hi", hi)))
    table = RangeTable(qsvs)
    table.calibrated = extremes
    return table


def quantize(float_model: bytes, table: RangeTable, int16_outputs: Sequence[str] = (),
             all_int16: bool = False) -> bytes:
    """The integer model: int8 everywhere, int16 activations for the ops writing ``int16_outputs``
    (``all_int16``: int16 activations everywhere, the int16x8 accuracy reference)."""
    def run(ranges: RangeTable) -> bytes:
        with _quiet():
            return bytes(_quantizer(float_model, int16_outputs, all_int16).quantize(
                ranges, enable_progress_report=False).quantized_model)

    if all_int16:
        return run(table.widest(table.calibrated))
    if not int16_outputs:
        return run(table)
    data = run(table.widest(int16_outputs))
    actual = int16_ops(data)
    if set(actual) != set(int16_outputs):
        # AEQ keeps an op int8 where its type has no int16 kernel: such ops keep their int8 range
        data = run(table.widest(actual))
    ranges = {name: r for name in table if (r := table.range(name)) is not None}
    return run_passes(data, [int8_copies_at_int8_ranges(ranges, int8_params)])


def int8_params(lo: float, hi: float) -> tuple[float, int]:
    """(scale, zero point) of an int8 activation calibrated to ``lo..hi``, as AEQ computes them
    (asymmetric, zero inside the range)."""
    from ai_edge_quantizer import qtyping
    from ai_edge_quantizer.algorithms.uniform_quantize import uniform_quantize_tensor

    zero, scale = uniform_quantize_tensor.tensor_zp_scale_from_min_max(
        np.array([min(lo, 0.0)]), np.array([max(hi, 0.0)]), 8, False, qtyping.QuantGranularity.TENSORWISE)
    return float(np.ravel(scale)[0]), int(np.ravel(zero)[0])


def _tensor_values(float_model: bytes, images: Iterable[np.ndarray]) -> Iterator[Any]:
    """An interpreter of the float model holding every tensor of one image at a time, on the
    reference kernels (a delegate computes its partition's inner tensors out of sight)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    with _quiet():
        interpreter = Interpreter(model_content=float_model, experimental_preserve_all_tensors=True,
                                  experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    index = interpreter.get_input_details()[0]["index"]
    for img in images:
        interpreter.set_tensor(index, np.asarray(img, np.float32)[None])
        interpreter.invoke()
        yield interpreter


def activations(float_model: bytes, images: Iterable[np.ndarray], tensors: Sequence[int],
                seed: int = 0) -> dict[int, np.ndarray]:
    """Up to :data:`SEARCH_VALUES` sampled values per image of each of ``tensors`` (float
    model), over the first :data:`SEARCH_IMAGES` images."""
    rng = np.random.default_rng(seed)
    samples: dict[int, list[np.ndarray]] = {t: [] for t in tensors}
    for interpreter in _tensor_values(float_model, list(images)[:SEARCH_IMAGES]):
        for t in tensors:
            values = interpreter.get_tensor(t).ravel()
            if values.size > SEARCH_VALUES:
                values = values[rng.choice(values.size, SEARCH_VALUES, replace=False)]
            samples[t].append(values.astype(np.float64))
    return {t: np.concatenate(v) for t, v in samples.items() if v}


def histograms(float_model: bytes, images: Iterable[np.ndarray],
               ranges: dict[int, tuple[float, float]]) -> dict[int, np.ndarray]:
    """Every value of each tensor of ``ranges`` over the first :data:`SEARCH_IMAGES` images,
    counted in :data:`HIST_BINS` equal bins spanning its range (zero included; values beyond
    it fall in the end bins). Tensors whose range is empty are left out."""
    spans = {}
    for t, (lo, hi) in ranges.items():
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        if hi > lo and np.isfinite(hi - lo):
            spans[t] = (lo, HIST_BINS / (hi - lo))
    bins: dict[int, list[np.ndarray]] = {t: [] for t in spans}
    for interpreter in _tensor_values(float_model, list(images)[:SEARCH_IMAGES]):
        for t, (lo, per_unit) in spans.items():
            scaled = (interpreter.get_tensor(t).ravel() - lo) * per_unit
            bins[t].append(np.clip(scaled, 0, HIST_BINS - 1, out=scaled).astype(np.uint16))
    # one count per tensor at the end: a count per tensor and image was most of the pass
    return {t: np.bincount(np.concatenate(b), minlength=HIST_BINS) for t, b in bins.items()}


def _quantisation_mse(x: np.ndarray, lo: float, hi: float) -> float:
    step = (hi - lo) / 255.0
    if step <= 0.0:
        return float("inf")
    q = np.clip(np.round((x - lo) / step), 0.0, 255.0) * step + lo
    return float(np.mean((x - q) ** 2))


def best_scale_counts(counts: np.ndarray, lo: float, hi: float) -> float:
    """The factor in :data:`SCALES` whose range ``(lo, hi) * factor`` quantises best the values
    a :func:`histograms` row counts over ``(lo, hi)`` (each value taken at its bin's centre)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    occupied = np.flatnonzero(counts)
    if not occupied.size:
        return 1.0
    x = (lo + (occupied + 0.5) * ((hi - lo) / len(counts))).astype(np.float32)
    scales = SCALES.astype(np.float32)[:, None]
    a, step = lo * scales, (hi - lo) * scales / 255.0
    q = np.clip(np.rint((x - a) / step), 0.0, 255.0) * step + a
    errors = np.square(x - q) @ counts[occupied].astype(np.float32)
    return float(SCALES[int(np.argmin(errors))])


def best_scale(x: np.ndarray, lo: float, hi: float) -> float:
    """The factor in :data:`SCALES` whose range ``(lo, hi) * factor`` quantises ``x`` best."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi <= lo:
        return 1.0
    counts = np.histogram(np.clip(x, lo, hi), HIST_BINS, (lo, hi))[0]
    return best_scale_counts(counts, lo, hi)


def mse_ranges(table: RangeTable, float_model: bytes, graph: FloatGraph, images: Sequence[np.ndarray]) -> int:
    """Narrow each activation range to the one with the least int8 error on its values.

    TFLite calibration spreads the 256 int8 levels over each tensor's min..max. Lite-HRNet's
    activations are heavy-tailed (a CCW output of the synthetic-trained lhp-large spans 40
    while 99.9 % of its values lie within 4.7), so min/max spends most levels on a few
    outliers. For every activation the range ``(min, max) x s`` (s in 0.2 ... 1.0, zero kept
    inside) with the smallest mean squared rounding + clipping error on every value of the
    first :data:`SEARCH_IMAGES` images (their histogram, :func:`histograms`) is kept: the "MSE"
    calibrator of TensorRT and PyTorch's HistogramObserver. The model's input
    (fixed by the 1/255 image contract) and output (heatmap peaks must not be clipped) keep
    min/max. Returns how many ranges were narrowed.
    """
    fixed = set(graph.inputs) | set(graph.outputs)
    ranged = [i for i, name in enumerate(graph.names) if i not in fixed and i not in graph.constants
              and table.range(name) is not None]
    spans = {i: table.calibrated.get(graph.names[i]) or table.range(graph.names[i]) for i in ranged}
    narrowed = 0
    for i, counts in histograms(float_model, images, spans).items():  # type: ignore[arg-type]
        lo, hi = spans[i]  # type: ignore[misc]
        s = best_scale_counts(counts, lo, hi)
        table.set_range(graph.names[i], lo * s if lo < 0.0 else lo, hi * s if hi > 0.0 else hi)
        narrowed += s < 1.0
    return narrowed


@functools.cache
def _constrained(kind: Any) -> frozenset[str]:
    """AEQ's own list of the op types under ``kind`` (an ``OpQuantConstraint``)."""
    from ai_edge_quantizer.utils import constrained_ops_utils

    return frozenset(str(getattr(op, "value", op)) for op in constrained_ops_utils.get_constrained_op_list(kind))


@dataclass(frozen=True)
class ScaleGroup:
    """Tensors int8 holds at one scale (:func:`scale_groups`): ``members`` (tensor indices),
    the ones a free op writes (``written``; the others copy the group's values), and the fixed
    ranges among them (``fixed``; None: fixed by its op at a range this module does not know)."""

    members: tuple[int, ...]
    written: frozenset[int]
    fixed: frozenset[tuple[float, float] | None]


def scale_groups(table: RangeTable, graph: FloatGraph) -> list[ScaleGroup]:
    """The groups of two or more tensors of ``graph`` with a range in ``table`` that int8 holds
    at one scale: joined through ops AEQ gives their input's scale (SPLIT, SLICE, RESHAPE,
    TRANSPOSE, AVERAGE_POOL_2D ...), CONCATENATIONs (their output's) and the deploy graph's
    1x1 permutation convs (see :func:`share_ranges`, which gives each group one range, and
    :mod:`lhp_tf.quantize.learned_ranges`, which trains one range per group)."""
    from ai_edge_quantizer.algorithms.utils.common_utils import OpQuantConstraint

    same_in = _constrained(OpQuantConstraint.SAME_AS_INPUT_SCALE)
    same_out = _constrained(OpQuantConstraint.SAME_AS_OUTPUT_SCALE)
    fixed_out = _constrained(OpQuantConstraint.FIXED_OUTPUT_SCALE)
    parent = list(range(len(graph.names)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    pinned: dict[int, tuple[float, float] | None] = {t: INPUT_RANGE for t in graph.inputs}
    written: set[int] = set()
    constrained = same_in | same_out | fixed_out
    for index, (kind, ins, outs) in enumerate(graph.ops):
        if kind not in constrained and index not in graph.permutations:
            written.update(outs)
        if kind in fixed_out:
            pinned[outs[0]] = LOGISTIC_RANGE if kind == "LOGISTIC" else None
        if index in graph.permutations:  # a channel shuffle as a conv: exact at its input's scale
            joined = [ins[0], outs[0]]
        elif kind in same_in:  # the data input (SPLIT's follows its axis) and every output
            joined = [ins[1] if kind == "SPLIT" else ins[0], *outs]
        elif kind in same_out:
            joined = [*ins, outs[0]]
        else:
            continue
        joined = [t for t in joined if t >= 0 and table.range(graph.names[t]) is not None]
        for t in joined[1:]:
            parent[root(t)] = root(joined[0])
    members: dict[int, list[int]] = {}
    for t in range(len(graph.names)):
        if table.range(graph.names[t]) is not None:
            members.setdefault(root(t), []).append(t)
    return [ScaleGroup(tuple(ts), frozenset(t for t in ts if t in written),
                       frozenset(pinned[t] for t in ts if t in pinned))
            for ts in members.values() if len(ts) > 1]


def share_ranges(table: RangeTable, graph: FloatGraph, copies_follow: bool = False) -> int:
    """One range for every group of tensors int8 must hold at one scale, so AEQ writes no
    requantising QUANTIZE between them.

    AEQ gives a same-as-input op (SPLIT, SLICE, RESHAPE, TRANSPOSE, AVERAGE_POOL_2D ...) its
    input's scale and a CONCATENATION's inputs its output's; where the ranges differ it inserts
    a QUANTIZE. A channel shuffle done as a 1x1 permutation conv (the deploy graph's) joins its
    input and output too: at one scale its int8 output is its input reordered, bit for bit (the
    weight 1 is 127 steps of 1/127), where a range of its own would requantise every value
    (held-out drift, mse, same checkpoints and graph, without -> with: lhp-small 10 epochs
    +0.083 -> +0.063, 20 epochs +0.059 -> +0.045, lhp-large 10 epochs +0.197 -> +0.164).
    Lite-HRNet concatenates a lot: each CCW block joins its untouched half (a SPLIT of the block
    input) to the reweighted half, and the nearest upsamples of its
    attention weights are concatenated copies of a sliced sigmoid: 67 QUANTIZEs of 993 ops in
    the trained lhp-small's int8 graph, 164 of 2,492 in lhp-large's. Each group (tensors
    joined through those ops) gets the union of its members' ranges; a group holding a
    fixed-range tensor (the model input, a LOGISTIC output) gets that range if every member a
    free op writes fits inside it (copies of the fixed tensor always do), and is left alone
    otherwise (its QUANTIZEs stay). A free op (CONV, MUL, ADD...) writes at any scale, so no
    op is constrained further. The union can widen a member's range (a fusion output joins its
    CCW chain); held-out drift with and without this pass, trained synthetic checkpoints
    (300 faces; mse / minmax): lhp-small 10 epochs +0.052 vs +0.071 / +0.249 vs +0.223,
    20 epochs +0.057 vs +0.056 / +0.214 vs +0.218, lhp-large 10 epochs +0.205 vs +0.185 /
    +0.150 vs +0.129: within run-to-run noise. ``copies_follow``: a group's range is the union
    of what free ops write into it alone, the copies' own ranges ignored (ranges edited after
    calibration, :mod:`lhp_tf.quantize.learned_ranges`, leave the copies' stale). Pure int8
    only: int16 tensors get their extremes
    afterwards (:meth:`RangeTable.widest`), so requantisations around them stay. Returns how
    many tensors changed range.
    """
    changed = 0
    for group in scale_groups(table, graph):
        ranges: list[tuple[float, float]] = [table.range(graph.names[t]) for t in group.members]  # type: ignore[misc]
        sources = [r for t, r in zip(group.members, ranges, strict=True) if t in group.written] if copies_follow else []
        lo, hi = min(r[0] for r in sources or ranges), max(r[1] for r in sources or ranges)
        if len(group.fixed) > 1 or None in group.fixed:
            continue
        if group.fixed:
            lo_f, hi_f = next(iter(group.fixed))  # type: ignore[misc]
            free = [r for t, r in zip(group.members, ranges, strict=True) if t in group.written]
            if free and (min(r[0] for r in free) < lo_f - 1e-6 or max(r[1] for r in free) > hi_f + 1e-6):
                continue
            lo, hi = lo_f, hi_f
        for t, r in zip(group.members, ranges, strict=True):
            if r != (lo, hi):
                table.set_range(graph.names[t], lo, hi)
                changed += 1
    return changed


def fit_for_int8(table: RangeTable, graph: FloatGraph, copies_follow: bool = False) -> None:
    """The edits every int8 range table gets before :func:`quantize`, in their order:
    :func:`widen_for_bias`, :func:`share_ranges` (``copies_follow`` as there),
    :func:`widen_for_xnnpack`."""
    widen_for_bias(table, graph)
    share_ranges(table, graph, copies_follow)
    widen_for_xnnpack(table, graph)


def _int8_scale(lo: float, hi: float) -> float:
    return (max(hi, 0.0) - min(lo, 0.0)) / 255.0


#: The largest int32 bias a widened input range leaves: half of int32, so the accumulation of
#: input x weight products on top of it cannot overflow either.
BIAS_LIMIT = 2.0 ** 30


def widen_for_bias(table: RangeTable, graph: FloatGraph) -> int:
    """Widen the input range of every conv whose int32 bias would not fit at its scale.

    An int8 conv's bias is stored in int32 at scale input_scale x weight_scale. An input that
    calibration saw only as zeros (an attention FC behind a ReLU that is always off) gets a
    range of almost nothing, hence a scale near 1e-9, and the bias, divided by it, overflows:
    ai-edge-quantizer saturates it at 2^31 and the conv then outputs a wrong constant where
    float outputs its bias. It happened in the 20-epoch synthetic lhp-large: two SCAF
    attention FCs (``fusion_s0m1_0from1_fc2``, ``fusion_s0m2_0from1_fc2``) had input scales of
    2.6e-9 and 3.9e-10 and all 40 biases saturated each, so those two attention weights were
    wrong on every image. The input range is widened until every bias fits within
    :data:`BIAS_LIMIT` (the zeros still quantise exactly; what else the tensor may carry at
    run time gets a step still far finer than its consumers resolve). Runs before
    :func:`share_ranges`, so a widened tensor's group shares the wider range. Returns how many
    ranges were widened.
    """
    widened = 0
    for kind, ins, _ in graph.ops:
        axis = WEIGHT_CHANNEL_AXIS.get(kind)
        if axis is None or len(ins) < 3 or ins[1] not in graph.constants or ins[2] not in graph.constants:
            continue
        r_in = table.range(graph.names[ins[0]])
        if r_in is None:
            continue
        weights = np.moveaxis(np.abs(graph.constants[ins[1]]), axis, 0)
        w_scale = weights.reshape(weights.shape[0], -1).max(axis=1) / 127.0
        bias = np.abs(graph.constants[ins[2]]).ravel()
        live = w_scale > 0
        if not live.any():
            continue
        widened += _widen_to_scale(table, graph.names[ins[0]], float(np.max(bias[live] / (w_scale[live] * BIAS_LIMIT))))
    return widened


def widen_for_xnnpack(table: RangeTable, graph: FloatGraph) -> int:
    """Widen conv output ranges so narrow that XNNPACK cannot requantise into them.

    A convolution whose output is almost constant (a ReLU that is nearly always off, say)
    calibrates to a tiny range, hence a tiny output scale, and XNNPACK then rejects the whole
    graph. Widening such a range to the smallest XNNPACK accepts costs nothing: the values
    still fit, with a step far below anything downstream resolves. Returns how many were widened.
    """
    widened = 0
    for kind, ins, outs in graph.ops:
        if kind not in ("CONV_2D", "DEPTHWISE_CONV_2D") or len(ins) < 2 or ins[1] not in graph.constants:
            continue
        r_in, r_out = table.range(graph.names[ins[0]]), table.range(graph.names[outs[0]])
        if r_in is None or r_out is None:
            continue
        w = float(np.abs(graph.constants[ins[1]]).max())
        widened += _widen_to_scale(table, graph.names[outs[0]], _int8_scale(*r_in) * w / 127.0 / XNNPACK_MAX_REQUANT * 1.05)
    return widened


def _widen_to_scale(table: RangeTable, name: str, needed: float) -> bool:
    """Widen ``name``'s range, away from zero on the side it lies, until its int8 scale is at
    least ``needed``; whether it changed."""
    lo, hi = table.range(name)  # type: ignore[misc]
    current = _int8_scale(lo, hi)
    if needed <= 0.0 or current >= needed:
        return False
    extra = (needed - current) * 255.0
    table.set_range(name, *((lo - extra, hi) if lo < 0.0 and hi <= 0.0 else (lo, hi + extra)))
    return True


@dataclass
class OpNoise:
    """How much of one op's output signal int8 rounding destroys (its noise-to-signal ratio)."""

    name: str
    op: str
    noise_to_signal: float

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "op": self.op, "noise_to_signal": self.noise_to_signal}


def rank_ops(float_model: bytes, table: RangeTable, images: Sequence[np.ndarray]) -> list[OpNoise]:
    """Every quantised op, worst int8 noise-to-signal first.

    For each op's output: the RMS of int8 rounding and clipping at its calibrated range (for
    LOGISTIC, int8's fixed 1/256 step) over the RMS deviation of the float values from their
    mean. An op far above the rest is one whose information int8 erases: lhp-large's SCAF
    attention sigmoids sit at 0.5 +- 0.002, below LOGISTIC's 1/256 step, so int8 flattens
    their modulation to a constant. A diagnostic (``lhp quantize drift``): how much an op's
    noise matters downstream is another question, which ``--int16 auto`` measures instead
    (:mod:`lhp_tf.quantize.mixed`); int16 for those sigmoids alone moved lhp-large's drift
    from +0.324 to +0.311 points.
    """
    graph = FloatGraph.read(float_model)
    candidates = [(kind, outs[0]) for kind, _, outs in graph.ops
                  if outs and table.range(graph.names[outs[0]]) is not None]
    values = activations(float_model, images, [t for _, t in candidates])
    ranked = []
    for kind, t in candidates:
        x = values.get(t)
        if x is None or x.size == 0:
            continue
        lo, hi = LOGISTIC_RANGE if kind == "LOGISTIC" else table.range(graph.names[t])  # type: ignore[misc]
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        spread = float(np.sqrt(np.mean((x - x.mean()) ** 2)))
        noise = np.sqrt(_quantisation_mse(x, lo, hi))
        ranked.append(OpNoise(graph.names[t], kind, float(noise / spread) if spread > 0 else 0.0))
    ranked.sort(key=lambda r: -r.noise_to_signal)
    return ranked


def int16_ops(model: bytes) -> list[str]:
    """Output names of the ops of ``model`` that compute in int16 (QUANTIZE conversions excluded)."""
    from lhp_tf.tflite_graph import read_graph

    g = read_graph(model)
    return [g.tensors[op.outputs[0]].name for op in g.operators
            if op.op != "QUANTIZE" and op.outputs and g.tensors[op.outputs[0]].dtype == "int16"]


def select_ops(float_model: bytes, selectors: Sequence[str]) -> list[str]:
    """Output names of the ops ``selectors`` pick, in graph order.

    A selector is an op type (``LOGISTIC``: every sigmoid), an op type and a regular
    expression searched in the op's output tensor name (``LOGISTIC@fusion``: SCAF's attention
    sigmoids; tensor names carry the Keras layer names), or ``@REGEX`` (any op type). A
    selector that picks nothing is an error: a typo must not silently give a pure int8 model.
    """
    graph = FloatGraph.read(float_model)
    named = [(kind, graph.names[outs[0]]) for kind, _, outs in graph.ops if outs]
    picked: set[str] = set()
    for sel in selectors:
        kind, _, pattern = sel.partition("@")
        try:
            regex = re.compile(pattern) if pattern else None
        except re.error as exc:
            raise LhpError(f"--int16 {sel!r}: bad regular expression ({exc})") from exc
        hits = {name for k, name in named if (not kind or k == kind) and (regex is None or regex.search(name))}
        if not hits:
            kinds = sorted({k for k, _ in named})
            raise LhpError(f"--int16 {sel!r} picks no op (op types here: {', '.join(kinds)}; "
                           f"'@REGEX' matches output tensor names)")
        picked |= hits
    return [name for _, name in named if name in picked]
