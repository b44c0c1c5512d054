"""Put the elementwise ops the MLIR quantiser leaves in float back into int8.

In every CCW block the cross-resolution weight of the lowest-resolution branch multiplies its
features directly (the other branches' weights pass through the nearest upsample first). The
TF 2.21 quantiser keeps exactly that MUL in float: DEQUANTIZE on both int8 operands, a float
MUL, QUANTIZE of the product (12 float islands in the 6-module lhp-small; a one-block toy
reproduces it, minimal graphs of the same ops do not, and no calibrated range we tried to
repair changes it). A full-integer model must not carry them: NPUs and int8-only delegates
reject float ops, and on XNNPACK each island costs three extra nodes.

Every operand of such an op already has an int8 tensor with a calibrated scale, and the
QUANTIZE after it names the output scale the quantiser chose, so the int8 op is fully
determined: this pass rewires the op to the int8 operands and to the QUANTIZE's output, then
drops the DEQUANTIZE/QUANTIZE nodes that no longer feed anything. The int8 MUL/ADD kernels
requantise from any input scales, so this is the graph the quantiser would have written.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

#: Elementwise ops whose int8 kernels accept operands of any scale.
FOLDABLE = ("MUL", "ADD")
#: Lowest op version with int8 kernels (MUL and ADD: 2).
INT8_VERSION = 2


def fold_float_islands(int8_model: bytes, keep_float: Collection[str] = ()) -> tuple[bytes, int]:
    """``int8_model`` with single-op float islands made int8; returns (bytes, ops folded).

    Ops whose output tensor is named in ``keep_float`` (selective quantisation's denylist)
    stay float.
    """
    from tensorflow.lite.python import schema_py_generated as schema_fb
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(int8_model))
    names = {v: k for k, v in vars(schema_fb.BuiltinOperator).items() if not k.startswith("_")}
    float32, int8 = schema_fb.TensorType.FLOAT32, schema_fb.TensorType.INT8

    def kind(op: Any) -> str:
        code = model.operatorCodes[op.opcodeIndex]
        return names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "")

    keep = set(keep_float)
    folded = 0
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
            if kind(op) not in FOLDABLE or len(op.outputs) != 1:
                continue
            ins = [int(t) for t in op.inputs]
            sources = []
            for t in ins:
                dq = producer.get(t)
                if dq is None or kind(dq) != "DEQUANTIZE" or graph.tensors[int(dq.inputs[0])].type != int8:
                    break
                sources.append(int(dq.inputs[0]))
            if len(sources) != len(ins):
                continue
            out = int(op.outputs[0])
            if _name(graph.tensors[out]) in keep:
                continue
            users = consumers.get(out, [])
            if (graph.tensors[out].type != float32 or out in graph_outputs or len(users) != 1
                    or kind(users[0]) != "QUANTIZE" or graph.tensors[int(users[0].outputs[0])].type != int8):
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
            folded += 1
        graph.operators = [op for op in ops if id(op) not in removed]
    if not folded:
        return int8_model, 0
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)), folded


def _name(tensor: Any) -> str:
    name = tensor.name
    return name.decode() if isinstance(name, bytes) else str(name)
