"""What one more op of each kind costs inside the whole graph: back to back, and right after
another model has run (the way ``benchmarks/latency.py`` times, and the way a board runs a face
detector then the landmark model).

    python benchmarks/op_marginal.py MODEL.tflite [--kinds CONV_2D/1px RESHAPE ...] [--no-mediapipe]

``benchmarks/op_profile.py`` times each op cut out and repeated on warm caches; in the
interleaved rounds of ``latency.py`` every model starts on caches the other models have just
filled, and what each op touches first (its operator state, its packed weights, its output's
memory) comes from further away. So, for each op kind of MODEL (its op type; CONV_2D on a
one-pixel map, the attention FCs, is its own kind ``CONV_2D/1px``), a copy of the graph runs
every op of that kind twice (the second copy reads the same inputs and writes tensors of its
own, made graph outputs so that nothing prunes them), and each kind's cost per op is the copy's
extra time divided by the number of ops added. The graph, every copy and MediaPipe's face
landmark model (the reference row of ``latency.py``, fetched the same way on first use) run
round-robin in a new random order per round, LiteRT, XNNPACK, 1 thread: one invoke of each
after the others ("after others") and three back to back, the last timed ("warm"); medians.
An approximation: a duplicate's outputs are graph outputs, which XNNPACK cannot fold into its
arena, so a cheap copy op (RESHAPE) may read a little dearer than it is.

It prints, per kind, the number of ops, the cost of one more op warm and after others, and
that cost times the number of ops; then each whole graph's time and op count. The cheapest
kind after others (of at least 20 ops) is a floor that every op of the graph pays, whatever it
computes.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

#: the kind of CONV_2D ops whose output is a single pixel (the attention branches' FCs)
ONE_PIXEL = "/1px"
#: the floor is read from kinds with at least this many ops
FLOOR_MIN_OPS = 20


def _read_model(path: Path) -> Any:
    from op_profile import _read  # benchmarks/ is sys.path[0] when run as a script

    return _read(path)


def kinds(model: Any) -> list[str]:
    """The kind of each op of the first subgraph: its type, ``CONV_2D/1px`` for one-pixel convs."""
    from op_profile import _op_names  # benchmarks/ is sys.path[0] when run as a script

    names, graph = _op_names(), model.subgraphs[0]
    out = []
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        kind = names[max(code.builtinCode, code.deprecatedBuiltinCode)]
        shape = [int(d) for d in graph.tensors[op.outputs[0]].shape]
        if kind == "CONV_2D" and len(shape) == 4 and shape[1] * shape[2] == 1:
            kind += ONE_PIXEL
        out.append(kind)
    return out


def runtime_ops(model: Any) -> int:
    """Ops of the first subgraph that run at inference: not the DEQUANTIZEs of constant fp16
    weights (MediaPipe's model has 113), which XNNPACK folds when it packs the weights."""
    from op_profile import _is_constant

    graph = model.subgraphs[0]
    folded = [op for op, kind in zip(graph.operators, kinds(model), strict=True)
              if kind == "DEQUANTIZE" and _is_constant(model, graph.tensors[op.inputs[0]])]
    return len(graph.operators) - len(folded)


def duplicated(model: Any, chosen: Callable[[int], bool]) -> bytes:
    """``model`` with every op ``chosen(index)`` run twice: the copy follows the op, reads the
    same inputs and writes new tensors, which become graph outputs."""
    from ai_edge_litert.tools import flatbuffer_utils

    m = copy.deepcopy(model)
    graph = m.subgraphs[0]
    operators, extra = [], []
    for index, op in enumerate(graph.operators):
        operators.append(op)
        if not chosen(index):
            continue
        dup = copy.deepcopy(op)
        dup.outputs = []
        for t in op.outputs:
            tensor = copy.deepcopy(graph.tensors[t])
            tensor.name = (tensor.name or b"") + b"_again"
            graph.tensors.append(tensor)
            dup.outputs.append(len(graph.tensors) - 1)
        extra += dup.outputs
        operators.append(dup)
    graph.operators = operators
    graph.outputs = list(graph.outputs) + extra
    m.signatureDefs = []
    return bytes(flatbuffer_utils.convert_object_to_bytearray(m))


def timed(runners: dict[str, Callable[[], None]], rounds: int, seed: int = 0) -> dict[str, tuple[float, float]]:
    """Per runner, microseconds (warm, after others): medians over ``rounds`` rounds, each in a new
    random order, of one invoke after the other runners and of the last of three back to back."""
    for run in runners.values():
        for _ in range(5):
            run()
    names = list(runners)
    warm: dict[str, list[float]] = {n: [] for n in names}
    cold: dict[str, list[float]] = {n: [] for n in names}
    order = np.random.default_rng(seed)
    for _ in range(rounds):
        for n in order.permutation(names):
            start = time.perf_counter()
            runners[n]()
            cold[n].append(time.perf_counter() - start)
        for n in order.permutation(names):
            runners[n]()
            runners[n]()
            start = time.perf_counter()
            runners[n]()
            warm[n].append(time.perf_counter() - start)
    return {n: (float(np.median(warm[n])) * 1e6, float(np.median(cold[n])) * 1e6) for n in names}


def _runner(data: bytes) -> Callable[[], None]:
    from op_profile import Runner  # XNNPACK, 1 thread, fixed random inputs

    return Runner(data).interpreter.invoke


def marginal(path: Path, reference: Path | None, rounds: int, only: list[str] | None = None) -> tuple[list[str], dict[str, tuple[int, float, float]], dict[str, tuple[int, float, float]]]:
    """Per kind: (ops, us per added op warm, us per added op after others); per whole graph
    (MODEL and the reference): (ops, us warm, us after others). Also returns the kinds in order."""
    model = _read_model(path)
    of = kinds(model)
    counts = {k: of.count(k) for k in dict.fromkeys(of)}
    unknown = sorted(set(only or ()) - set(counts))
    if unknown:
        raise SystemExit(f"--kinds: {path} has no op of kind {', '.join(unknown)} (it has {', '.join(counts)})")
    chosen = [k for k in counts if only is None or k in only]
    runners = {"graph": _runner(path.read_bytes())}
    for k in chosen:
        runners[k] = _runner(duplicated(model, lambda i, k=k: of[i] == k))
    wholes = {path.name: runtime_ops(model)}
    if reference is not None:
        runners["reference"] = _runner(reference.read_bytes())
        wholes[reference.name] = runtime_ops(_read_model(reference))
    t = timed(runners, rounds)
    per_kind = {k: (counts[k], (t[k][0] - t["graph"][0]) / counts[k], (t[k][1] - t["graph"][1]) / counts[k])
                for k in chosen}
    whole = {path.name: (wholes[path.name], *t["graph"])}
    if reference is not None:
        whole[reference.name] = (wholes[reference.name], *t["reference"])
    return chosen, per_kind, whole


def report(per_kind: dict[str, tuple[int, float, float]], whole: dict[str, tuple[int, float, float]]) -> list[str]:
    lines = [f"{'op kind':<22}{'ops':>6}{'warm us/op':>12}{'after us/op':>13}{'x ops, us':>11}"]
    for k, (n, w, c) in sorted(per_kind.items(), key=lambda kv: -kv[1][0] * kv[1][2]):
        lines.append(f"{k:<22}{n:>6d}{w:>12.2f}{c:>13.2f}{n * c:>11.1f}")
    lines.append("")
    lines.append(f"{'whole graph':<40}{'ops':>6}{'warm us':>10}{'after us':>10}")
    for name, (n, w, c) in whole.items():
        lines.append(f"{name:<40}{n:>6d}{w:>10.1f}{c:>10.1f}")
    common = {k: v for k, v in per_kind.items() if v[0] >= FLOOR_MIN_OPS}  # fewer: too noisy a difference
    if common:
        kind, (_, _, floor) = min(common.items(), key=lambda kv: kv[1][2])
        lines.append(f"\nfloor: the cheapest kind after others, {kind}, {floor:.2f} us per op; times each "
                     "graph's op count: " + ", ".join(f"{name} {n * floor:.0f} us" for name, (n, _, _) in whole.items()))
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path, help="a .tflite (e.g. from lhp convert)")
    p.add_argument("--kinds", nargs="+", default=None, help="only these kinds (e.g. CONV_2D/1px RESHAPE)")
    p.add_argument("--rounds", type=int, default=150)
    p.add_argument("--no-mediapipe", action="store_true", help="leave out the reference model")
    args = p.parse_args(argv)
    if not args.model.is_file():
        p.error(f"{args.model}: no such file")
    if args.rounds < 1:
        p.error("--rounds: at least 1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from latency import mediapipe_face_landmark  # benchmarks/ is sys.path[0] when run as a script
    from machine import describe

    reference = None if args.no_mediapipe else mediapipe_face_landmark()
    _, per_kind, whole = marginal(args.model, reference, args.rounds, args.kinds)
    print(describe()[0])
    print(f"{args.model}; LiteRT XNNPACK, 1 thread; {args.rounds} rounds in random order; each kind's ops run "
          "twice in a copy of the graph; cost of one more op = (copy - graph) / ops added")
    print("\n".join(report(per_kind, whole)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
