"""benchmarks/op_profile.py: the ops it cuts out compute what they computed in the graph."""

from __future__ import annotations

import numpy as np
from benchmark_modules import load_benchmark
from tflite_toys import FLOAT32, build_graph


def test_cut_out_ops_compute_what_they_did_in_the_graph(tmp_path) -> None:
    from ai_edge_litert.interpreter import Interpreter

    prof = load_benchmark("op_profile")
    # a, b -> MUL -> c -> LOGISTIC -> d; MUL(d, a) -> e: two MULs of one signature
    tensors = [(n, FLOAT32, None) for n in "abcde"]
    path = tmp_path / "toy.tflite"
    path.write_bytes(build_graph(tensors, [("MUL", [0, 1], [2]), ("LOGISTIC", [2], [3]), ("MUL", [3, 0], [4])],
                                 [0, 1], [4]))
    model = prof._read(path)
    sigs = prof.signatures(model)
    assert sorted((s.op, idx) for s, idx in sigs.items()) == [("LOGISTIC", [1]), ("MUL", [0, 2])]

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 1, 4)).astype(np.float32)
    e = a * (1 / (1 + np.exp(-(a * b))))
    cut = Interpreter(model_content=prof.cut_out(model, 2, 3))
    cut.allocate_tensors()
    ins = {d["name"]: d["index"] for d in cut.get_input_details()}
    assert sorted(ins) == ["a", "d"]  # the op's variable inputs, in no particular order
    cut.set_tensor(ins["d"], 1 / (1 + np.exp(-(a * b))))
    cut.set_tensor(ins["a"], a)
    cut.invoke()
    outs = cut.get_output_details()
    assert [d["name"] for d in outs] == ["e_copy0", "e_copy1", "e_copy2"]
    for d in outs:
        np.testing.assert_allclose(cut.get_tensor(d["index"]), e, rtol=1e-6)
    # the whole graph's time and the per-op costs come out for every signature
    per_op, whole = prof.profile({"toy": path}, copies=3, rounds=2, reps=3)
    assert set(per_op["toy"]) == set(sigs) and whole["toy"] > 0
    assert {n for _, n in per_op["toy"].values()} == {1, 2}
    lines = prof.report(per_op, whole, top=3)
    assert lines[0].startswith("op type") and any(line.startswith("whole graph") for line in lines)
    # the costliest signatures, each with its count: the two MULs share one line
    at = lines.index("\nwhere toy's time goes (each op signature, summed over its ops; us):")
    costly = lines[at + 1:at + 3]
    assert sorted(line.split(" = ")[1].split(" x ")[0].strip() for line in costly) == ["1", "2"]
