"""Int8 accuracy drift of trained checkpoints: post-training int8 (min/max, MSE, mixed int16),
QAT with a float control, and the latency of every int8 variant.

For each run folder (a trained checkpoint ``best.keras`` with its ``recipe.yaml``), on the
held-out ``--split`` of its recipe's data, through the board's runtime and metric:

1. ``lhp quantize drift``: float .tflite NME, post-training int8 NME and drift, with min/max
   and with MSE-optimal activation ranges (``export.calibration``), and with ``--int16 auto``
   (the fewest int16 ops that bring drift within budget on training faces; which ones);
2. ``lhp quantize qat --epochs E``: the QAT int8 NME, drift against the float checkpoint;
3. a float control: the same checkpoint trained E more epochs in float (``lhp train --resume``
   on a copy of the run, at the rate the schedule ended with, which is also QAT's default),
   so that what QAT gains by training longer is not mistaken for quantisation robustness;
4. latency: float, each PTQ variant and QAT, 1 thread, rounds interleaved in one process
   (p10 and p50, and each one's ratio to float).

    python benchmarks/int8_drift.py runs/synthetic-300w runs/synthetic-300w-large [--qat-epochs 3]

Budget: drift at most 0.1 NME points or 2 % of the float NME, whichever is larger.
Everything is written under ``RUN/int8_drift/``; a step whose output exists is not redone.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

RESULT = "int8_drift"


def _run(cmd: list[str], log: Path) -> str:
    with open(log, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    with open(log, "a") as f:
        f.write(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {proc.returncode}; see {log}")
    return proc.stdout


def _bench(model: Path, bundle: Path, reference: Path, log: Path) -> dict:
    out = _run([sys.executable, "-m", "lhp_tf.bench", str(model), "--data", str(bundle), "--reference",
                str(reference), "--runs", "1", "--warmup", "0", "--json"], log)
    return json.loads(out)


def measure(run: Path, split: str, qat_epochs: int, calib_samples: int | None) -> dict:
    from lhp_tf.converters.run_folder import find_recipe
    from lhp_tf.quantize.drift import tolerance

    ckpt = run / "best.keras"
    rec = find_recipe(ckpt)
    out = run / RESULT
    out.mkdir(exist_ok=True)
    log = out / "log.txt"
    bundle = out / f"{split}.npz"
    if not bundle.is_file():
        _run([sys.executable, "-m", "lhp_tf.cli", "data", "export-eval", str(run / "recipe.yaml"), "--split", split,
              "-o", str(bundle)], log)
    calib = ["--calib-samples", str(calib_samples)] if calib_samples else []
    ptq = {}
    for variant, extra in (("minmax", ["--set", "export.calibration=minmax"]),
                           ("mse", ["--set", "export.calibration=mse"]),
                           ("auto", ["--int16", "auto"])):
        report = out / f"ptq_{variant}.json"
        if not report.is_file():
            _run([sys.executable, "-m", "lhp_tf.cli", "quantize", "drift", str(ckpt), "--data", str(bundle),
                  *extra, "--save-dir", str(out / f"ptq_{variant}"), "--report", str(report), *calib], log)
        ptq[variant] = json.loads(report.read_text())
    float_model = out / "ptq_mse" / "float.tflite"

    qat_model = out / f"qat{qat_epochs}.tflite"
    if not qat_model.is_file():
        _run([sys.executable, "-m", "lhp_tf.cli", "quantize", "qat", str(ckpt), "--epochs", str(qat_epochs),
              "-o", str(qat_model), *calib], log)
    qat = _bench(qat_model, bundle, float_model, log)

    control = out / f"float_control{qat_epochs}"
    control_model = out / f"float_control{qat_epochs}.tflite"
    if not control_model.is_file():
        control.mkdir(exist_ok=True)
        for name in ("recipe.yaml", "state.npz"):
            if not (control / name).is_file():
                shutil.copy2(run / name, control / name)
        # a no-op once the control has trained all its epochs (it only rewrites last.keras)
        _run([sys.executable, "-m", "lhp_tf.train", str(control / "recipe.yaml"), "--workdir", str(control),
              "--resume", "--set", f"train.epochs={rec.train.epochs + qat_epochs}"], log)
        _run([sys.executable, "-m", "lhp_tf.cli", "convert", str(control / "last.keras"), "--quant", "float",
              "-o", str(control_model)], log)
    ctl = _bench(control_model, bundle, float_model, log)
    models = {"float": float_model, "minmax": out / "ptq_minmax" / "int8.tflite",
              "mse": out / "ptq_mse" / "int8.tflite",
              "auto": out / "ptq_auto" / "int8_mixed.tflite",
              "qat": qat_model}
    latency = interleaved_latency(models)

    f = ptq["mse"]["float_nme"]
    return {
        "run": str(run), "arch": rec.model.arch, "split": split, "images": ptq["mse"]["images"],
        "float_nme": f, "budget": tolerance(f),
        "minmax_int8_nme": ptq["minmax"]["int8_nme"], "minmax_drift": ptq["minmax"]["drift_points"],
        "mse_int8_nme": ptq["mse"]["int8_nme"], "mse_drift": ptq["mse"]["drift_points"],
        "auto_int8_nme": ptq["auto"]["int8_nme"], "auto_drift": ptq["auto"]["drift_points"],
        "auto_int16_ops": ptq["auto"]["int16_ops"], "auto_calibration": ptq["auto"]["calibration"],
        "latency_ms": latency,
        "qat_epochs": qat_epochs, "qat_int8_nme": qat["nme"], "qat_drift": qat["nme"] - f,
        "control_float_nme": ctl["nme"], "qat_vs_control": qat["nme"] - ctl["nme"],
    }


def interleaved_latency(models: dict[str, Path], rounds: int = 200) -> dict[str, dict[str, float]]:
    """p10/p50 ms of each model, 1 thread, one invoke of each per round (noise hits all alike)."""
    import time

    import numpy as np

    from lhp_tf.runtime import TFLiteModel

    loaded = {name: TFLiteModel(path, num_threads=1) for name, path in models.items()}
    inputs = {name: m.prepare(np.full((*m.input_size, 3), 128, np.uint8)) for name, m in loaded.items()}
    times: dict[str, list[float]] = {name: [] for name in loaded}
    for r in range(rounds + 10):
        for name, m in loaded.items():
            t = time.perf_counter()
            m.invoke_prepared(inputs[name])
            if r >= 10:
                times[name].append(1e3 * (time.perf_counter() - t))
    return {name: {"p10": float(np.percentile(v, 10)), "p50": float(np.percentile(v, 50))}
            for name, v in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="run folders holding best.keras and recipe.yaml")
    p.add_argument("--split", default="full", help="held-out split to score (default full)")
    p.add_argument("--qat-epochs", type=int, default=3)
    p.add_argument("--calib-samples", type=int, default=None)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    rows = [measure(run, args.split, args.qat_epochs, args.calib_samples) for run in args.runs]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print("| run | arch | float | budget | PTQ min/max | PTQ MSE | PTQ mixed int16 (auto) | QAT | float + E | QAT - float+E |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        n16 = len(r["auto_int16_ops"])
        print(f"| {r['run']} | {r['arch']} | {r['float_nme']:.3f} | {r['budget']:.3f} | "
              f"{r['minmax_int8_nme']:.3f} ({r['minmax_drift']:+.3f}) | {r['mse_int8_nme']:.3f} ({r['mse_drift']:+.3f}) | "
              f"{r['auto_int8_nme']:.3f} ({r['auto_drift']:+.3f}, {n16} ops, {r['auto_calibration']}) | "
              f"{r['qat_int8_nme']:.3f} ({r['qat_drift']:+.3f}) | {r['control_float_nme']:.3f} | {r['qat_vs_control']:+.3f} |")
    print(f"NME % on the held-out split; (drift vs float). QAT and float+E both train {args.qat_epochs} more epochs "
          "from the checkpoint.")
    print("\n| run | " + " | ".join(f"{k} p10/p50 ms (x float)" for k in rows[0]["latency_ms"]) + " |")
    print("|---|" + "---|" * len(rows[0]["latency_ms"]))
    for r in rows:
        lat = r["latency_ms"]
        print(f"| {r['run']} | " + " | ".join(f"{v['p10']:.2f}/{v['p50']:.2f} ({v['p50'] / lat['float']['p50']:.2f}x)"
                                             for v in lat.values()) + " |")
    for r in rows:
        if r["auto_int16_ops"]:
            print(f"{r['run']}: int16 ops: {', '.join(r['auto_int16_ops'])}")


if __name__ == "__main__":
    main()
