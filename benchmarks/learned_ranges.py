"""Held-out int8 drift of learned ranges (``export.calibration: learned``) against the
converter's other calibrations, on one trained run.

    python benchmarks/learned_ranges.py RUN [--steps 400] [--against mse,auto] [--force]

1. ``lhp quantize ranges RUN/best.keras`` (``lhp_tf.quantize.learned_ranges``): the int8
   deploy graph's ranges learned end to end from the ``mse`` table and saved beside the
   checkpoint (``RUN/best.ranges.json``; kept when already learned under the same key, unless
   ``--force``); its learning time and simulated heatmap error are printed.
2. ``lhp quantize drift RUN/best.keras --data RUN/int8_drift/full.npz --set
   export.calibration=C`` for ``learned`` and each of ``--against``: float and int8 NME on the
   held-out faces (made with ``lhp data export-eval`` if missing), which neither the
   calibration nor the learning sees. The learned conversion uses the saved file.
3. XNNPACK delegation of the learned int8 file.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path


def lhp(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "lhp_tf.cli", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"lhp {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return proc.stdout


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="run folder holding best.keras and recipe.yaml")
    p.add_argument("--steps", type=int, default=None, help="export.learned_steps (default: the recipe's)")
    p.add_argument("--against", default="mse,auto", help="other calibrations to score (comma-separated)")
    p.add_argument("--force", action="store_true", help="learn again even if RUN/best.ranges.json is up to date")
    args = p.parse_args()
    ckpt = args.run / "best.keras"
    bundle = args.run / "int8_drift" / "full.npz"
    if not bundle.is_file():
        lhp("data", "export-eval", str(args.run / "recipe.yaml"), "--split", "full", "-o", str(bundle))
    steps = ["--set", f"export.learned_steps={args.steps}"] if args.steps else []
    print(lhp("quantize", "ranges", str(ckpt), *steps, *(["--force"] if args.force else [])).strip())
    from lhp_tf.runtime import op_delegation

    for calibration in ["learned", *[c for c in args.against.split(",") if c]]:
        with tempfile.TemporaryDirectory() as tmp:
            out = lhp("quantize", "drift", str(ckpt), "--data", str(bundle), "--set",
                      f"export.calibration={calibration}", *steps, "--save-dir", tmp)
            nme = next(line for line in out.splitlines() if line.startswith("NME float"))
            chosen = re.search(r"\((\w+) chosen\)", out)
            ops = op_delegation(Path(tmp) / "int8.tflite")
        print(f"{calibration:>8}: {nme}{f' ({chosen.group(1)} chosen)' if chosen else ''}; "
              f"{ops['delegated']} of {ops['total']} nodes on XNNPACK")


if __name__ == "__main__":
    main()
