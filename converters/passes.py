"""Flatbuffer passes over a .tflite: read once, run every pass, write once.

Each pass is a function that edits the flatbuffer's object tree (``ModelT`` of the TFLite
schema, from ``ai_edge_litert``'s schema bindings and flatbuffer tools, the same ones
ai-edge-quantizer works on) in place; :func:`run_passes` parses the bytes once, applies the
passes in order and serialises once. The passes:

* :func:`add_signature`: the ``serving_default`` signature (input ``image``, output
  ``heatmaps``). ``TFLiteConverter.from_concrete_functions`` writes none; ai-edge-quantizer
  calibrates through signature runners, and LiteRT's ``CompiledModel`` runs models by signature.
* :func:`metadata`: the ``lhp_tf`` JSON entry (docs/CONTRACTS.md), replacing an older one.
* :func:`fold_float_islands`: single float MUL/ADD ops between DEQUANTIZE and QUANTIZE made
  int8 (what TF's QAT conversion leaves behind; see its docstring).
* :func:`drop_identity_quantize`: QUANTIZE nodes that requantise to the scale and zero point
  their input already has (ai-edge-quantizer writes one after every same-scale op feeding a
  CONCATENATION, even when the scales agree) are removed and their readers rewired.
* :func:`int8_copies_at_int8_ranges`: in a mixed int8/int16 model, the int8 copies of int16
  tensors get the scale pure int8 gives those tensors (ai-edge-quantizer writes them at the
  int16 extent), and the convs reading them their biases rescaled.

Reading metadata stays pure Python (:mod:`lhp_tf.tflite_metadata`), so a board needs none of this.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import numpy as np

from lhp_tf.errors import LhpError
from lhp_tf.tflite_metadata import METADATA_NAME, check_tflite

#: A pass edits the model tree in place.
Pass = Callable[[Any], None]

#: The signature every exported model carries, and its tensor names.
SIGNATURE_KEY = "serving_default"
INPUT_NAME = "image"
OUTPUT_NAME = "heatmaps"


def _schema() -> Any:
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def run_passes(data: bytes, passes: Sequence[Pass]) -> bytes:
    """``data`` with every pass applied, parsed and serialised once."""
    from ai_edge_litert.tools import flatbuffer_utils

    check_tflite(bytes(data[:8]), "<tflite bytes>")
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    for p in passes:
        p(model)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def op_kind(model: Any, op: Any) -> str:
    """The builtin operator name of ``op`` (``CONV_2D``, ...); ``""`` for a custom op."""
    code = model.operatorCodes[op.opcodeIndex]
    names = _builtin_names()
    return names.get(max(int(code.builtinCode), int(code.deprecatedBuiltinCode)), "")


@functools.cache
def _builtin_names() -> dict[int, str]:
    """BuiltinOperator code -> name, built once (op_kind runs per op in a pass's loop)."""
    ops = _schema().BuiltinOperator
    return {v: k for k, v in vars(ops).items() if not k.startswith("_")}


def tensor_name(tensor: Any) -> str:
    name = tensor.name
    return name.decode() if isinstance(name, bytes) else str(name)


def add_signature(model: Any) -> None:
    """Give the one-input, one-output main graph the ``serving_default`` signature."""
    fb = _schema()
    graph = model.subgraphs[0]
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise LhpError(f"expected a model with one input and one output, got {len(graph.inputs)} and "
                       f"{len(graph.outputs)}")

    def entry(name: str, index: int) -> Any:
        t = fb.TensorMapT()
        t.name = name
        t.tensorIndex = int(index)
        return t

    sig = fb.SignatureDefT()
    sig.signatureKey = SIGNATURE_KEY
    sig.subgraphIndex = 0
    sig.inputs = [entry(INPUT_NAME, graph.inputs[0])]
    sig.outputs = [entry(OUTPUT_NAME, graph.outputs[0])]
    model.signatureDefs = [sig]


def metadata(meta: dict[str, Any]) -> Pass:
    """A pass storing ``meta`` as the ``lhp_tf`` metadata entry; other entries are kept."""
    payload = np.frombuffer(json.dumps(meta, sort_keys=True).encode("utf-8"), dtype=np.uint8)

    def embed(model: Any) -> None:
        fb = _schema()
        if model.metadata is None:
            model.metadata = []
        existing = [m for m in model.metadata if m.name in (METADATA_NAME, METADATA_NAME.encode())]
        if existing:
            model.buffers[existing[0].buffer].data = payload
            for extra in existing[1:]:
                model.metadata.remove(extra)
            return
        buffer = fb.BufferT()
        buffer.data = payload
        model.buffers.append(buffer)
        entry = fb.MetadataT()
        entry.name = METADATA_NAME
        entry.buffer = len(model.buffers) - 1
        model.metadata.append(entry)

    return embed


#: Elementwise ops whose int8 kernels accept operands of any scale.
FOLDABLE = ("MUL", "ADD")
#: Lowest op version with int8 kernels (MUL and ADD: 2).
INT8_VERSION = 2


def _qparams(tensor: Any) -> tuple[int, tuple[float, ...], tuple[int, ...]] | None:
    """(type, scales, zero points) of a quantised tensor; None for a float one."""
    q = tensor.quantization
    if q is None or q.scale is None or q.zeroPoint is None:
        return None
    return int(tensor.type), tuple(float(v) for v in q.scale), tuple(int(v) for v in q.zeroPoint)


def drop_identity_quantize(model: Any) -> None:
    """Remove QUANTIZE nodes whose output has its input's type, scale and zero point (copies).

    Their readers read the input instead; a QUANTIZE writing a graph output stays. After
    :func:`lhp_tf.converters.quantizer.share_ranges` ai-edge-quantizer still writes one where a
    same-scale op (SLICE, SPLIT) feeds a CONCATENATION, even at equal scales: each would be a
    full copy of a feature map on every target (an NPU or XNNPACK runs it as an elementwise op).
    """
    for graph in model.subgraphs:
        outputs = {int(t) for t in graph.outputs}
        alias: dict[int, int] = {}
        kept = []
        for op in graph.operators:
            if (op_kind(model, op) == "QUANTIZE" and len(op.inputs) == 1 and len(op.outputs) == 1
                    and int(op.outputs[0]) not in outputs):
                src, dst = int(op.inputs[0]), int(op.outputs[0])
                a, b = _qparams(graph.tensors[src]), _qparams(graph.tensors[dst])
                if a is not None and a == b:
                    alias[dst] = alias.get(src, src)
                    continue
            kept.append(op)
        if not alias:
            continue
        for op in kept:
            op.inputs = [alias.get(int(t), int(t)) for t in op.inputs]
        graph.operators = kept


def fold_float_islands(keep_float: Collection[str] = ()) -> Pass:
    """A pass making single-op float islands int8 (ops whose output is named in ``keep_float`` stay).

    TF's converter, quantising a QAT model, keeps some elementwise ops in float: DEQUANTIZE on
    both int8 operands, a float MUL, QUANTIZE of the product. Every operand already has an int8
    tensor with a scale, and the QUANTIZE names the output scale, so the int8 op is fully
    determined: the op is rewired to the int8 operands and to the QUANTIZE's output, and the
    DEQUANTIZE/QUANTIZE nodes that no longer feed anything are dropped. The int8 MUL/ADD
    kernels requantise from any input scales.
    """
    keep = set(keep_float)

    def fold(model: Any) -> None:
        fb = _schema()
        float32, int8 = fb.TensorType.FLOAT32, fb.TensorType.INT8
        for graph in model.subgraphs:
            ops = list(graph.operators)
            producer = {int(t): op for op in ops for t in op.outputs}
            consumers: dict[int, list[Any]] = {}
            for op in ops:
                for t in op.inputs:
                    consumers.setdefault(int(t), []).append(op)
            graph_outputs = {int(t) for t in graph.outputs}
            removed: set[int] = set()
            for op in ops:
                if op_kind(model, op) not in FOLDABLE or len(op.outputs) != 1:
                    continue
                ins = [int(t) for t in op.inputs]
                sources = []
                for t in ins:
                    dq = producer.get(t)
                    if dq is None or op_kind(model, dq) != "DEQUANTIZE" or graph.tensors[int(dq.inputs[0])].type != int8:
                        break
                    sources.append(int(dq.inputs[0]))
                if len(sources) != len(ins):
                    continue
                out = int(op.outputs[0])
                if tensor_name(graph.tensors[out]) in keep:
                    continue
                users = consumers.get(out, [])
                if (graph.tensors[out].type != float32 or out in graph_outputs or len(users) != 1
                        or op_kind(model, users[0]) != "QUANTIZE" or graph.tensors[int(users[0].outputs[0])].type != int8):
                    continue
                quantize = users[0]
                op.inputs = sources
                op.outputs = [int(quantize.outputs[0])]
                removed.add(id(quantize))
                for t in ins:
                    consumers[t] = [c for c in consumers[t] if c is not op]
                    if not consumers[t] and t not in graph_outputs:
                        removed.add(id(producer[t]))
                code = model.operatorCodes[op.opcodeIndex]
                code.version = max(int(code.version), INT8_VERSION)
            graph.operators = [op for op in ops if id(op) not in removed]

    return fold


#: Op types whose int8 kernels requantise from whatever scale an input has: a QUANTIZE that
#: only feeds these may write any int8 scale.
ANY_INPUT_SCALE = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "MUL", "ADD", "LOGISTIC", "MEAN",
                             "QUANTIZE"})
#: Op types with per-channel int8 weights and an int32 bias stored at input scale x weight
#: scale, and their weights' channel axis (ai-edge-quantizer's per-channel symmetric weights:
#: scale max|w| / 127 along it).
WEIGHT_CHANNEL_AXIS = {"CONV_2D": 0, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 0}


def int8_copies_at_int8_ranges(ranges: Mapping[str, tuple[float, float]],
                               params: Callable[[float, float], tuple[float, int]]) -> Pass:
    """A pass giving each int8 copy of an int16 tensor the scale pure int8 gives that tensor.

    In a mixed int8/int16 model ai-edge-quantizer quantises an int16 op's output at the
    tensor's full extent (int16 has the levels to spare) and writes a QUANTIZE where an int8
    op reads it, at that same extent: an int8 step coarser than the pure int8 model's, which
    calibrates that tensor to its (moving-average) ``ranges`` (median 1.9x coarser, 331 such
    copies, in the 20-epoch synthetic lhp-large with its attention paths in int16). So more
    int16 could cost accuracy (held-out drift, min/max: every LOGISTIC and MUL in int16 +0.312
    against pure int8's +0.183; with this pass +0.194; the attention paths +0.243 -> +0.124).
    Where every reader of the copy requantises from any scale (:data:`ANY_INPUT_SCALE`), the
    copy gets ``params(lo, hi)`` (scale, zero point) of its tensor's int8 range, and each conv
    reading it gets its int32 bias rescaled to the new input scale (in a tensor and buffer of
    its own: biases can be shared).
    """
    def requantise(model: Any) -> None:
        fb = _schema()
        for graph in model.subgraphs:
            readers: dict[int, list[Any]] = {}
            for op in graph.operators:
                for t in op.inputs:
                    readers.setdefault(int(t), []).append(op)
            outputs = {int(t) for t in graph.outputs}
            for op in list(graph.operators):
                if op_kind(model, op) != "QUANTIZE" or len(op.inputs) != 1 or len(op.outputs) != 1:
                    continue
                src, out = graph.tensors[int(op.inputs[0])], int(op.outputs[0])
                dst = graph.tensors[out]
                users = readers.get(out, [])
                bounds = ranges.get(tensor_name(src))
                if (src.type != fb.TensorType.INT16 or dst.type != fb.TensorType.INT8 or out in outputs
                        or bounds is None or not users or _qparams(dst) is None
                        or any(op_kind(model, u) not in ANY_INPUT_SCALE for u in users)):
                    continue
                scale, zero = params(*bounds)
                ratio = float(dst.quantization.scale[0]) / scale
                dst.quantization.scale, dst.quantization.zeroPoint = [scale], [zero]
                for u in users:
                    biased = op_kind(model, u) in WEIGHT_CHANNEL_AXIS and len(u.inputs) > 2 and u.inputs[2] >= 0
                    if biased and int(u.inputs[0]) == out:
                        _rescale_bias(model, graph, u, ratio)

    return requantise


def _rescale_bias(model: Any, graph: Any, op: Any, ratio: float) -> None:
    """Give ``op`` its own copy of its int32 bias, multiplied by ``ratio`` (old input scale over
    new), at scale x 1/ratio: the same real bias at the new input scale."""
    fb = _schema()
    old = graph.tensors[int(op.inputs[2])]
    values = np.frombuffer(bytes(bytearray(model.buffers[old.buffer].data)), np.int32).astype(np.float64)
    info = np.iinfo(np.int32)
    buffer = fb.BufferT()
    buffer.data = np.frombuffer(np.clip(np.round(values * ratio), info.min, info.max).astype(np.int32).tobytes(),
                                np.uint8)
    model.buffers.append(buffer)
    bias = copy.deepcopy(old)
    bias.buffer = len(model.buffers) - 1
    bias.quantization.scale = [float(s) / ratio for s in old.quantization.scale]
    graph.tensors.append(bias)
    inputs = [int(t) for t in op.inputs]
    inputs[2] = len(graph.tensors) - 1
    op.inputs = inputs
