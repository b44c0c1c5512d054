"""Checkpoint -> deployable file in one call: what ``lhp convert`` does.

The checkpoint says what it is (its :class:`lhp_tf.spec.ModelSpec`): the network is brought to
batch 1 in heatmap space (:mod:`lhp_tf.converters.inference_model`: the TFLite deploy graph
re-calls the trained layers; other formats and spec-less checkpoints are rebuilt from the spec
with weights moved by layer name), and the .tflite metadata carries the spec whole. The recipe beside the checkpoint (or ``--recipe``) is read
only for what the checkpoint cannot hold: the model's name and recipe hash for the metadata,
and the training images that calibrate int8/int16x8 (``lhp_tf.quantize.calibration``). A float
export needs no recipe at all; an older checkpoint without a spec needs its recipe.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lhp_tf.quantize.calibration import calibration_images, one_split_read

from lhp_tf.errors import LhpError
from lhp_tf.kinds import QUANT_MODES

from .deploy import DEFAULT_TARGET
from .inference_model import inference_model, load_checkpoint
from .run_folder import find_recipe
from .tflite import check_int16, convert_tflite, write_bytes

FORMATS = ("tflite", "onnx", "saved_model")


def export_checkpoint(checkpoint: str | os.PathLike[str], output: str | os.PathLike[str], to: str = "tflite",
                      quant: str | None = None, recipe: str | os.PathLike[str] | None = None,
                      overrides: Sequence[str] = (), calib_samples: int | None = None,
                      opset: int | None = None, dynamic_batch: bool = False, target: str = DEFAULT_TARGET,
                      int16: Sequence[str] = (), extra_metadata: dict[str, Any] | None = None) -> Path:
    """Convert ``checkpoint`` to ``output``; ``quant`` defaults to the recipe's ``export.quant``
    (float when no recipe is at hand). ``target`` picks the TFLite deploy graph's form
    (:mod:`lhp_tf.converters.deploy`: ``xnnpack`` for CPUs, ``npu`` for Ethos-U class NPUs);
    ``int16`` selects int8 ops kept in int16 (:func:`lhp_tf.converters.tflite.convert_tflite`);
    ``extra_metadata`` is added to a .tflite's metadata (e.g. where QAT weights came from)."""
    if to not in FORMATS:
        raise LhpError(f"--to {to!r}: expected one of {', '.join(FORMATS)}")
    if to != "tflite" and quant not in (None, "float"):
        raise LhpError(f"--quant {quant}: only --to tflite is quantised; {to} exports are float32")
    if int16 and (to != "tflite" or quant not in (None, "int8")):
        raise LhpError(f"--int16: mixed precision is for --to tflite --quant int8, not --to {to} --quant {quant}")
    rec = find_recipe(checkpoint, recipe, overrides, required=False)
    quant = (rec.export.quant if rec is not None else "float") if quant is None else quant
    if to == "tflite" and quant not in QUANT_MODES:
        raise LhpError(f"--quant {quant!r}: expected one of {', '.join(QUANT_MODES)}")
    if int16 and quant != "int8":
        raise LhpError(f"--int16: mixed precision is for --quant int8; the recipe's export.quant is {quant}")
    check_int16(int16, rec)
    if to == "tflite" and dynamic_batch:
        raise LhpError("--dynamic-batch: TFLite exports use batch 1 (a dynamic batch breaks XNNPACK)")
    calibrating = to == "tflite" and quant != "float"
    if calibrating and rec is None:
        raise LhpError(f"{checkpoint}: --quant {quant} calibrates on the training images, and no "
                       f"recipe names them (none beside the checkpoint): pass --recipe RECIPE")
    trained, spec = load_checkpoint(checkpoint, rec)
    model = inference_model(trained, spec, batch_size=None if dynamic_batch else 1, where=str(checkpoint),
                            target=target if to == "tflite" else None, quant=quant)
    out = Path(output)
    if to == "saved_model":
        from .saved_model import export_saved_model

        return export_saved_model(model, out)
    if to == "onnx":
        from .onnx import DEFAULT_OPSET, convert_onnx

        write_bytes(out, convert_onnx(model, opset or DEFAULT_OPSET))
        return out
    with one_split_read():  # the calibration images and ``auto``'s probe faces: one split
        images = calibration_images(rec, calib_samples) if calibrating else None
        data = convert_tflite(model, spec, quant, images, rec, int16=int16, extra_metadata=extra_metadata,
                              trained=trained, target=target, checkpoint=checkpoint)
    write_bytes(out, data)
    return out
