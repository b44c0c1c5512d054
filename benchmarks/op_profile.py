"""Where a .tflite's time goes on XNNPACK, op by op: int8 against float of the same checkpoint.

    python benchmarks/op_profile.py [--checkpoint CKPT] [--arch lhp-small] [--target xnnpack|amx|npu]
    python benchmarks/op_profile.py --models float=A.tflite int8=B.tflite

The Python interpreter has no op profiler, and a whole graph hides which ops make int8
slower than float. So every distinct op of a graph (same type, shapes and options; its
tensors' quantisation taken from the graph) is cut out into a model of its own, once with one
copy of the op and once with ``--copies`` copies reading the same inputs, and the op's cost
is the difference per extra copy: the interpreter's fixed cost per invoke drops out. All the
cut-out models of all the graphs are timed round-robin in one process (one median of
``--reps`` invokes per model per round, the median over ``--rounds``), LiteRT, XNNPACK, 1
thread, then the whole graphs in the same way.

It prints, per op type, the summed cost in each graph and their ratio; the last graph's
costliest op signatures (count x cost); the op signatures where the last graph loses most
against the first; and each graph's whole-model time against the sum of its ops (the rest is what running ops in a chain adds: caches, the
runtime's per-op work). A copy reads a tensor its previous copy also read, so the sum is a
warm-cache estimate. Without ``--checkpoint``/``--models`` the network is freshly built with
untrained weights (op costs do not depend on their values).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lhp_tf.kinds import DEPLOY_TARGETS


@dataclass(frozen=True)
class Signature:
    """What an op costs depends on: its type, the shapes and types it reads and writes, its options."""

    op: str
    inputs: tuple[tuple[str, tuple[int, ...]], ...]
    outputs: tuple[tuple[str, tuple[int, ...]], ...]
    options: str

    def short(self) -> str:
        shapes = [str(s) for d, s in self.inputs if len(s) != 1][:2]  # leave out 1-D constants (biases, axes)
        return f"{self.op} {' x '.join(shapes)} -> {', '.join(str(s) for _, s in self.outputs)}"


def _read(path: Path) -> Any:
    from ai_edge_litert.tools import flatbuffer_utils

    return flatbuffer_utils.read_model_from_bytearray(bytearray(path.read_bytes()))


def _op_names() -> dict[int, str]:
    from ai_edge_litert import schema_py_generated as schema

    return {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


def _is_constant(model: Any, tensor: Any) -> bool:
    data = model.buffers[tensor.buffer].data
    return data is not None and len(data) > 0


def signatures(model: Any) -> dict[Signature, list[int]]:
    """Every distinct op of the first subgraph and the indices of the ops that share it."""
    from ai_edge_litert import schema_py_generated as schema

    names, types = _op_names(), {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    graph = model.subgraphs[0]

    def described(indices: list[int]) -> tuple[tuple[str, tuple[int, ...]], ...]:
        return tuple((types[graph.tensors[t].type], tuple(int(d) for d in graph.tensors[t].shape)) for t in indices if t >= 0)

    found: dict[Signature, list[int]] = {}
    for i, op in enumerate(graph.operators):
        code = model.operatorCodes[op.opcodeIndex]
        options = repr(sorted(vars(op.builtinOptions).items())) if op.builtinOptions is not None else ""
        sig = Signature(names[max(code.builtinCode, code.deprecatedBuiltinCode)], described(op.inputs),
                        described(op.outputs), options)
        found.setdefault(sig, []).append(i)
    return found


def cut_out(model: Any, index: int, copies: int) -> bytes:
    """A model running ``copies`` copies of op ``index`` on the same inputs: the op's variable
    inputs become the model's inputs, each copy writes its own outputs, constants stay."""
    from ai_edge_litert.tools import flatbuffer_utils

    m = copy.deepcopy(model)
    graph = m.subgraphs[0]
    op = graph.operators[index]
    inputs = list(dict.fromkeys(t for t in op.inputs if t >= 0 and not _is_constant(m, graph.tensors[t])))
    operators, outputs = [], []
    for k in range(copies):
        dup = copy.deepcopy(op)
        dup.outputs = []
        for t in op.outputs:
            tensor = copy.deepcopy(graph.tensors[t])
            tensor.name = (tensor.name or b"") + f"_copy{k}".encode()
            graph.tensors.append(tensor)
            dup.outputs.append(len(graph.tensors) - 1)
        operators.append(dup)
        outputs += dup.outputs
    graph.operators, graph.inputs, graph.outputs = operators, inputs, outputs
    m.subgraphs, m.signatureDefs = [graph], []
    return bytes(flatbuffer_utils.convert_object_to_bytearray(m))


class Runner:
    """An XNNPACK interpreter on fixed random inputs: ``seconds(reps)`` is a median invoke time."""

    def __init__(self, data: bytes, seed: int = 0) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_content=data, num_threads=1)
        self.interpreter.allocate_tensors()
        rng = np.random.default_rng(seed)
        for d in self.interpreter.get_input_details():
            if d["dtype"] == np.float32:
                value = rng.random(d["shape"], dtype=np.float32)
            else:
                info = np.iinfo(d["dtype"])
                value = rng.integers(max(info.min, -100), min(info.max, 100), d["shape"]).astype(d["dtype"])
            self.interpreter.set_tensor(d["index"], value)

    def seconds(self, reps: int) -> float:
        invoke = self.interpreter.invoke
        times = np.empty(reps)
        for r in range(reps):
            start = time.perf_counter()
            invoke()
            times[r] = time.perf_counter() - start
        return float(np.median(times))


def profile(paths: dict[str, Path], copies: int, rounds: int, reps: int) -> tuple[dict[str, dict[Signature, tuple[float, int]]], dict[str, float]]:
    """Per graph: ``{signature: (microseconds per op, how many ops share it)}``, and the whole
    graph's microseconds; everything timed round-robin in one process."""
    runners: dict[tuple[str, Any, int], Runner] = {}
    counts: dict[str, dict[Signature, int]] = {}
    for name, path in paths.items():
        model = _read(path)
        counts[name] = {}
        for sig, indices in signatures(model).items():
            counts[name][sig] = len(indices)
            for k in (1, copies):
                runners[(name, sig, k)] = Runner(cut_out(model, indices[0], k))
        runners[(name, None, 0)] = Runner(path.read_bytes())
    for runner in runners.values():  # warm up: XNNPACK packs weights and plans on first invokes
        runner.seconds(5)
    order = np.random.default_rng(0)
    keys = list(runners)
    times: dict[Any, list[float]] = {key: [] for key in keys}
    for _ in range(rounds):
        for i in order.permutation(len(keys)):
            times[keys[i]].append(runners[keys[i]].seconds(reps))
    med = {key: float(np.median(v)) * 1e6 for key, v in times.items()}
    per_op = {name: {sig: (max(0.0, (med[(name, sig, copies)] - med[(name, sig, 1)]) / (copies - 1)), n)
                     for sig, n in sigs.items()} for name, sigs in counts.items()}
    return per_op, {name: med[(name, None, 0)] for name in paths}


def report(per_op: dict[str, dict[Signature, tuple[float, int]]], whole: dict[str, float], top: int) -> list[str]:
    names = list(per_op)
    by_type: dict[str, Counter] = {name: Counter() for name in names}
    n_type: dict[str, Counter] = {name: Counter() for name in names}
    for name, sigs in per_op.items():
        for sig, (us, n) in sigs.items():
            by_type[name][sig.op] += us * n
            n_type[name][sig.op] += n
    kinds = sorted(set().union(*by_type.values()), key=lambda k: -max(by_type[n][k] for n in names))
    head = "".join(f"{name + ' ops':>12}{name + ' us':>13}" for name in names)
    lines = [f"{'op type':<20}{head}" + (f"{'ratio ' + names[-1] + '/' + names[0]:>22}" if len(names) > 1 else "")]
    for kind in kinds:
        row = "".join(f"{n_type[n][kind]:>12d}{by_type[n][kind]:>13.1f}" for n in names)
        if len(names) > 1 and by_type[names[0]][kind] > 0 and by_type[names[-1]][kind] > 0:
            row += f"{by_type[names[-1]][kind] / by_type[names[0]][kind]:>21.2f}x"
        lines.append(f"{kind:<20}{row}")
    sums = {n: sum(by_type[n].values()) for n in names}
    lines.append(f"{'sum of ops':<20}" + "".join(f"{sum(n_type[n].values()):>12d}{sums[n]:>13.1f}" for n in names)
                 + (f"{sums[names[-1]] / sums[names[0]]:>21.2f}x" if len(names) > 1 else ""))
    lines.append(f"{'whole graph':<20}" + "".join(f"{'':>12}{whole[n]:>13.1f}" for n in names)
                 + (f"{whole[names[-1]] / whole[names[0]]:>21.2f}x" if len(names) > 1 else ""))
    lines.append(f"{'chain overhead':<20}" + "".join(f"{'':>12}{whole[n] - sums[n]:>13.1f}" for n in names)
                 + "   (whole graph - sum of ops)")
    last = names[-1]
    costly = sorted(per_op[last].items(), key=lambda item: -item[1][0] * item[1][1])
    lines.append(f"\nwhere {last}'s time goes (each op signature, summed over its ops; us):")
    for sig, (us, n) in costly[:top]:
        lines.append(f"  {us * n:8.1f} us = {n:3d} x {us:6.2f}  {sig.short()}")
    if len(names) > 1:
        a, b = names[0], names[-1]
        # the same op signature in both graphs, apart from the tensor types
        strip = {(s.op, tuple(x for _, x in s.inputs), tuple(x for _, x in s.outputs), s.options): v
                 for s, v in per_op[a].items()}
        pairs = []
        for sig, (us, n) in per_op[b].items():
            other = strip.get((sig.op, tuple(x for _, x in sig.inputs), tuple(x for _, x in sig.outputs), sig.options))
            if other is not None:
                pairs.append(((us - other[0]) * n, sig, other[0], us, n))
        pairs.sort(key=lambda p: -p[0])
        lines.append(f"\nops where {b} loses most against {a} (same type, shapes, options; us per op):")
        for excess, sig, ua, ub, n in pairs[:top]:
            ratio = f"{ub / ua:5.2f}x" if ua > 0 else "     "
            lines.append(f"  {excess:+8.1f} us = {n:3d} x ({ua:6.2f} -> {ub:6.2f}) {ratio}  {sig.short()}")
    return lines


def _convert(checkpoint: str | None, arch: str, target: str, tmp: Path) -> dict[str, Path]:
    from lhp_tf.converters.export import export_checkpoint
    from untrained import UNTRAINED_EXPORT, untrained_run  # benchmarks/ is sys.path[0] as a script

    if checkpoint is None:
        checkpoint = str(untrained_run(tmp, arch, UNTRAINED_EXPORT))
    return {quant: Path(export_checkpoint(checkpoint, tmp / f"{quant}.tflite", quant=quant, target=target))
            for quant in ("float", "int8")}


def _convert_elsewhere(checkpoint: str | None, arch: str, target: str, tmp: Path) -> dict[str, Path]:
    """:func:`_convert` in a spawned process: this one, which times, never runs TensorFlow (after
    a conversion in the same process the first interpreters loaded run slower;
    ``benchmarks/latency.py``, ``timed_in_fresh_process``)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # not a multiprocessing.Pool: its daemonic workers may not start processes of their own
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_convert, checkpoint, arch, target, tmp).result()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="trained .keras to convert to float and int8")
    p.add_argument("--arch", default="lhp-small", help="without --checkpoint: the network to build untrained")
    p.add_argument("--target", default="xnnpack", choices=DEPLOY_TARGETS)
    p.add_argument("--models", nargs="+", default=None, metavar="NAME=MODEL.tflite",
                   help="profile these instead (the first is the baseline of the ratios)")
    p.add_argument("--copies", type=int, default=9)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--reps", type=int, default=40)
    p.add_argument("--top", type=int, default=15)
    args = p.parse_args(argv)
    if args.copies < 2:
        p.error("--copies: at least 2 (the cost is the difference per extra copy)")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with tempfile.TemporaryDirectory(prefix="lhp_op_profile_") as tmp:
        if args.models:
            paths = {}
            for item in args.models:
                name, sep, path = item.partition("=")
                if not sep or not Path(path).is_file():
                    p.error(f"--models {item!r}: expected NAME=PATH of an existing .tflite")
                paths[name] = Path(path)
            source = ", ".join(f"{n}={path}" for n, path in paths.items())
        else:
            paths = _convert_elsewhere(args.checkpoint, args.arch, args.target, Path(tmp))
            source = (f"checkpoint {args.checkpoint}" if args.checkpoint else f"{args.arch}, UNTRAINED weights") + \
                f", --target {args.target}"
        per_op, whole = profile(paths, args.copies, args.rounds, args.reps)
    from machine import describe  # benchmarks/ is sys.path[0] when run as a script

    print(describe()[0])
    print(f"{source}; LiteRT XNNPACK, 1 thread; each distinct op alone ({args.copies} copies vs 1), "
          f"{args.rounds} interleaved rounds of {args.reps} invokes (medians)")
    print("\n".join(report(per_op, whole, args.top)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
