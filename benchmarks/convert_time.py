"""Wall time of ``lhp convert`` for lhp-small (int8 and float), as a user runs it.

    python benchmarks/convert_time.py [--checkpoint CKPT] [--quant int8 float] [--rounds 3] [--target amx]

Each conversion runs the ``lhp`` command in a fresh process (imports, recipe, calibration
images, conversion, metadata, atomic write: everything a user waits for). Without
``--checkpoint`` a freshly built, untrained lhp-small run folder is used (the conversion does
the same work whatever the weights are). With ``export.calibration: learned`` (the default)
the ranges are learned first, once, as ``lhp train`` does at the end of a run (``lhp quantize
ranges``; its time is printed, not part of the conversion's); a conversion that learns them
itself is a failure here. Issue-12 target: int8 in <= 30 s on the 2-core CI
machine, the median of ``--rounds`` runs (kinds interleaved). Wall time depends on the
machine's load: run it when nothing else does.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lhp_tf.kinds import DEPLOY_TARGETS

TARGET_S = {"int8": 30.0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--quant", nargs="+", default=["int8", "float"])
    p.add_argument("--rounds", type=int, default=3, help="conversions per kind; the median is compared "
                   "(wall time on a shared machine varies by +-10%%)")
    p.add_argument("--target", choices=DEPLOY_TARGETS, default=None, help="lhp convert --target (default: its own)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="recipe override passed to lhp convert, e.g. export.calibration=auto for a run "
                        "whose recipe.yaml pins another")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be >= 1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    failed = False
    with tempfile.TemporaryDirectory(prefix="lhp_convert_time_") as tmp:
        from untrained import untrained_run  # benchmarks/ is sys.path[0] when run as a script

        ckpt = Path(args.checkpoint) if args.checkpoint else untrained_run(Path(tmp))
        if not args.checkpoint:
            # first conversion materialises the synthetic calibration images: not timed
            subprocess.run([sys.executable, "-m", "lhp_tf.cli", "convert", str(ckpt), "--quant", "float",
                            "-o", str(Path(tmp) / "warm.tflite")], check=True, capture_output=True)
        from lhp_tf.converters.run_folder import find_recipe
        from lhp_tf.quantize.learned_ranges import DEFAULT_TARGET, learns, ranges_path

        if "int8" in args.quant and learns(find_recipe(ckpt, overrides=args.overrides)):
            # what `lhp train` does once at the end of a run (learned ranges, saved beside the
            # checkpoint): kept if already there for these weights and settings
            cmd = [sys.executable, "-m", "lhp_tf.cli", "quantize", "ranges", str(ckpt)]
            cmd += [f"--set={item}" for item in args.overrides]
            cmd += ["--target", args.target] if args.target else []
            start = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                print(f"lhp quantize ranges failed: {proc.stderr.strip()[-800:]}")
                return 1
            print(f"lhp quantize ranges (once per checkpoint; lhp train does it): {time.perf_counter() - start:.1f} s "
                  f"wall: {proc.stdout.strip()}", flush=True)
        outputs = {quant: Path(tmp) / f"lhp-small_{quant}.tflite" for quant in args.quant}
        walls: dict[str, list[float]] = {quant: [] for quant in args.quant}
        for _ in range(args.rounds):
            for quant, out in outputs.items():  # interleaved: a slow spell of the machine hits every kind
                cmd = [sys.executable, "-m", "lhp_tf.cli", "convert", str(ckpt), "--quant", quant, "-o", str(out)]
                cmd += [f"--set={item}" for item in args.overrides]
                cmd += ["--target", args.target] if args.target else []
                start = time.perf_counter()
                proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
                walls[quant].append(time.perf_counter() - start)
                if proc.returncode != 0:
                    print(f"lhp convert --quant {quant} failed: {proc.stderr.strip()[-800:]}")
                    return 1
                if "learning int8 ranges" in proc.stderr:
                    print(f"lhp convert --quant {quant} learned its ranges itself: "
                          f"{ranges_path(ckpt, args.target or DEFAULT_TARGET)} was not used")
                    return 1
        for quant, times in walls.items():
            median = float(np.median(times))
            target = TARGET_S.get(quant)
            verdict = ""
            if target is not None:
                ok = median <= target
                failed |= not ok
                verdict = f" (target: median <= {target:.0f} s: {'OK' if ok else 'MISSED'})"
            rounds = ", ".join(f"{t:.1f}" for t in times)
            print(f"lhp convert lhp-small --quant {quant}{' --target ' + args.target if args.target else ''}: median {median:.1f} s wall over {len(times)} runs "
                  f"({rounds}), {outputs[quant].stat().st_size / 1e3:.0f} kB{verdict}",
                  flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
