"""``lhp convert``: a checkpoint to TFLite (float/int8/int16x8), ONNX or a SavedModel."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from lhp_tf.kinds import DEPLOY_TARGETS as TARGETS
from lhp_tf.kinds import QUANT_MODES

from .deploy import DEFAULT_TARGET
from .export import FORMATS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lhp convert",
        description="Convert a trained checkpoint (.keras) for deployment. The checkpoint carries its "
                    "model spec; the recipe (recipe.yaml in its run folder, or --recipe) names the "
                    "calibration images for int8 and int16x8.")
    p.add_argument("checkpoint", help="trained model, e.g. runs/x/best.keras")
    p.add_argument("--to", choices=FORMATS, default="tflite")
    p.add_argument("--quant", choices=QUANT_MODES, default=None,
                   help="TFLite quantisation (default: the recipe's export.quant; float without a recipe)")
    p.add_argument("--target", choices=TARGETS, default=DEFAULT_TARGET,
                   help="deploy graph for CPUs with XNNPACK (default), x86 CPUs whose XNNPACK runs int8 on "
                        "AMX ('amx': fewer, wider int8 GEMMs, more MACs; slower on CPUs without AMX) or "
                        "Ethos-U class NPUs (every op in a form Vela places on the NPU); recorded in the metadata")
    p.add_argument("--int16", default="", metavar="SELECTOR,...",
                   help="int8 ops that keep int16 activations (int8 weights): 'auto' (the fewest that bring "
                        "drift within budget), an op type (LOGISTIC), TYPE@REGEX or @REGEX on tensor names; "
                        "default none: XNNPACK runs no int16 op")
    p.add_argument("-o", "--output", required=True, help="output file (a folder for saved_model)")
    p.add_argument("--recipe", default=None, help="recipe (name or file) whose training images calibrate "
                                                  "int8; needed for checkpoints saved before models carried a spec")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="recipe override, e.g. --set data.cache_dir=/data/cache")
    p.add_argument("--calib-samples", type=int, default=None,
                   help="int8 calibration images from the training split (default: export.calib_samples)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17, at least 13)")
    p.add_argument("--dynamic-batch", action="store_true",
                   help="ONNX/SavedModel with a dynamic batch dimension (TFLite is always batch 1)")
    return p


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from .export import export_checkpoint

    out = export_checkpoint(args.checkpoint, args.output, to=args.to, quant=args.quant, recipe=args.recipe,
                            overrides=args.overrides, calib_samples=args.calib_samples, opset=args.opset,
                            dynamic_batch=args.dynamic_batch, target=args.target,
                            int16=[x.strip() for x in args.int16.split(",") if x.strip()])
    print(f"wrote {out}")
    return 0
