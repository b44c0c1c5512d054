"""Keras model -> .tflite (float, full-integer int8, int16x8) carrying the ``lhp_tf`` metadata.

Conversion path: the model is traced once as a ``tf.function`` at its fixed batch-1 input,
its variables are frozen into constants, and ``TFLiteConverter.from_concrete_functions``
converts that graph. Three paths work with Keras 3.15 + TF 2.21 (docs/FACTS.md, section 6)
(``from_keras_model``, ``export(format="tf_saved_model")`` + ``from_saved_model``,
``export(format="litert")``). Measured on this machine with lhp-small (1,225 Keras layers):

- all paths give the same op list, a batch-1 input and full XNNPACK delegation;
- ``from_keras_model`` took 136 s for the float model (with Keras 3 it goes through a
  SavedModel export and prints every captured variable), the frozen concrete function 33 s
  (trace 9 s, freeze 13 s, convert 11 s), so every conversion, calibration and the drift
  debugger run 4x faster;
- ``export(format="litert")`` hides the converter: no representative dataset control and no
  ``tf.lite.experimental.QuantizationDebugger`` (which takes a converter object; the frozen
  path gives one);
- the same function converts tf_keras models, so the QAT model (``lhp_tf.quantize.qat``) goes
  through this exact code;
- an unfrozen concrete function keeps READ_VARIABLE ops that fail during int8 calibration:
  hence the freeze.

Int8 is full-integer with int8 input and output (no float QUANTIZE/DEQUANTIZE at the edges,
which a board's preprocessing handles with the input tensor's scale and zero point). It is
made in two steps, calibration then quantisation (what ``TFLiteConverter.convert`` does
internally), so that :func:`unify_same_scale_ranges` can repair the calibrated ranges in
between; the quantisation debugger and selective quantisation start from the same calibrated
model. The float MULs the quantiser leaves behind are then made int8
(:mod:`lhp_tf.converters.int8_islands`). Int16x8
(16-bit activations, 8-bit weights) is an accuracy reference: XNNPACK does not run it, and it
keeps float input and output.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from lhp_tf import __version__
from lhp_tf.config import Recipe
from lhp_tf.errors import LhpError
from lhp_tf.kinds import CALIBRATIONS, QUANT_MODES
from lhp_tf.spec import ModelSpec

from .int8_islands import fold_float_islands
from .range_calibration import mse_ranges

RepresentativeDataset = Callable[[], Iterator[list[np.ndarray]]]


def metadata_for(spec: ModelSpec, quant: str, recipe: Recipe | None = None) -> dict[str, Any]:
    """The ``lhp_tf`` metadata (docs/CONTRACTS.md) of a model of ``spec``: the whole spec, plus
    how the file was made. ``recipe`` (when known) names the model and pins the recipe hash."""
    return {
        "model_name": recipe.name if recipe is not None else spec.arch.name,
        "recipe_hash": recipe.hash() if recipe is not None else None,
        "input_scale": 1.0 / 255.0,
        "input_mean": 0.0,
        "quant": quant,
        "lhp_tf_version": __version__,
        "spec": spec.to_dict(),
    }


def representative_dataset(images: Iterable[np.ndarray]) -> RepresentativeDataset:
    """A converter representative dataset yielding one ``(1, H, W, 3)`` float32 image at a time."""
    frozen = [np.asarray(img, dtype=np.float32) for img in images]

    def gen() -> Iterator[list[np.ndarray]]:
        for img in frozen:
            yield [img[None]]

    return gen


def frozen_graph(model: Any) -> Any:
    """``model``'s inference graph at its declared input shape, variables frozen to constants."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    shape = [int(d) if d is not None else None for d in model.inputs[0].shape]
    if shape[0] is None:
        raise LhpError("TFLite export needs a fixed batch (the model's input batch is dynamic); "
                       "rebuild it with batch_size=1")
    spec = tf.TensorSpec(shape, tf.float32, name="image")
    concrete = tf.function(lambda image: model(image, training=False)).get_concrete_function(spec)
    return convert_variables_to_constants_v2(concrete)


def make_converter(model: Any, quant: str, representative: RepresentativeDataset | None = None) -> Any:
    """A configured ``TFLiteConverter`` for ``model`` (Keras 3 or tf_keras) and ``quant``."""
    import tensorflow as tf

    if quant not in QUANT_MODES:
        raise LhpError(f"--quant {quant!r}: expected one of {', '.join(QUANT_MODES)}")
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen_graph(model)], model)
    # The graph is already frozen: converting its GraphDef directly skips the SavedModel round
    # trip TF 2.21 makes by default (lhp-small: float 46 -> 14 s, int8 47 -> 21 s; same ops, same outputs).
    converter.experimental_lower_to_saved_model = False
    if quant == "float":
        return converter
    if representative is None:
        raise LhpError(f"--quant {quant}: needs calibration images (a representative dataset)")
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    if quant == "int8":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    else:
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    return converter


#: Ops whose int8 kernels require their outputs' scale to equal their inputs' ("same scale");
#: CONCATENATION only when it concatenates copies of one tensor (NearestUpsample).
SAME_SCALE_OPS = ("SLICE", "STRIDED_SLICE", "SPLIT", "SPLIT_V", "RESHAPE", "TRANSPOSE", "SQUEEZE",
                  "CONCATENATION")


#: The real range of int8 LOGISTIC's fixed output quantisation (scale 1/256, zero point -128).
LOGISTIC_RANGE = (0.0, 255.0 / 256.0)


def unify_same_scale_ranges(calibrated: bytes) -> bytes:
    """Give every group of tensors joined by same-scale ops one calibrated range (their union).

    Calibration records a range per tensor. In a CCW block a SLICE of the attention sigmoid
    feeds the CONCATENATION + RESHAPE of a nearest upsample: the slice's range is the whole
    sigmoid output's, the concat's the range of its own channels, a few 1e-6 apart. The MLIR
    quantiser then stops with "quantization parameters violate the same scale constraint"
    instead of unifying them. The int8 kernels need one scale per group anyway, so the union
    of the group's ranges is what the quantiser would have to pick; a group holding a sigmoid
    output gets int8 LOGISTIC's fixed range instead, which the quantiser imposes on it (with a
    calibrated range there, it left the multiply after the slice in float, with
    DEQUANTIZE/QUANTIZE around it).
    """
    from tensorflow.lite.python import schema_py_generated as schema_fb
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(calibrated))
    names = {v: k for k, v in vars(schema_fb.BuiltinOperator).items() if not k.startswith("_")}
    for graph in model.subgraphs:
        parent = list(range(len(graph.tensors)))

        def find(t: int, parent: list[int] = parent) -> int:
            while parent[t] != t:
                parent[t] = parent[parent[t]]
                t = parent[t]
            return t

        def has_range(t: int, graph: Any = graph) -> bool:
            q = graph.tensors[t].quantization
            return t >= 0 and q is not None and q.min is not None and len(q.min) == 1

        for op in graph.operators:
            code = model.operatorCodes[op.opcodeIndex]
            name = names.get(max(code.builtinCode, code.deprecatedBuiltinCode))
            if name not in SAME_SCALE_OPS or op.inputs is None:
                continue
            if name == "SPLIT":
                data = [op.inputs[1]]
            elif name == "CONCATENATION":
                if len(set(op.inputs)) != 1:
                    continue  # a real concat: the quantiser rescales its inputs itself
                data = [op.inputs[0]]
            else:
                data = [op.inputs[0]]
            members = [t for t in (*data, *op.outputs) if has_range(t)]
            for t in members[1:]:
                parent[find(t)] = find(members[0])
        fixed = set()
        for op in graph.operators:
            code = model.operatorCodes[op.opcodeIndex]
            if names.get(max(code.builtinCode, code.deprecatedBuiltinCode)) == "LOGISTIC":
                fixed.update(op.outputs)
        groups: dict[int, list[int]] = {}
        for t in range(len(graph.tensors)):
            if has_range(t):
                groups.setdefault(find(t), []).append(t)
        for members in groups.values():
            if len(members) < 2:
                continue
            if fixed.intersection(members):
                lo, hi = LOGISTIC_RANGE
            else:
                lo = min(float(graph.tensors[t].quantization.min[0]) for t in members)
                hi = max(float(graph.tensors[t].quantization.max[0]) for t in members)
            for t in members:
                graph.tensors[t].quantization.min = [lo]
                graph.tensors[t].quantization.max = [hi]
    _widen_degenerate_conv_ranges(model, names)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


#: XNNPACK refuses an int8 convolution whose requantisation scale
#: input_scale * filter_scale / output_scale is 256 or more (the whole graph then fails to load).
XNNPACK_MAX_REQUANT = 256.0


def _widen_degenerate_conv_ranges(model: Any, names: dict[int, str]) -> None:
    """Widen conv output ranges so narrow that XNNPACK cannot requantise into them.

    A convolution whose output is almost constant (a ReLU that is nearly always off, say)
    calibrates to a tiny range, hence a tiny output scale; XNNPACK then rejects the graph.
    Widening such a range to the smallest XNNPACK accepts costs nothing: the tensor's values
    still fit, with a step far below anything downstream can resolve.
    """
    def scale_of(q: Any) -> float:
        return (max(float(q.max[0]), 0.0) - min(float(q.min[0]), 0.0)) / 255.0

    for graph in model.subgraphs:
        for op in graph.operators:
            code = model.operatorCodes[op.opcodeIndex]
            if names.get(max(code.builtinCode, code.deprecatedBuiltinCode)) not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
                continue
            q_in = graph.tensors[op.inputs[0]].quantization
            q_out = graph.tensors[op.outputs[0]].quantization
            weights = graph.tensors[op.inputs[1]]
            data = model.buffers[weights.buffer].data
            if q_in is None or q_in.min is None or q_out is None or q_out.min is None or data is None:
                continue
            w = np.frombuffer(np.asarray(data, dtype=np.uint8).tobytes(), dtype=np.float32)
            if w.size == 0:
                continue
            needed = scale_of(q_in) * float(np.abs(w).max()) / 127.0 / XNNPACK_MAX_REQUANT * 1.05
            current = scale_of(q_out)
            if current >= needed:
                continue
            extra = (needed - current) * 255.0
            if float(q_out.min[0]) < 0.0 and float(q_out.max[0]) <= 0.0:
                q_out.min = [float(q_out.min[0]) - extra]
            else:
                q_out.max = [float(q_out.max[0]) + extra]


def calibrated_converter(model: Any, representative: RepresentativeDataset, calibration: str = "minmax") -> Any:
    """A converter whose ``convert()`` returns the calibrated float model, ranges repaired.

    ``tf.lite.experimental.QuantizationDebugger`` and :func:`quantize_full_integer` both
    quantise from this, so the range choice (``calibration``: ``minmax`` or ``mse``, see
    :mod:`lhp_tf.converters.range_calibration`) and the same-scale fix apply to every int8
    model we write.
    """
    import tensorflow as tf

    if calibration not in CALIBRATIONS:
        raise LhpError(f"calibration {calibration!r}: expected one of {', '.join(CALIBRATIONS)}")
    converter = make_converter(model, "float")
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    plain_convert = converter.convert

    def convert() -> bytes:
        data = plain_convert()
        if getattr(converter, "_experimental_calibrate_only", False):
            if calibration == "mse":
                data = mse_ranges(data, representative)[0]
            data = unify_same_scale_ranges(data)
        return data

    converter.convert = convert
    return converter


def quantize_full_integer(model: Any, representative: RepresentativeDataset,
                          denylisted_nodes: Sequence[str] = (), calibration: str = "minmax") -> bytes:
    """Full-integer int8 (int8 input and output); ``denylisted_nodes`` stay float inside."""
    import tensorflow as tf
    from tensorflow.lite.python import convert as tflite_convert

    converter = calibrated_converter(model, representative, calibration)
    converter._experimental_calibrate_only = True
    converter.experimental_mlir_quantizer = True
    calibrated = converter.convert()
    quantized = tflite_convert.mlir_quantize(calibrated, fully_quantize=True, input_data_type=tf.int8,
                                             output_data_type=tf.int8,
                                             denylisted_nodes=list(denylisted_nodes) or None)
    return fold_float_islands(quantized, keep_float=denylisted_nodes)[0]


def convert_tflite(model: Any, spec: ModelSpec, quant: str,
                   representative: RepresentativeDataset | None = None, recipe: Recipe | None = None,
                   extra_metadata: dict[str, Any] | None = None, calibration: str | None = None) -> bytes:
    """The .tflite bytes of ``model`` (already batch 1, heatmap space) with metadata embedded.

    ``calibration`` overrides the recipe's ``export.calibration`` (``mse`` without a recipe;
    QAT models keep the ranges their fake-quant nodes learned: ``minmax``).
    """
    from lhp_tf.tflite_metadata import embed_metadata

    meta = metadata_for(spec, quant, recipe)
    if quant == "int8":
        if representative is None:
            raise LhpError("--quant int8: needs calibration images (a representative dataset)")
        meta["calibration"] = calibration or (recipe.export.calibration if recipe is not None else "mse")
        data = quantize_full_integer(model, representative, calibration=meta["calibration"])
    else:
        data = make_converter(model, quant, representative).convert()
    meta.update(extra_metadata or {})
    return embed_metadata(data, meta)


def write_bytes(path: Any, data: bytes) -> None:
    """Write ``data`` atomically: a crash or an error never leaves a half file at ``path``."""
    from lhp_tf.checkpoint import atomic_write

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    atomic_write(path, write)
