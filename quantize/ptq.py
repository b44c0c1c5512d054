"""Post-training int8 of a checkpoint, full-integer, optionally keeping some layers in float."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from lhp_tf.converters.deploy import DEFAULT_TARGET as DEPLOY_TARGET


def post_training_int8(checkpoint: str | os.PathLike[str], output: str | os.PathLike[str],
                       recipe: str | os.PathLike[str] | None = None, overrides: Sequence[str] = (),
                       calib_samples: int | None = None, keep_float: int = 0,
                       denylist: Sequence[str] = (), debug_samples: int = 32) -> tuple[Path, list[str]]:
    """Write the int8 .tflite; returns its path and the layers kept in float."""
    from lhp_tf.converters.export import export_checkpoint
    from lhp_tf.converters.inference_model import inference_model, load_checkpoint
    from lhp_tf.converters.run_folder import find_recipe
    from lhp_tf.converters.tflite import representative_dataset, write_bytes

    from .calibration import calibration_images
    from .selective import selective_int8

    if not keep_float and not denylist:
        out = export_checkpoint(checkpoint, output, to="tflite", quant="int8", recipe=recipe,
                                overrides=overrides, calib_samples=calib_samples)
        return out, []
    rec = find_recipe(checkpoint, recipe, overrides)
    trained, spec = load_checkpoint(checkpoint, rec)
    model = inference_model(trained, spec, where=str(checkpoint), target=DEPLOY_TARGET, quant="int8")
    calib = calibration_images(rec, calib_samples)
    data, kept, _ = selective_int8(model, spec, rec, representative_dataset(calib), calib[:debug_samples],
                                   keep_float, denylist)
    write_bytes(output, data)
    return Path(output), kept
