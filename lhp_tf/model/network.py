"""Build, finish and load Lite-HRNet / Lite-HRNet Plus Keras models.

Layout: stem (stride 4) -> for each stage: transition (adds a branch at half resolution),
then ``modules[s]`` times (``blocks[s]`` CCW blocks, one fusion block) -> optional iterative
head -> output head. Layer names start with their block type (stem, transition, ccw, fusion,
head): the FLOPs breakdown and the QAT weight transfer rely on it.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from typing import Any

from lhp_tf.config import ModelConfig
from lhp_tf.errors import LhpError
from lhp_tf.model.ccw import ccw_block
from lhp_tf.model.fusion import fusion_block
from lhp_tf.model.heads import iterative_head, output_head
from lhp_tf.model.kbackend import keras
from lhp_tf.model.presets import BLOCK_TYPES, ArchSpec, resolve
from lhp_tf.model.stem import stem
from lhp_tf.model.transition import transition

__all__ = ["BLOCK_TYPES", "build_from_spec", "build_model", "load_model", "with_heatmap_activation"]


def build_from_spec(spec: ArchSpec, batch_size: int | None = None) -> Any:
    """The Keras model for a resolved spec: (H, W, 3) in [0, 1] -> (H/4, W/4, K) logits."""
    h, w = spec.input_size
    inputs = keras.Input((h, w, 3), batch_size=batch_size, name="image", dtype="float32")
    ys = [stem(inputs, spec.stem_channels)]
    for s in range(spec.num_stages):
        xs = transition(ys, spec.channels[: s + 2], f"transition{s}")
        for m in range(spec.modules[s]):
            for b in range(spec.blocks[s]):
                xs = ccw_block(xs, spec.reduce_ratio, f"ccw_s{s}m{m}b{b}")
            xs = fusion_block(xs, spec.fusion, f"fusion_s{s}m{m}", scaf_ratio=spec.scaf_ratio,
                              groups=spec.fusion_groups, bottleneck_ratio=spec.bottleneck_ratio,
                              scaf_resize_first=spec.scaf_resize_first)
        ys = xs
    if spec.iterative_head:
        ys = iterative_head(ys)
    out = output_head(ys, spec.head, spec.num_landmarks)
    return keras.Model(inputs, out, name=spec.name.replace("-", "_"))


def build_model(cfg: ModelConfig, num_landmarks: int, batch_size: int | None = None) -> Any:
    """Contract entry point: resolve ``cfg`` over its preset and build the logits model."""
    return build_from_spec(resolve(cfg, num_landmarks), batch_size=batch_size)


def with_heatmap_activation(model: Any, loss: str) -> Any:
    """Append a sigmoid for BCE-trained models so exported heatmaps lie in [0, 1]; MSE: unchanged."""
    if loss == "mse":
        return model
    if loss != "bce":
        raise LhpError(f"train.loss: expected 'bce' or 'mse', got {loss!r}")
    out = keras.layers.Activation("sigmoid", name="head_sigmoid")(model.outputs[0])
    return keras.Model(model.inputs[0], out, name=model.name)


def load_model(path: str | os.PathLike[str], compile: bool = False) -> Any:
    """Load a ``.keras`` file saved from :func:`build_model` (custom layers are registered)."""
    import lhp_tf.model.ops  # noqa: F401  (registers the custom layers)

    if not os.path.isfile(path):
        raise LhpError(f"{path}: model file not found")
    if str(path).endswith(".keras"):
        _check_keras_archive(path)
    try:
        return keras.models.load_model(path, compile=compile)
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
        raise LhpError(f"{path}: cannot load the model: {exc}") from None


def _check_keras_archive(path: str | os.PathLike[str]) -> None:
    """A ``.keras`` file is a zip; Keras reports a truncated one as "File not found"."""
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()  # reads every member and checks its CRC
            names = z.namelist()
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error, ValueError) as exc:
        raise LhpError(f"{path}: corrupt .keras file, truncated or not a zip archive "
                       f"({type(exc).__name__}: {exc})") from None
    if bad is not None:
        raise LhpError(f"{path}: corrupt .keras file: member {bad!r} fails its CRC check")
    if "config.json" not in names:
        raise LhpError(f"{path}: corrupt .keras file: no config.json in the archive (has {', '.join(names[:5])})")
