"""Small reproduction of the paper's ablations on the synthetic 300W task, same budget each.

Trains, one after the other (a 2-core machine has no room for two), the variants below with
``recipes/synthetic-300w.yaml``'s default schedule, evaluates each run's ``best.keras`` with
``lhp eval --json`` and prints one table: held-out NME per split, the mean-shape baseline,
params, MFLOPs and the wall time of the training command.

    python benchmarks/synthetic_ablation.py [--only NAME ...] [--runs runs/ablation]

A variant whose run folder already holds a finished run (its ``eval.json``) is not retrained,
so the script can be re-run after an interruption and picks up where it stopped (an
unfinished training run is continued with ``--resume``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

RECIPE = "recipes/synthetic-300w.yaml"

#: name -> recipe overrides (explicit, so the table does not depend on the recipe's defaults)
VARIANTS: dict[str, list[str]] = {
    "small-bce-scaf": ["train.loss=bce"],
    "small-mse-scaf": ["train.loss=mse"],
    "small-bce-pointwise": ["train.loss=bce", "model.fusion=pointwise"],
    "large-mse-scaf": ["train.loss=mse", "model.arch=lhp-large"],
}


def _run(cmd: list[str], log: Path) -> float:
    start = time.perf_counter()
    with open(log, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT)
    if rc != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {rc}; see {log}")
    return time.perf_counter() - start


def run_variant(name: str, overrides: list[str], runs: Path) -> dict:
    workdir = runs / name
    done = workdir / "eval.json"
    if done.is_file():
        return json.loads(done.read_text())
    sets = [a for o in overrides for a in ("--set", o)]
    train = [sys.executable, "-m", "lhp_tf.train", RECIPE, "--workdir", str(workdir), *sets]
    if (workdir / "state.npz").is_file():
        train.append("--resume")
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "ablation.log"
    train_s = _run(train, log)
    out = workdir / "eval"
    evaluate = [sys.executable, "-m", "lhp_tf.cli", "eval", RECIPE, *sets, "--checkpoint",
                str(workdir / "best.keras"), "--json", "--out", str(out)]
    proc = subprocess.run(evaluate, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(evaluate)} failed:\n{proc.stderr[-2000:]}")
    result = json.loads(proc.stdout)
    result["train_wall_s"] = round(train_s, 1)
    result["overrides"] = overrides
    done.write_text(json.dumps(result, indent=2) + "\n")
    return result


def table(results: dict[str, dict]) -> str:
    splits = list(next(iter(results.values()))["splits"])
    head = ["variant", "overrides", "params", "MFLOPs", *[f"{s} NME %" for s in splits],
            "full mean-shape %", "full FR %", "full AUC %", "train wall s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in results.items():
        full = r["splits"].get("full", next(iter(r["splits"].values())))
        cells = [name, " ".join(r.get("overrides", [])) or "(recipe)", f"{r['params'] / 1e6:.3f}M",
                 f"{r['mflops']:.2f}", *[f"{r['splits'][s]['nme']:.2f}" for s in splits],
                 f"{full['mean_shape_nme']:.2f}", f"{full['fr']:.2f}", f"{full['auc']:.2f}",
                 f"{r.get('train_wall_s', float('nan')):.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs/ablation", help="folder of the variants' runs")
    parser.add_argument("--only", nargs="*", choices=list(VARIANTS), default=None)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    runs = Path(args.runs)
    results = {}
    for name in args.only or list(VARIANTS):
        print(f"== {name}", flush=True)
        results[name] = run_variant(name, VARIANTS[name], runs)
        print(table({name: results[name]}), flush=True)
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
