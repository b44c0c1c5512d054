"""LiteRT vs tflite-runtime on the same .tflite and bundle, side by side in one run.

Runs ``python -m lhp_tf.bench --json`` under each given Python (default: this one, with
LiteRT, and ``.venv-board``, the tflite-runtime 2.14 board install the tests create) and
prints NME, XNNPACK delegation and latency with the ratio to the first interpreter::

    python benchmarks/interpreters.py model.tflite --data bundle.npz [--python other/bin/python]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(python: str, model: str, data: str, runs: int, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as cwd:  # outside the repo: each env uses its installed lhp_tf
        proc = subprocess.run([python, "-m", "lhp_tf.bench", model, "--data", data, "--json",
                               "--runs", str(runs), "--threads", str(threads)],
                              capture_output=True, text=True, cwd=cwd)
    if proc.returncode != 0:
        sys.exit(f"{python}: {proc.stderr.strip()}")
    return json.loads(proc.stdout)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model")
    p.add_argument("--data", required=True)
    p.add_argument("--python", action="append", help="interpreter to compare (repeatable)")
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    pythons = args.python or [sys.executable, str(REPO / ".venv-board" / "bin" / "python")]
    model, data = str(Path(args.model).resolve()), str(Path(args.data).resolve())
    rows = [run(py, model, data, args.runs, args.threads) for py in pythons]
    base = rows[0]["latency_ms"]["p50"]
    print(f"{'runtime':<24} {'NME %':>8} {'XNNPACK nodes':>14} {'parts':>6} {'p50 ms':>8} {'p90 ms':>8} {'p50 ratio':>9}")
    for r in rows:
        lat, ops = r["latency_ms"], r["ops"]
        print(f"{r['runtime'] + ' ' + (r['runtime_version'] or ''):<24} {r['nme']:>8.3f} "
              f"{ops['delegated']:>6}/{ops['total']:<7} {ops['partitions']:>6} {lat['p50']:>8.3f} "
              f"{lat['p90']:>8.3f} {lat['p50'] / base:>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
