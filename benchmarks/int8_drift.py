"""Int8 accuracy drift of trained checkpoints: post-training int8 (learned, min/max, MSE, auto
calibration, mixed int16), QAT with a float control, and the latency of every int8 variant.

For each run folder (a trained checkpoint ``best.keras`` with its ``recipe.yaml``), on the
held-out ``--split`` of its recipe's data, through the board's runtime and metric:

1. ``lhp quantize drift``: float .tflite NME, post-training int8 NME and drift, with learned
   (the default: ``RUN/best.ranges.json`` when ``lhp train`` saved it), min/max, MSE-optimal and
   ``auto`` activation ranges (``export.calibration``; auto keeps whichever of min/max and MSE
   moves landmarks least on augmented training faces), and auto with
   ``--int16 auto`` (the fewest int16 ops that bring drift within budget on training faces);
2. ``lhp quantize qat --epochs E --save-checkpoint``: the QAT int8 NME, and the NME of QAT's
   fine-tuned float weights (what int8 costs the QAT model itself); then those weights
   converted with ``--int16 auto`` (QAT and mixed precision together, still integer-only);
3. a float control: the same checkpoint trained E more epochs in float (``lhp train --resume``
   on a copy of the run, at the rate the schedule ended with, which is also QAT's default),
   so that what QAT gains by training longer is not mistaken for quantisation robustness;
4. latency: float, each PTQ variant and QAT, 1 thread, rounds interleaved in one process
   (p10 and p50, and each one's ratio to float).

    python benchmarks/int8_drift.py runs/synthetic-300w runs/synthetic-300w-large [--qat-epochs 3] [--qat-graph training]

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

from lhp_tf.quantize.deploy_qat import DROP

from lhp_tf.kinds import QAT_GRAPHS

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


def measure(run: Path, split: str, qat_epochs: int, calib_samples: int | None,
            qat_graph: str = QAT_GRAPHS[0]) -> dict:
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
    for variant, extra in (("learned", ["--set", "export.calibration=learned"]),
                           ("minmax", ["--set", "export.calibration=minmax"]),
                           ("mse", ["--set", "export.calibration=mse"]),
                           ("auto", ["--set", "export.calibration=auto"]),
                           ("int16", ["--set", "export.calibration=auto", "--int16", "auto"])):
        report = out / f"ptq_{variant}.json"
        if not report.is_file():
            _run([sys.executable, "-m", "lhp_tf.cli", "quantize", "drift", str(ckpt), "--data", str(bundle),
                  *extra, "--save-dir", str(out / f"ptq_{variant}"), "--report", str(report), *calib], log)
        ptq[variant] = json.loads(report.read_text())
    float_model = out / "ptq_auto" / "float.tflite"

    # the deploy graph's QDrop share is part of what QAT ran: files of another share are not reused
    tag = f"qat{qat_epochs}_{qat_graph}" + (f"_drop{DROP:g}" if qat_graph == "deploy" else "")
    qat_model = out / f"{tag}.tflite"
    qat_float = out / tag / "qat.keras"
    if not qat_model.is_file():
        _run([sys.executable, "-m", "lhp_tf.cli", "quantize", "qat", str(ckpt), "--epochs", str(qat_epochs),
              "--graph", qat_graph, "-o", str(qat_model), "--save-checkpoint", str(qat_float), *calib], log)
    qat = _bench(qat_model, bundle, float_model, log)
    qat_own = out / f"{tag}_float.json"
    if not qat_own.is_file():
        _run([sys.executable, "-m", "lhp_tf.cli", "quantize", "drift", str(qat_float), "--data", str(bundle),
              "--int8", str(qat_model), "--report", str(qat_own)], log)
    own = json.loads(qat_own.read_text())
    qat_mixed = out / f"{tag}_int16.json"
    if not qat_mixed.is_file():
        _run([sys.executable, "-m", "lhp_tf.cli", "quantize", "drift", str(qat_float), "--data", str(bundle),
              "--int16", "auto", "--save-dir", str(out / f"{tag}_int16"), "--report", str(qat_mixed),
              *calib], log)
    mixed = json.loads(qat_mixed.read_text())

    control = out / f"float_control{qat_epochs}"
    control_model = out / f"float_control{qat_epochs}.tflite"
    if not control_model.is_file():
        control.mkdir(exist_ok=True)
        for name in ("recipe.yaml", "state.npz"):
            if not (control / name).is_file():
                shutil.copy2(run / name, control / name)
        # a no-op once the control has trained all its epochs (it only rewrites last.keras)
        _run([sys.executable, "-m", "lhp_tf.train", str(control / "recipe.yaml"), "--workdir", str(control),
              "--resume", "--no-ranges", "--set", f"train.epochs={rec.train.epochs + qat_epochs}"], log)
        _run([sys.executable, "-m", "lhp_tf.cli", "convert", str(control / "last.keras"), "--quant", "float",
              "-o", str(control_model)], log)
    ctl = _bench(control_model, bundle, float_model, log)
    models = {"float": float_model, "learned": out / "ptq_learned" / "int8.tflite",
              "minmax": out / "ptq_minmax" / "int8.tflite",
              "mse": out / "ptq_mse" / "int8.tflite", "auto": out / "ptq_auto" / "int8.tflite",
              "int16": out / "ptq_int16" / "int8_mixed.tflite", "qat": qat_model,
              "qat_int16": out / f"{tag}_int16" / "int8_mixed.tflite"}
    latency = interleaved_latency(models)

    f = ptq["auto"]["float_nme"]
    row = {"run": str(run), "arch": rec.model.arch, "split": split, "images": ptq["auto"]["images"],
           "float_nme": f, "budget": tolerance(f)}
    for variant, report in ptq.items():
        row[f"{variant}_int8_nme"] = report["int8_nme"]
        row[f"{variant}_drift"] = report["drift_points"]
        row[f"{variant}_calibration"] = report["calibration_chosen"]
    row["int16_ops"] = ptq["int16"]["int16_ops"]
    return {**row, "latency_ms": latency, "qat_epochs": qat_epochs, "qat_graph": qat_graph, "qat_int8_nme": qat["nme"],
            "qat_drift": qat["nme"] - f, "qat_float_nme": own["float_nme"],
            "control_float_nme": ctl["nme"], "qat_vs_control": qat["nme"] - ctl["nme"],
            "qat_int16_int8_nme": mixed["int8_nme"], "qat_int16_ops": mixed["int16_ops"],
            "qat_int16_vs_control": mixed["int8_nme"] - ctl["nme"]}


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
    p.add_argument("--qat-epochs", type=int, default=3, help="QAT epochs, and the control's extra epochs (default 3)")
    p.add_argument("--qat-graph", choices=QAT_GRAPHS, default=QAT_GRAPHS[0],
                   help="the graph QAT fake-quantises (lhp quantize qat --graph)")
    p.add_argument("--calib-samples", type=int, default=None)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    rows = [measure(run, args.split, args.qat_epochs, args.calib_samples, args.qat_graph) for run in args.runs]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print("| run | arch | float | budget | PTQ learned (default) | PTQ min/max | PTQ MSE | PTQ auto | PTQ auto + int16 auto "
          "| QAT | QAT's own float | float + E | QAT - float+E | QAT + int16 auto | that - float+E |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        cells = [f"{r[v + '_int8_nme']:.3f} ({r[v + '_drift']:+.3f})" for v in ("learned", "minmax", "mse")]
        cells.append(f"{r['auto_int8_nme']:.3f} ({r['auto_drift']:+.3f}, {r['auto_calibration']})")
        cells.append(f"{r['int16_int8_nme']:.3f} ({r['int16_drift']:+.3f}, {len(r['int16_ops'])} ops)")
        print(f"| {r['run']} | {r['arch']} | {r['float_nme']:.3f} | {r['budget']:.3f} | " + " | ".join(cells) +
              f" | {r['qat_int8_nme']:.3f} ({r['qat_drift']:+.3f}) | {r['qat_float_nme']:.3f} | "
              f"{r['control_float_nme']:.3f} | {r['qat_vs_control']:+.3f} | "
              f"{r['qat_int16_int8_nme']:.3f} ({len(r['qat_int16_ops'])} ops) | {r['qat_int16_vs_control']:+.3f} |")
    print(f"NME % on the held-out split; (drift vs float; the calibration auto chose). QAT (on the "
          f"{args.qat_graph} graph) and float+E both train {args.qat_epochs} more epoch(s) from the checkpoint.")
    print("\n| run | " + " | ".join(f"{k} p10/p50 ms (x float)" for k in rows[0]["latency_ms"]) + " |")
    print("|---|" + "---|" * len(rows[0]["latency_ms"]))
    for r in rows:
        lat = r["latency_ms"]
        print(f"| {r['run']} | " + " | ".join(f"{v['p10']:.2f}/{v['p50']:.2f} ({v['p50'] / lat['float']['p50']:.2f}x)"
                                             for v in lat.values()) + " |")
    for r in rows:
        if r["int16_ops"]:
            print(f"{r['run']}: {len(r['int16_ops'])} int16 ops, from {r['int16_ops'][0]} to {r['int16_ops'][-1]}")


if __name__ == "__main__":
    main()
