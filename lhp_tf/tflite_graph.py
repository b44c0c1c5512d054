"""The operator graph of a .tflite, read without TensorFlow (pure Python over the flatbuffer).

:mod:`lhp_tf.npu_check` needs each operator's type, its input and output tensor shapes and
types, and a few builtin options (strides, pool sizes, resize modes): enough to test a model
against published NPU constraints on a machine that has no TensorFlow. Reads go through the
bounds-checked reader of :mod:`lhp_tf.tflite_metadata`, so a corrupt file gives one clear error.

The schema fields read (tensorflow/compiler/mlir/lite/schema/schema.fbs, declaration order)::

    table Model { version; operator_codes:[OperatorCode]; subgraphs:[SubGraph]; description;
                  buffers:[Buffer]; ... }
    table OperatorCode { deprecated_builtin_code:byte; custom_code:string; version:int;
                         builtin_code:int; }
    table SubGraph { tensors:[Tensor]; inputs:[int]; outputs:[int]; operators:[Operator]; name; }
    table Tensor { shape:[int]; type:byte; buffer:uint; name:string; ... }
    table Operator { opcode_index:uint; inputs:[int]; outputs:[int];
                     builtin_options (union: type byte, then table); ... }
"""

from __future__ import annotations

import os
import struct
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from lhp_tf.errors import LhpError
from lhp_tf.tflite_metadata import _FlatBufferError, _Reader, check_tflite, read_model_bytes

#: BuiltinOperator codes of the ops lhp-tf graphs and the NPU checks deal with; others are
#: named from ai_edge_litert's generated schema when it is installed, else ``BUILTIN_<code>``.
OP_NAMES = {
    0: "ADD", 1: "AVERAGE_POOL_2D", 2: "CONCATENATION", 3: "CONV_2D", 4: "DEPTHWISE_CONV_2D",
    6: "DEQUANTIZE", 9: "FULLY_CONNECTED", 14: "LOGISTIC", 17: "MAX_POOL_2D", 18: "MUL",
    19: "RELU", 21: "RELU6", 22: "RESHAPE", 23: "RESIZE_BILINEAR", 25: "SOFTMAX", 28: "TANH",
    34: "PAD", 36: "GATHER", 39: "TRANSPOSE", 40: "MEAN", 41: "SUB", 43: "SQUEEZE",
    45: "STRIDED_SLICE", 49: "SPLIT", 51: "DELEGATE", 53: "CAST", 54: "PRELU", 55: "MAXIMUM",
    57: "MINIMUM", 60: "PADV2", 65: "SLICE", 67: "TRANSPOSE_CONV", 69: "TILE", 70: "EXPAND_DIMS",
    74: "SUM", 83: "PACK", 97: "RESIZE_NEAREST_NEIGHBOR", 100: "MIRROR_PAD", 102: "SPLIT_V",
    114: "QUANTIZE", 117: "HARD_SWISH", 126: "BATCH_MATMUL",
}

#: TensorType codes -> numpy-style names.
TENSOR_TYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 5: "string", 6: "bool",
                7: "int16", 9: "int8", 10: "float64"}

# BuiltinOptions union type ids and the option slots read from them.
_OPTIONS_CONV = 1          # Conv2DOptions: padding, stride_w, stride_h, ...
_OPTIONS_DEPTHWISE = 2     # DepthwiseConv2DOptions: padding, stride_w, stride_h, ...
_OPTIONS_POOL = 5          # Pool2DOptions: padding, stride_w, stride_h, filter_width, filter_height
_OPTIONS_RESIZE_BILINEAR = 15  # ResizeBilinearOptions: new_h, new_w, align_corners, half_pixel_centers
_OPTIONS_TRANSPOSE_CONV = 49   # TransposeConvOptions: padding, stride_w, stride_h
#: ActivationFunctionType, the fused activation of a conv
_ACTIVATIONS = {0: "none", 1: "relu", 2: "relu_n1_to_1", 3: "relu6", 4: "tanh", 5: "sign_bit"}


@dataclass
class Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: str
    data: bytes | None = None  # constant contents, when the tensor has a non-empty buffer


@dataclass
class Operator:
    index: int
    op: str
    inputs: list[int]
    outputs: list[int]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Graph:
    """The first subgraph of a model: its tensors and operators in execution order."""

    tensors: list[Tensor]
    operators: list[Operator]
    inputs: list[int] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)

    def op_counts(self) -> Counter[str]:
        return Counter(op.op for op in self.operators)

    def output_name(self, op: Operator) -> str:
        return self.tensors[op.outputs[0]].name if op.outputs else f"#{op.index}"


def _op_name(code: int) -> str:
    if code in OP_NAMES:
        return OP_NAMES[code]
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        return f"BUILTIN_{code}"
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    return names.get(code, f"BUILTIN_{code}")


def _ints(r: _Reader, table: int, slot: int) -> list[int]:
    vec = r.vector(table, slot)
    if vec is None:
        return []
    start, length = vec
    raw = r.buf[start:start + 4 * length]
    if len(raw) != 4 * length:
        raise _FlatBufferError(f"int vector of {length} at offset {start} is past the end")
    return list(struct.unpack(f"<{length}i", raw))


def _options(r: _Reader, op_table: int, kind: str) -> dict[str, Any]:
    union_type = r.scalar(op_table, 3, "<B")
    pos = r.field_pos(op_table, 4)
    if pos is None:
        return {}
    opts = r.indirect(pos)
    if union_type in (_OPTIONS_CONV, _OPTIONS_DEPTHWISE, _OPTIONS_TRANSPOSE_CONV):
        out = {"padding": "valid" if r.scalar(opts, 0, "<b") else "same",
               "stride": (r.scalar(opts, 2, "<i"), r.scalar(opts, 1, "<i"))}
        if union_type != _OPTIONS_TRANSPOSE_CONV:  # fused_activation_function: after the strides (+ multiplier)
            code = r.scalar(opts, 3 if union_type == _OPTIONS_CONV else 4, "<b")
            out["activation"] = _ACTIVATIONS.get(code, str(code))
        return out
    if union_type == _OPTIONS_POOL:
        return {"padding": "valid" if r.scalar(opts, 0, "<b") else "same",
                "stride": (r.scalar(opts, 2, "<i"), r.scalar(opts, 1, "<i")),
                "filter": (r.scalar(opts, 4, "<i"), r.scalar(opts, 3, "<i"))}
    if union_type == _OPTIONS_RESIZE_BILINEAR:
        return {"align_corners": bool(r.scalar(opts, 2, "<B")),
                "half_pixel_centers": bool(r.scalar(opts, 3, "<B"))}
    return {}


def read_graph(source: str | os.PathLike[str] | bytes) -> Graph:
    """The main subgraph of a .tflite (path or bytes); LhpError naming the file when corrupt."""
    buf, name = read_model_bytes(source)
    check_tflite(buf, name)
    r = _Reader(buf)
    try:
        model = r.root()
        codes_vec = r.vector(model, 1)
        codes = []
        for i in range(codes_vec[1] if codes_vec else 0):
            code = r.table_at(codes_vec[0], i)
            codes.append(max(r.scalar(code, 0, "<b"), r.scalar(code, 3, "<i")))
        subgraphs = r.vector(model, 2)
        if not subgraphs or subgraphs[1] < 1:
            raise _FlatBufferError("the model has no subgraph")
        buffers = r.vector(model, 4)
        sub = r.table_at(subgraphs[0], 0)
        tensors = []
        tvec = r.vector(sub, 0)
        for i in range(tvec[1] if tvec else 0):
            t = r.table_at(tvec[0], i)
            raw = r.bytes_of(t, 3)
            data = None
            b = r.scalar(t, 2, "<I")
            if buffers is not None and 0 < b < buffers[1]:
                data = r.bytes_of(r.table_at(buffers[0], b), 0) or None
            tensors.append(Tensor(name=raw.decode("utf-8", "replace") if raw else f"tensor{i}",
                                  shape=tuple(_ints(r, t, 0)),
                                  dtype=TENSOR_TYPES.get(r.scalar(t, 1, "<b"), "other"), data=data))
        operators = []
        ovec = r.vector(sub, 3)
        for i in range(ovec[1] if ovec else 0):
            o = r.table_at(ovec[0], i)
            index = r.scalar(o, 0, "<I")
            if index >= len(codes):
                raise _FlatBufferError(f"operator {i} uses opcode {index}, the model has {len(codes)}")
            kind = _op_name(codes[index])
            ins, outs = _ints(r, o, 1), _ints(r, o, 2)
            for t in (*ins, *outs):
                if t >= len(tensors):
                    raise _FlatBufferError(f"operator {i} ({kind}) uses tensor {t}, the graph has {len(tensors)}")
            operators.append(Operator(i, kind, ins, outs, _options(r, o, kind)))
        return Graph(tensors, operators, _ints(r, sub, 1), _ints(r, sub, 2))
    except _FlatBufferError as exc:
        raise LhpError(f"{name}: corrupt TFLite flatbuffer ({exc})") from exc
