"""benchmarks/op_marginal.py: the copy it times runs each chosen op twice and changes nothing else."""

from __future__ import annotations

import numpy as np
import pytest
from benchmark_modules import load_benchmark
from tflite_toys import FLOAT32, build_graph


def test_duplicated_graph_runs_each_chosen_op_twice(tmp_path) -> None:
    from ai_edge_litert.interpreter import Interpreter

    marg = load_benchmark("op_marginal")
    # a, b -> MUL -> c -> LOGISTIC -> d; MUL(d, a) -> e
    tensors = [(n, FLOAT32, None) for n in "abcde"]
    path = tmp_path / "toy.tflite"
    path.write_bytes(build_graph(tensors, [("MUL", [0, 1], [2]), ("LOGISTIC", [2], [3]), ("MUL", [3, 0], [4])],
                                 [0, 1], [4]))
    model = marg._read_model(path)
    assert marg.kinds(model) == ["MUL", "LOGISTIC", "MUL"]
    dup = Interpreter(model_content=marg.duplicated(model, lambda i: i != 1))
    dup.allocate_tensors()
    assert [d["name"] for d in dup.get_output_details()] == ["e", "c_again", "e_again"]
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 1, 4)).astype(np.float32)
    ins = {d["name"]: d["index"] for d in dup.get_input_details()}
    dup.set_tensor(ins["a"], a)
    dup.set_tensor(ins["b"], b)
    dup.invoke()
    e = a * (1 / (1 + np.exp(-(a * b))))
    out = {d["name"]: dup.get_tensor(d["index"]) for d in dup.get_output_details()}
    np.testing.assert_allclose(out["e"], e, rtol=1e-6)
    np.testing.assert_allclose(out["e_again"], e, rtol=1e-6)
    np.testing.assert_allclose(out["c_again"], a * b, rtol=1e-6)
    # every kind gets a row; the reference model's row comes out beside the graph's
    kinds, per_kind, whole = marg.marginal(path, path, rounds=3)
    assert kinds == ["MUL", "LOGISTIC"] and per_kind["MUL"][0] == 2 and per_kind["LOGISTIC"][0] == 1
    assert whole["toy.tflite"][0] == 3 and whole["toy.tflite"][1] > 0
    lines = marg.report(per_kind, whole)
    assert lines[0].startswith("op kind") and any(line.startswith("whole graph") for line in lines)
    with pytest.raises(SystemExit, match="no op of kind CONV_2D"):
        marg.marginal(path, None, rounds=1, only=["CONV_2D"])


def test_one_pixel_convs_are_their_own_kind(tmp_path) -> None:
    import tensorflow as tf

    marg = load_benchmark("op_marginal")
    x = tf.keras.Input((4, 4, 3), batch_size=1)
    gap = tf.keras.layers.GlobalAveragePooling2D(keepdims=True)(x)
    y = tf.keras.layers.Conv2D(3, 1)(x) * tf.keras.layers.Conv2D(3, 1)(gap)
    path = tmp_path / "convs.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(tf.keras.Model(x, y)).convert())
    found = marg.kinds(marg._read_model(path))
    assert "CONV_2D" in found and "CONV_2D" + marg.ONE_PIXEL in found
