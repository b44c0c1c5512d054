"""Single-thread latency of lhp-small and lhp-large: LiteRT int8 vs LiteRT float vs ONNX Runtime fp32.

    python benchmarks/latency.py [--checkpoint-small CKPT] [--checkpoint-large CKPT]

For each model the three engines run the SAME weights (one checkpoint, or one freshly built
untrained network: latency does not depend on the weights' values, and the output says which)
on the SAME 96x96 input, one thread each, batch 1. Runs are interleaved round-robin (one
timed invoke of each engine per round) so that machine load drifts hit all three alike; the
median over rounds is reported. The paper timed ONNX Runtime; the claim checked here is that
LiteRT int8 is at least 2x faster than ONNX Runtime fp32 on the same model.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TARGET_SPEEDUP = 2.0


def _models(arch: str, checkpoint: str | None, tmp: Path) -> tuple[dict[str, Path], str]:
    """float/int8 .tflite and fp32 .onnx of one model; returns the files and where weights came from."""
    from lhp_tf.converters.export import export_checkpoint

    from lhp_tf.config import dump_recipe, load_recipe
    from lhp_tf.model.network import build_model

    if checkpoint is None:
        recipe = load_recipe(REPO / "recipes" / "synthetic-300w.yaml",
                             [f"model.arch={arch}", f"data.cache_dir={tmp / 'cache'}",
                              "data.synthetic.num=64", "export.calib_samples=32"])
        run = tmp / arch
        run.mkdir()
        build_model(recipe.model, recipe.num_landmarks).save(run / "best.keras")
        (run / "recipe.yaml").write_text(dump_recipe(recipe))
        checkpoint = str(run / "best.keras")
        source = "freshly built, UNTRAINED weights (latency does not depend on their values)"
    else:
        source = f"checkpoint {checkpoint}"
    files = {}
    for quant in ("int8", "float"):
        files[quant] = export_checkpoint(checkpoint, tmp / f"{arch}_{quant}.tflite", quant=quant)
    files["onnx"] = export_checkpoint(checkpoint, tmp / f"{arch}.onnx", to="onnx")
    return files, source


def _runners(files: dict[str, Path], image: np.ndarray) -> dict[str, Callable[[], None]]:
    import onnxruntime as ort

    from lhp_tf.runtime import TFLiteModel

    runners: dict[str, Callable[[], None]] = {}
    for quant in ("int8", "float"):
        model = TFLiteModel(files[quant], num_threads=1)
        x = model.prepare(image)
        runners[f"LiteRT {quant}"] = (lambda m, v: lambda: m.invoke_prepared(v))(model, x)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(files["onnx"]), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: (image.astype(np.float32) / 255.0)[None]}
    runners["ONNX Runtime fp32"] = lambda: session.run(None, feed)
    return runners


def interleaved(runners: dict[str, Callable[[], None]], rounds: int, warmup: int) -> dict[str, np.ndarray]:
    """Milliseconds per call of each runner, one call of each per round."""
    for _ in range(warmup):
        for run in runners.values():
            run()
    times = {name: np.empty(rounds) for name in runners}
    for r in range(rounds):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            times[name][r] = (time.perf_counter() - start) * 1e3
    return times


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint-small", default=None)
    p.add_argument("--checkpoint-large", default=None)
    p.add_argument("--rounds", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--only", choices=("lhp-small", "lhp-large"), default=None)
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from lhp_tf.runtime import op_delegation

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
    failed = False
    report = []
    with tempfile.TemporaryDirectory(prefix="lhp_latency_") as tmp:
        for arch, ckpt in (("lhp-small", args.checkpoint_small), ("lhp-large", args.checkpoint_large)):
            if args.only and arch != args.only:
                continue
            files, source = _models(arch, ckpt, Path(tmp))
            times = interleaved(_runners(files, image), args.rounds, args.warmup)
            med = {name: float(np.median(t)) for name, t in times.items()}
            speedup = med["ONNX Runtime fp32"] / med["LiteRT int8"]
            ok = speedup >= TARGET_SPEEDUP
            failed |= not ok
            lines = [f"{arch}: {source}; 96x96, batch 1, 1 thread, {args.rounds} interleaved rounds (median)"]
            for name, t in times.items():
                lines.append(f"  {name:<18} {med[name]:8.3f} ms  (min {t.min():.3f}, p10 {np.percentile(t, 10):.3f}, "
                             f"p90 {np.percentile(t, 90):.3f})")
            for quant in ("int8", "float"):
                ops = op_delegation(files[quant])
                lines.append(f"  XNNPACK {quant}: {ops['delegated']}/{ops['total']} nodes delegated")
            fastest = {name: float(t.min()) for name, t in times.items()}
            lines.append(f"  ratio ONNX Runtime fp32 / LiteRT int8  = {speedup:.2f}x "
                         f"(target >= {TARGET_SPEEDUP:.1f}x: {'OK' if ok else 'MISSED'}; "
                         f"{fastest['ONNX Runtime fp32'] / fastest['LiteRT int8']:.2f}x on the fastest runs)")
            lines.append(f"  ratio LiteRT float / LiteRT int8        = {med['LiteRT float'] / med['LiteRT int8']:.2f}x")
            lines.append(f"  ratio ONNX Runtime fp32 / LiteRT float  = {med['ONNX Runtime fp32'] / med['LiteRT float']:.2f}x")
            report.append("\n".join(lines))
            print(report[-1], flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
