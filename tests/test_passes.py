"""The flatbuffer passes (lhp_tf.converters.passes), each on a small graph built for it."""

from __future__ import annotations

import numpy as np
import pytest
from lhp_tf.converters.passes import (
    INPUT_NAME,
    OUTPUT_NAME,
    SIGNATURE_KEY,
    add_signature,
    drop_identity_quantize,
    fold_float_islands,
    metadata,
    run_passes,
)
from tflite_toys import FLOAT32, INT8, build_graph

from lhp_tf.errors import LhpError
from lhp_tf.tflite_graph import read_graph
from lhp_tf.tflite_metadata import read_metadata


def _run(data: bytes, *xs: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=data)
    it.allocate_tensors()
    for d, x in zip(it.get_input_details(), xs, strict=True):
        it.set_tensor(d["index"], x)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"])


def _island() -> bytes:
    """int8 a, b -> DEQUANTIZE both -> float MUL -> QUANTIZE -> int8 c: a float island."""
    tensors = [("a", INT8, 0.1), ("b", INT8, 0.05), ("a_f", FLOAT32, None), ("b_f", FLOAT32, None),
               ("c_f", FLOAT32, None), ("c", INT8, 0.02)]
    ops = [("DEQUANTIZE", [0], [2]), ("DEQUANTIZE", [1], [3]), ("MUL", [2, 3], [4]), ("QUANTIZE", [4], [5])]
    return build_graph(tensors, ops, [0, 1], [5])


def test_fold_float_islands_makes_the_mul_int8_with_the_same_result() -> None:
    raw = _island()
    a = np.array([[10, -20, 30, 40]], np.int8)
    b = np.array([[20, 20, -10, 5]], np.int8)
    folded = run_passes(raw, [fold_float_islands()])
    graph = read_graph(folded)
    assert [op.op for op in graph.operators] == ["MUL"]
    assert all(graph.tensors[t].dtype == "int8" for op in graph.operators for t in (*op.inputs, *op.outputs))
    np.testing.assert_array_equal(_run(folded, a, b), _run(raw, a, b))  # 0.1*0.05/0.02 products, exact here
    kept = run_passes(raw, [fold_float_islands(keep_float=["c_f"])])
    assert [op.op for op in read_graph(kept).operators] == ["DEQUANTIZE", "DEQUANTIZE", "MUL", "QUANTIZE"]


def test_drop_identity_quantize_keeps_real_requantisation_and_outputs() -> None:
    """x -> QUANTIZE (same scale: a copy) -> q; x -> QUANTIZE (new scale) -> r; q * r -> y;
    y -> QUANTIZE (same scale, a graph output) -> z."""
    tensors = [("x", INT8, 0.1), ("q", INT8, 0.1), ("r", INT8, 0.2), ("y", INT8, 0.5), ("z", INT8, 0.5)]
    ops = [("QUANTIZE", [0], [1]), ("QUANTIZE", [0], [2]), ("MUL", [1, 2], [3]), ("QUANTIZE", [3], [4])]
    raw = build_graph(tensors, ops, [0], [4])
    dropped = run_passes(raw, [drop_identity_quantize])
    graph = read_graph(dropped)
    assert [op.op for op in graph.operators] == ["QUANTIZE", "MUL", "QUANTIZE"]
    assert graph.operators[1].inputs[0] == 0  # the MUL reads x itself
    x = np.array([[10, -20, 30, 40]], np.int8)
    np.testing.assert_array_equal(_run(dropped, x), _run(raw, x))


def test_add_signature_names_input_and_output() -> None:
    from ai_edge_litert.interpreter import Interpreter

    plain = build_graph([("x", FLOAT32, None), ("y", FLOAT32, None), ("z", FLOAT32, None)],
                   [("MUL", [0, 1], [2])], [0, 1], [2])
    with pytest.raises(LhpError, match="one input and one output"):
        run_passes(plain, [add_signature])
    one = build_graph([("x", FLOAT32, None), ("y", FLOAT32, None)], [("MUL", [0, 0], [1])], [0], [1])
    signed = run_passes(one, [add_signature])
    it = Interpreter(model_content=signed)
    assert it.get_signature_list() == {SIGNATURE_KEY: {"inputs": [INPUT_NAME], "outputs": [OUTPUT_NAME]}}
    x = np.array([[1, 2, 3, -4]], np.float32)
    out = it.get_signature_runner(SIGNATURE_KEY)(**{INPUT_NAME: x})[OUTPUT_NAME]
    np.testing.assert_array_equal(out, x * x)


def test_passes_run_in_order_on_one_parse(tmp_path) -> None:
    one = build_graph([("x", FLOAT32, None), ("y", FLOAT32, None)], [("MUL", [0, 0], [1])], [0], [1])
    data = run_passes(one, [metadata({"a": 1}), add_signature, metadata({"a": 2})])
    path = tmp_path / "m.tflite"
    path.write_bytes(data)
    assert read_metadata(path) == {"a": 2}  # the later entry replaced the earlier, no duplicate
    with pytest.raises(LhpError, match="not a TFLite"):
        run_passes(b"garbage!" * 4, [add_signature])
