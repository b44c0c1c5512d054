"""``lhp npu-check``: will an Arm Ethos-U NPU run this .tflite, all of it, and how fast?

With Arm's Vela compiler installed (``pip install "lhp-tf[npu]"``, ethos-u-vela) the model is
compiled for each accelerator asked (default Ethos-U55-256, U65-512, U85-256; Vela's default
system configuration and memory mode for each) into a temporary folder, and the report gives
the share of the model's operators placed on the NPU, every operator Vela leaves on the CPU
with Vela's own reason, and Vela's estimated inference time. Each CPU fallback splits the
graph: on a real SoC it costs a round trip between the NPU and the CPU.

Without Vela (or with ``--static``) a static check reads the graph with numpy-free Python
(:mod:`lhp_tf.tflite_graph`) and lists what Vela's published Ethos-U55/U65 constraints
(its ``SUPPORTED_OPS.md``, version 5.2) reject among the ops lhp-tf graphs use:

* any tensor of rank > 4 (Ethos-U55/U65 address at most 4 dimensions; Qualcomm HTP, TI TIDL
  and Edge TPU have the same cap for many ops);
* float feature maps (Ethos-U computes int8/int16 only);
* DEPTHWISE_CONV_2D with a stride above 3; CONV_2D and pools with a stride above 3 unless
  their padding is VALID;
* MEAN over the channel axis unless one of H, W, C is 1;
* RESIZE_BILINEAR with half-pixel centres and a scale other than 2 (2, 4 or 8 without them);
* operators outside the U55/U65 list.

The static check is a subset of Vela's rules: a clean static report does not promise a clean
Vela report; the Vela report is the one to trust.
"""

from __future__ import annotations

import argparse
import csv
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lhp_tf.errors import LhpError
from lhp_tf.tflite_graph import Graph, Operator, read_graph

ACCELERATORS = ("ethos-u55-256", "ethos-u65-512", "ethos-u85-256")

#: Operators Vela 5.2 can place on Ethos-U55/U65 (its TFLite summary table), under constraints.
U55_OPS = frozenset("""ABS ADD ARG_MAX AVERAGE_POOL_2D BATCH_MATMUL CONCATENATION CONV_2D
DEPTHWISE_CONV_2D ELU EXP EXPAND_DIMS FULLY_CONNECTED GELU HARD_SWISH LEAKY_RELU LOG LOGISTIC
MAXIMUM MAX_POOL_2D MEAN MINIMUM MIRROR_PAD MUL NEG PACK PAD PADV2 PRELU QUANTIZE REDUCE_MAX
REDUCE_MIN RELU RELU6 RELU_0_TO_1 RELU_N1_TO_1 RESHAPE RESIZE_BILINEAR RESIZE_NEAREST_NEIGHBOR
REVERSE_V2 RSQRT SLICE SOFTMAX SPLIT SPLIT_V SQUARED_DIFFERENCE SQUEEZE STRIDED_SLICE SUB SUM
TANH TILE TRANSPOSE TRANSPOSE_CONV UNIDIRECTIONAL_SEQUENCE_LSTM UNPACK""".split())

MAX_RANK = 4
MAX_STRIDE = 3
FLOAT_TYPES = ("float32", "float16", "float64")


@dataclass
class Finding:
    """One operator an NPU would not take, and why."""

    op: str
    name: str
    reason: str


@dataclass
class VelaReport:
    accelerator: str
    total_ops: int                 # operators of the input model
    cpu_ops: int                   # of those, left on the CPU (Vela's "CPU operators")
    npu_line: str                  # Vela's own "NPU operators = N (x%)" line
    inference_ms: float | None     # Vela's estimate for one inference
    fallbacks: list[Finding] = field(default_factory=list)

    @property
    def npu_share(self) -> float:
        return 1.0 - self.cpu_ops / self.total_ops if self.total_ops else 0.0


def _constant_ints(graph: Graph, tensor: int) -> list[int] | None:
    data = graph.tensors[tensor].data
    if data is None or graph.tensors[tensor].dtype != "int32":
        return None
    return [int.from_bytes(data[i:i + 4], "little", signed=True) for i in range(0, len(data), 4)]


def is_float_op(graph: Graph, op: Operator) -> bool:
    """A compute op on float feature maps (QUANTIZE/DEQUANTIZE at the edges excluded)."""
    if op.op in ("QUANTIZE", "DEQUANTIZE"):
        return False
    return any(graph.tensors[t].dtype in FLOAT_TYPES for t in (*op.inputs[:1], *op.outputs) if t >= 0)


def _op_findings(graph: Graph, op: Operator) -> list[str]:
    reasons = []
    shapes = [graph.tensors[t].shape for t in (*op.inputs, *op.outputs) if t >= 0]
    rank = max((len(s) for s in shapes), default=0)
    if rank > MAX_RANK:
        reasons.append(f"rank-{rank} tensor (NPUs take rank <= {MAX_RANK})")
    if op.op not in U55_OPS:
        reasons.append(f"{op.op} is not an Ethos-U55/U65 operator")
    stride = op.options.get("stride", (1, 1))
    if op.op == "DEPTHWISE_CONV_2D" and max(stride) > MAX_STRIDE:
        reasons.append(f"stride {stride[0]}x{stride[1]} (depthwise stride must be 1-3)")
    if (op.op in ("CONV_2D", "AVERAGE_POOL_2D", "MAX_POOL_2D") and max(stride) > MAX_STRIDE
            and op.options.get("padding") != "valid"):
        reasons.append(f"stride {stride[0]}x{stride[1]} with SAME padding (stride > 3 needs VALID)")
    if op.op == "MEAN" and len(op.inputs) > 1:
        axes = _constant_ints(graph, op.inputs[1]) or []
        shape = graph.tensors[op.inputs[0]].shape
        if len(shape) == 4 and any(a in (3, -1) for a in axes) and 1 not in shape[1:]:
            reasons.append(f"MEAN over channels of a {'x'.join(map(str, shape[1:]))} map "
                           "(depth reduction only when one of H, W, C is 1)")
    if op.op == "RESIZE_BILINEAR" and op.outputs:
        src, dst = graph.tensors[op.inputs[0]].shape, graph.tensors[op.outputs[0]].shape
        if len(src) == 4 and len(dst) == 4 and src[1:3] != (1, 1) and src != dst:
            factor = dst[1] / src[1]
            if op.options.get("half_pixel_centers") and factor != 2:
                reasons.append(f"RESIZE_BILINEAR x{factor:g} with half-pixel centres (only x2)")
            elif not op.options.get("half_pixel_centers") and factor not in (2, 4, 8):
                reasons.append(f"RESIZE_BILINEAR x{factor:g} (only x2, x4, x8)")
    return reasons


def static_check(model: str | Path | bytes) -> list[Finding]:
    """Operators the published Ethos-U55/U65 constraints reject (see the module docstring).

    Float ops are reported apart (:func:`is_float_op`): in a float model every op is one.
    """
    graph = read_graph(model)
    return [Finding(op.op, graph.output_name(op), "; ".join(reasons))
            for op in graph.operators if (reasons := _op_findings(graph, op))]


def max_rank(model: str | Path | bytes) -> int:
    """The highest tensor rank any operator of the model reads or writes."""
    graph = read_graph(model)
    return max((len(graph.tensors[t].shape) for op in graph.operators
                for t in (*op.inputs, *op.outputs) if t >= 0), default=0)


def vela_available() -> bool:
    try:
        import ethosu.vela  # noqa: F401
    except ImportError:
        return False
    return True


_WARNING = re.compile(r"^Warning \(supported operators\) operator: (\S+), ofm: '(.*)'$")


def parse_vela_output(text: str) -> tuple[list[Finding], int | None, str]:
    """Vela's stdout -> (CPU fallbacks with reasons, CPU operator count, NPU operators line)."""
    fallbacks: list[Finding] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = _WARNING.match(lines[i].strip())
        if m:
            reason = []
            i += 1
            while i < len(lines) and lines[i].strip() and not _WARNING.match(lines[i].strip()):
                reason.append(lines[i].strip().removeprefix("Reason: "))
                i += 1
            fallbacks.append(Finding(m.group(1), m.group(2), " / ".join(reason[:2])))
            continue
        i += 1
    cpu = re.search(r"^CPU operators = (\d+)", text, re.M)
    npu = re.search(r"^(NPU operators = .*)$", text, re.M)
    return fallbacks, int(cpu.group(1)) if cpu else None, npu.group(1).strip() if npu else ""


def run_vela(model: str | Path, accelerator: str, total_ops: int | None = None) -> VelaReport:
    """Compile ``model`` with Vela for ``accelerator`` (output in a temporary folder) and report."""
    if accelerator not in ACCELERATORS and not re.fullmatch(r"ethos-u\d\d-\d+", accelerator):
        raise LhpError(f"--accel {accelerator!r}: expected a Vela accelerator such as {', '.join(ACCELERATORS)}")
    model = Path(model)
    total = total_ops if total_ops is not None else len(read_graph(model).operators)
    with tempfile.TemporaryDirectory(prefix="lhp_vela_") as out:
        cmd = [sys.executable, "-c", "import sys; from ethosu.vela.vela import main; sys.exit(main())",
               str(model), "--accelerator-config", accelerator, "--output-dir", out]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        text = proc.stdout + proc.stderr
        if proc.returncode != 0:
            last = [ln for ln in text.strip().splitlines() if ln.strip()][-1:] or ["no output"]
            raise LhpError(f"{model}: Vela failed for {accelerator} (exit {proc.returncode}): {last[0]}")
        fallbacks, cpu, npu_line = parse_vela_output(text)
        inference_ms = None
        for summary in Path(out).glob("*_summary_*.csv"):
            with open(summary, newline="") as f:
                rows = list(csv.DictReader(f))
            if rows and rows[0].get("inference_time"):
                inference_ms = float(rows[0]["inference_time"]) * 1e3
    return VelaReport(accelerator, total, cpu if cpu is not None else len(fallbacks), npu_line,
                      inference_ms, fallbacks)


def format_vela(report: VelaReport) -> str:
    est = f"{report.inference_ms:.3f} ms" if report.inference_ms is not None else "n/a"
    lines = [f"{report.accelerator}: {report.total_ops - report.cpu_ops}/{report.total_ops} ops on the NPU "
             f"({100 * report.npu_share:.1f}%), {report.cpu_ops} on the CPU; Vela estimate {est} "
             f"(Vela: {report.npu_line or 'no NPU line'})"]
    for f in report.fallbacks:
        lines.append(f"  CPU: {f.op} {f.name!r}: {f.reason}")
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="lhp npu-check", description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="an int8 .tflite (e.g. from 'lhp convert --quant int8')")
    p.add_argument("--accel", nargs="+", default=list(ACCELERATORS),
                   help=f"Vela accelerator configs (default: {' '.join(ACCELERATORS)})")
    p.add_argument("--static", action="store_true", help="only the static check, even with Vela installed")
    p.add_argument("--strict", action="store_true",
                   help="exit 1 when any operator would fall back to the CPU")
    args = p.parse_args(argv)
    graph = read_graph(args.model)
    counts = graph.op_counts()
    print(f"{args.model}: {len(graph.operators)} ops, max tensor rank {max_rank(args.model)}; "
          + ", ".join(f"{k} {v}" for k, v in counts.most_common()))
    findings = static_check(args.model)
    floats = sum(is_float_op(graph, op) for op in graph.operators)
    print(f"static check (Ethos-U55/U65 published constraints): {len(findings)} op(s) rejected; "
          f"{floats} float op(s) (Ethos-U runs int8/int16 only)")
    for f in findings:
        print(f"  {f.op} {f.name!r}: {f.reason}")
    bad = bool(findings) or floats > 0
    if args.static:
        pass
    elif not vela_available():
        print("Vela not installed: static check only (pip install \"lhp-tf[npu]\" for Vela's report)")
    else:
        for accel in args.accel:
            report = run_vela(args.model, accel, total_ops=len(graph.operators))
            print(format_vela(report))
            bad |= report.cpu_ops > 0
    return 1 if (args.strict and bad) else 0
