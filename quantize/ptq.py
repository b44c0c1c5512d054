"""Post-training int8 of a checkpoint, full-integer, optionally with int16 ops (mixed precision)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path


def post_training_int8(checkpoint: str | os.PathLike[str], output: str | os.PathLike[str],
                       recipe: str | os.PathLike[str] | None = None, overrides: Sequence[str] = (),
                       calib_samples: int | None = None, int16: Sequence[str] = ()) -> tuple[Path, list[str]]:
    """Write the int8 .tflite; returns its path and the ops that compute in int16."""
    from lhp_tf.converters.export import export_checkpoint

    from lhp_tf.tflite_metadata import read_metadata

    out = export_checkpoint(checkpoint, output, to="tflite", quant="int8", recipe=recipe, overrides=overrides,
                            calib_samples=calib_samples, int16=int16)
    return out, list(read_metadata(out).get("int16_ops", []))
