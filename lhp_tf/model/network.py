"""Build, finish and load Lite-HRNet / Lite-HRNet Plus Keras models.

Layout: stem (stride 4) -> for each stage: transition (adds a branch at half resolution),
then ``modules[s]`` times (``blocks[s]`` CCW blocks, one fusion block) -> optional iterative
head -> output head. Layer names start with their block type (stem, transition, ccw, fusion,
head): the FLOPs breakdown relies on it, and weights move between two builds of one
architecture by layer name (:mod:`lhp_tf.model.weights`).

A trained network is a :class:`LandmarkNet`: the functional graph of its ``ArchSpec`` that also
carries the whole :class:`lhp_tf.spec.ModelSpec` (codec, landmark scheme, crop rule) in its
Keras config, the way keras-hub's backbones return their constructor arguments from
``get_config``. A ``.keras`` checkpoint therefore says what it is; export, evaluation and
inference read the spec from it rather than from a recipe found beside it.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
import zlib
from typing import Any

from lhp_tf.config import ModelConfig
from lhp_tf.errors import LhpError
from lhp_tf.model.ccw import ccw_block
from lhp_tf.model.fusion import fusion_block
from lhp_tf.model.heads import iterative_head, output_head
from lhp_tf.model.kbackend import keras, register_serializable
from lhp_tf.model.presets import BLOCK_TYPES, ArchSpec, resolve
from lhp_tf.model.stem import stem
from lhp_tf.model.transition import transition

__all__ = ["BLOCK_TYPES", "LandmarkNet", "build_from_spec", "build_model", "load_model", "spec_of",
           "with_activation", "with_heatmap_activation"]


def _graph(spec: ArchSpec, batch_size: int | None) -> tuple[Any, Any]:
    """Input and output tensors of the network for ``spec``."""
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
    return inputs, output_head(ys, spec.head, spec.num_landmarks)


def _model_name(spec: ArchSpec) -> str:
    return spec.name.replace("-", "_")


def build_from_spec(spec: ArchSpec, batch_size: int | None = None) -> Any:
    """A plain functional model for ``spec``: (H, W, 3) in [0, 1] -> (H/4, W/4, K) logits."""
    inputs, out = _graph(spec, batch_size)
    return keras.Model(inputs, out, name=_model_name(spec))


@register_serializable
class LandmarkNet(keras.Model):
    """The network of a :class:`lhp_tf.spec.ModelSpec`, carrying that spec in its config.

    ``LandmarkNet(spec)`` builds the functional graph of ``spec.arch``; ``model.spec`` is the
    spec; saving to ``.keras`` stores it and loading rebuilds the same graph from it.
    """

    def __init__(self, spec: Any, batch_size: int | None = None, **kwargs: Any) -> None:
        from lhp_tf.spec import ModelSpec

        spec = spec if isinstance(spec, ModelSpec) else ModelSpec.from_dict(spec, "checkpoint spec")
        inputs, out = _graph(spec.arch, batch_size)
        kwargs.setdefault("name", _model_name(spec.arch))
        super().__init__(inputs=inputs, outputs=out, **kwargs)
        self.spec = spec
        self.batch_size = batch_size

    def get_config(self) -> dict[str, Any]:
        return {"spec": self.spec.to_dict(), "batch_size": self.batch_size, "name": self.name,
                "trainable": self.trainable}

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> LandmarkNet:
        return cls(**config)


def spec_of(model: Any) -> Any:
    """The ModelSpec a model carries, or None for a plain functional model (older checkpoints)."""
    return getattr(model, "spec", None)


def build_model(cfg: ModelConfig, num_landmarks: int, batch_size: int | None = None) -> Any:
    """Contract entry point: resolve ``cfg`` over its preset and build the logits model."""
    return build_from_spec(resolve(cfg, num_landmarks), batch_size=batch_size)


def with_activation(model: Any, activation: str) -> Any:
    """``model`` followed by its codec's heatmap activation (``sigmoid``, or ``none``: unchanged)."""
    if activation == "none":
        return model
    if activation != "sigmoid":
        raise LhpError(f"heatmap activation {activation!r}: expected 'sigmoid' or 'none'")
    out = keras.layers.Activation("sigmoid", name="head_sigmoid")(model.outputs[0])
    return keras.Model(model.inputs[0], out, name=model.name)


def with_heatmap_activation(model: Any, loss: str) -> Any:
    """Append a sigmoid for BCE-trained models so exported heatmaps lie in [0, 1]; MSE: unchanged."""
    from lhp_tf.kinds import ACTIVATION

    if loss not in ACTIVATION:
        raise LhpError(f"train.loss: expected one of {', '.join(ACTIVATION)}, got {loss!r}")
    return with_activation(model, ACTIVATION[loss])


def load_model(path: str | os.PathLike[str], compile: bool = False) -> Any:
    """Load a ``.keras`` file saved from :func:`build_model` (custom layers are registered)."""
    import lhp_tf.model.ops  # noqa: F401  (registers the custom layers)

    if not os.path.isfile(path):
        raise LhpError(f"{path}: model file not found")
    if str(path).endswith(".keras"):
        _check_keras_archive(path)
    try:
        if compile or not str(path).endswith(".keras"):
            return keras.models.load_model(path, compile=compile)
        return _load_keras_archive(path)
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
        raise LhpError(f"{path}: cannot load the model: {exc}") from None


def _load_keras_archive(path: str | os.PathLike[str]) -> Any:
    """A ``.keras`` file (uncompiled) in Keras's own two public steps: the model from
    ``config.json``, then its weights from a real HDF5 file (h5py reads a file natively, a
    memory buffer through Python). Same model and weights as
    ``keras.models.load_model(compile=False)``."""
    with zipfile.ZipFile(path) as z:
        config = json.loads(z.read("config.json"))
        weights = z.read("model.weights.h5")
    config["compile_config"] = None  # as load_model(compile=False): no loss or metric to resolve
    model = keras.saving.deserialize_keras_object(config)
    with tempfile.TemporaryDirectory(prefix="lhp_load_") as tmp:
        file = os.path.join(tmp, "model.weights.h5")
        with open(file, "wb") as f:
            f.write(weights)
        model.load_weights(file)
    return model


def load_trained(path: str | os.PathLike[str], recipe: Any = None) -> tuple[Any, Any]:
    """A trained checkpoint and its :class:`lhp_tf.spec.ModelSpec`: ``(model, spec)``.

    The spec comes from the checkpoint. ``recipe`` (the one beside it, or one the user names)
    only stands in for checkpoints saved before models carried their spec. Its data will be fed
    to the model (evaluation, calibration, QAT), so it must describe the same landmarks and
    crop them the same way (input size, box scale); anything else in it is the data's business.
    """
    from lhp_tf.spec import ModelSpec

    model = load_model(path)
    spec = spec_of(model)
    if spec is None:
        if recipe is None:
            raise LhpError(f"{path}: this checkpoint carries no model spec (saved by an older lhp-tf); "
                           "pass the recipe it was trained with (--recipe)")
        return model, ModelSpec.from_recipe(recipe)
    if recipe is not None and recipe.num_landmarks != spec.num_landmarks:
        raise LhpError(f"{path}: the checkpoint predicts {spec.num_landmarks} landmarks but the recipe "
                       f"{recipe.source or recipe.name} describes {recipe.num_landmarks} "
                       f"({recipe.data.format}): wrong checkpoint or wrong recipe")
    if recipe is not None:
        theirs = ModelSpec.from_recipe(recipe)
        for field, mine, other in (("model.input_size", spec.input_size, theirs.input_size),
                                   ("data.box_scale", spec.box_scale, theirs.box_scale)):
            if mine != other:
                raise LhpError(f"{path}: the checkpoint was trained with {field} {mine}, the recipe "
                               f"{recipe.source or recipe.name} crops with {other}: its data would not "
                               f"match the model (--set {field}=... or the run's own recipe)")
    return model, spec


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
