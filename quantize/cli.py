"""``lhp quantize``: post-training int8 (optionally mixed with int16 ops), drift report, QAT.

    lhp quantize ptq   CKPT -o model.tflite [--int16 auto | --int16 LOGISTIC,...]
    lhp quantize drift CKPT --data EVAL.npz [--int8 M.tflite | --int16 ...] [--json]
    lhp quantize qat   CKPT --epochs N -o model.tflite [--graph deploy|training] [--drop SHARE] [--ranges calibrated|fake-quant] [--int16 ...]
    lhp quantize ranges CKPT [--target xnnpack|npu|amx] [--force]   (learned int8 ranges -> CKPT_STEM.ranges.json)
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence

from lhp_tf.kinds import DEPLOY_TARGETS, QAT_GRAPHS, QAT_OPTIMIZER, QAT_RANGES

from .deploy_qat import DROP


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="trained model, e.g. runs/x/best.keras (recipe.yaml beside it)")
    p.add_argument("--recipe", default=None, help="recipe the checkpoint was trained with")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="recipe override")
    p.add_argument("--calib-samples", type=int, default=None,
                   help="calibration images from the training split (default: export.calib_samples)")


def _mixed(p: argparse.ArgumentParser) -> None:
    p.add_argument("--int16", default="", metavar="SELECTOR,...",
                   help="ops that keep int16 activations (int8 weights), the graph staying integer-only: "
                        "'auto' (the fewest network modules, most helpful first, that bring drift within budget), an op "
                        "type (LOGISTIC), TYPE@REGEX or @REGEX on output tensor names")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lhp quantize", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True)

    p = sub.add_parser("ptq", help="post-training full-integer int8, optionally with int16 ops")
    _common(p)
    _mixed(p)
    p.add_argument("-o", "--output", required=True)

    p = sub.add_parser("drift", help="float vs int8 NME on an evaluation bundle + worst int8 ops")
    _common(p)
    _mixed(p)
    p.add_argument("--data", required=True, help="evaluation bundle (.npz from 'lhp data export-eval')")
    p.add_argument("--int8", default=None, help="measure this int8 .tflite (e.g. from QAT) instead of PTQ")
    p.add_argument("--debug-samples", type=int, default=32, help="calibration images the per-op ranking samples")
    p.add_argument("--top", type=int, default=10, help="worst ops to list")
    p.add_argument("--save-dir", default=None, help="keep the float/int8 .tflite files compared here")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--report", default=None, metavar="PATH", help="also write the JSON report to PATH")
    p.add_argument("--check", action="store_true", help="exit 1 when the drift is over budget")

    p = sub.add_parser("ranges", help="learn the int8 ranges of export.calibration 'learned' and save them "
                                      "beside the checkpoint (lhp convert then takes them)")
    _common(p)
    p.add_argument("--target", choices=DEPLOY_TARGETS, default=None,
                   help="the deploy graph 'lhp convert --target' will quantise (default xnnpack)")
    p.add_argument("--force", action="store_true", help="learn again even if the saved ranges are up to date")

    p = sub.add_parser("qat", help="quantisation-aware fine-tuning -> int8 .tflite")
    _common(p)
    _mixed(p)
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--lr", type=float, default=None, help="fine-tuning rate (default: the rate the recipe's schedule ends at)")
    p.add_argument("--steps-per-epoch", type=int, default=None, help="cap the steps of each epoch")
    p.add_argument("--max-samples", type=int, default=None, help="train on the first N training samples only")
    p.add_argument("--ranges", choices=QAT_RANGES, default=QAT_RANGES[0],
                   help="int8 ranges: 'calibrated' (default) converts the fine-tuned weights like "
                        "'lhp convert --quant int8' (deploy graph, --int16, --target; the ranges QAT trained "
                        "under, or auto calibration after --graph training); 'fake-quant' takes them from "
                        "tfmot's fake-quant nodes (--graph training)")
    p.add_argument("--target", choices=DEPLOY_TARGETS, default=None,
                   help="deploy graph form for --ranges calibrated (default xnnpack)")
    p.add_argument("--optimizer", choices=QAT_OPTIMIZER, default=QAT_OPTIMIZER[0],
                   help="'continue' (default) the run's optimizer moments from state.npz beside the "
                        "checkpoint, as 'lhp train --resume' does; 'fresh' starts them at zero (the data "
                        "order continues from the run's epoch either way)")
    p.add_argument("--graph", choices=QAT_GRAPHS, default=QAT_GRAPHS[0],
                   help="the graph QAT fake-quantises: 'deploy' (default: the int8 deploy graph under the "
                        "checkpoint's learned ranges, Keras 3, in this process; exports with those ranges) or "
                        "'training' (tfmot, a tf_keras child)")
    p.add_argument("--drop", type=float, default=None, metavar="SHARE",
                   help=f"--graph deploy: the share of each fake-quant tensor's elements left unrounded at "
                        f"every step (QDrop; default {DROP}, 0 rounds them all)")
    p.add_argument("--save-checkpoint", default=None, metavar="PATH.keras",
                   help="also keep the fine-tuned float model (--ranges calibrated), to convert again later")
    return parser


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    int16 = [d.strip() for d in getattr(args, "int16", "").split(",") if d.strip()]
    if args.action == "ptq":
        from .ptq import post_training_int8

        out, kept = post_training_int8(args.checkpoint, args.output, recipe=args.recipe, overrides=args.overrides,
                                       calib_samples=args.calib_samples, int16=int16)
        print(f"wrote {out}" + (f" ({len(kept)} int16 ops: {', '.join(kept)})" if kept else ""))
        return 0
    if args.action == "drift":
        from .drift import drift_report, format_drift

        report = drift_report(args.checkpoint, args.data, recipe=args.recipe, overrides=args.overrides,
                              calib_samples=args.calib_samples, int8_model=args.int8,
                              int16=int16, debug_samples=args.debug_samples, top=args.top, save_dir=args.save_dir)
        if args.report:
            from lhp_tf.checkpoint import atomic_write_text

            atomic_write_text(args.report, json.dumps(report, indent=2))
        print(json.dumps(report, indent=2) if args.json else format_drift(report))
        return 1 if args.check and not report["within_tolerance"] else 0
    if args.action == "ranges":
        from .learned_ranges import learn_for_checkpoint

        path, learned, fresh = learn_for_checkpoint(args.checkpoint, args.recipe, args.overrides, args.target,
                                                    args.calib_samples, args.force)
        stats = learned.stats
        print(f"{'wrote' if fresh else 'up to date:'} {path} ({len(learned.ranges)} ranges, {learned.key.steps} steps, "
              f"simulated heatmap MSE {stats.get('loss_first', float('nan')):.3g} -> "
              f"{stats.get('loss_last', float('nan')):.3g}, {stats.get('seconds', 0)} s)")
        return 0
    from .qat import quantization_aware_training

    out = quantization_aware_training(args.checkpoint, args.output, epochs=args.epochs, recipe=args.recipe,
                                      overrides=args.overrides, lr=args.lr, steps_per_epoch=args.steps_per_epoch,
                                      max_samples=args.max_samples, calib_samples=args.calib_samples,
                                      ranges=args.ranges, target=args.target, int16=int16,
                                      save_checkpoint=args.save_checkpoint, optimizer=args.optimizer,
                                      graph=args.graph, drop=args.drop)
    print(f"wrote {out}")
    return 0
