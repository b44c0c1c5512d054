"""``lhp data``: check a dataset root, synthesise faces, export an evaluation bundle, show the pipeline."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from lhp_tf.errors import LhpError
from lhp_tf.kinds import DATASET_FORMATS


def _recipe(args: argparse.Namespace):
    from lhp_tf.config import load_recipe

    return load_recipe(args.recipe, args.set or [])


def _cmd_check(args: argparse.Namespace) -> int:
    from lhp_tf.data.check import check_root, format_report

    root = Path(args.root)
    if not root.is_dir():
        raise LhpError(f"{root}: --root is not a folder")
    report = check_root(args.format, root, Path(args.csv_dir) if args.csv_dir else None, decode=not args.no_decode)
    if args.json:
        doc = {"splits": report["splits"], **({"error": report["error"]} if report.get("error") else {})}
        print(json.dumps(doc, indent=2))
    else:
        print(format_report(report))
    return 1 if report.get("error") or any(r["problems"] for r in report["splits"].values()) else 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from lhp_tf.data.synth import generate

    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise LhpError(f"{out}: output folder exists and is not empty")
    t = time.perf_counter()
    counts = generate(args.format, out, args.num, args.seed, args.image_size, workers=args.workers)
    dt = time.perf_counter() - t
    print(f"wrote {args.num} synthetic {args.format} faces to {out} in {dt:.1f} s ({args.num / dt:.0f} images/s)")
    for k, v in counts.items():
        print(f"  {k}: {v}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from lhp_tf.data.bundle import build_bundle, write_bundle

    recipe = _recipe(args)
    arrays = build_bundle(recipe, args.split, args.max_samples)
    write_bundle(Path(args.output), arrays)
    subsets = ", ".join(f"{n}={int(m.sum())}" for n, m in zip(arrays["subset_names"], arrays["subset_masks"], strict=True))
    print(f"wrote {len(arrays['images'])} {recipe.data.format} {args.split} samples to {args.output}"
          + (f" (subsets: {subsets})" if subsets else ""))
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from lhp_tf.data.show import show

    out = show(_recipe(args), args.split, Path(args.output), args.augment, args.num, args.seed)
    print(f"wrote {out}")
    return 0


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="lhp data", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("check", help="validate a dataset root: samples and problems per split")
    p.add_argument("--format", choices=DATASET_FORMATS, required=True)
    p.add_argument("--root", required=True, help="dataset folder (300W tree, or WFLW_annotations + WFLW_images)")
    p.add_argument("--csv-dir", help="300W only: folder of HRNet-Facial face_landmarks_300w_*.csv lists")
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.add_argument("--no-decode", action="store_true", help="skip decoding images (existence is still checked)")
    p.set_defaults(fn=_cmd_check)

    p = sub.add_parser("synth", help="write synthetic faces in the real 300W / WFLW layout")
    p.add_argument("--format", choices=DATASET_FORMATS, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--num", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=None, help="drawing processes (default: all cores)")
    p.set_defaults(fn=_cmd_synth)

    for name, fn, help_ in (("export-eval", _cmd_export, "write the evaluation bundle (.npz) of a split"),
                            ("show", _cmd_show, "draw pipeline outputs with landmarks and heatmaps")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("recipe")
        p.add_argument("--split", required=True)
        p.add_argument("-o", "--output", required=True)
        p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a recipe key")
        if name == "export-eval":
            p.add_argument("--max-samples", type=int, default=None)
        else:
            p.add_argument("--augment", action="store_true", help="apply training augmentation")
            p.add_argument("--num", type=int, default=16)
            p.add_argument("--seed", type=int, default=0)
        p.set_defaults(fn=fn)

    args = parser.parse_args(list(argv))
    return int(args.fn(args) or 0)


if __name__ == "__main__":
    from lhp_tf.errors import run_main

    sys.exit(run_main(main, prog="lhp data"))
