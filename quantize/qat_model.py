"""The lhp-tf network prepared for quantisation-aware training with tensorflow-model-optimization.

Runs only under ``TF_USE_LEGACY_KERAS=1`` (tfmot 0.8.1 refuses Keras 3 models): the network is
built by the same ``build_model`` as everywhere else, which then uses tf_keras through
``lhp_tf.model.kbackend``. Weights arrive from the Keras 3 checkpoint as an ``.npz`` keyed by
layer name (``layer/index``), so nothing depends on the two Keras versions ordering a whole
model's weights alike.

tfmot's default 8-bit registry knows the built-in layers (conv, depthwise, BN folding, ReLU,
Add, Concatenate, pooling...) but not our custom layers nor, in 0.8.1, ``Multiply``. They get
QuantizeConfigs here: layers that only move values (channel shuffle, split, nearest
upsampling) pass their input's quantisation through, as the int8 kernels do; layers that
compute (``Multiply``, ``ChannelMean``) get an output fake-quant, like int8 calibration gives
them an output scale.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from lhp_tf.config import Recipe
from lhp_tf.errors import LhpError

#: Custom lhp-tf layers that only move values around (no arithmetic on them).
PASS_THROUGH = ("ChannelShuffle", "ChannelSplit", "NearestUpsample")
#: Layers tfmot does not know that compute new values (need an output range).
OUTPUT_QUANTIZED = ("ChannelMean", "Multiply")


def require_legacy() -> None:
    from lhp_tf.model.kbackend import LEGACY

    if not LEGACY:
        raise RuntimeError("QAT must run with TF_USE_LEGACY_KERAS=1 (tfmot needs tf_keras models)")


def save_layer_weights(model: Any, path: str | os.PathLike[str]) -> int:
    """Every layer's weights to ``path`` as ``name/index`` arrays; returns the tensor count."""
    arrays = {f"{layer.name}/{i}": np.asarray(w) for layer in model.layers
              for i, w in enumerate(layer.get_weights())}
    np.savez(path, **arrays)
    return len(arrays)


def load_layer_weights(model: Any, path: str | os.PathLike[str], source: str) -> None:
    """Assign ``save_layer_weights`` arrays to ``model``'s layers by name; refuse any mismatch."""
    with np.load(path) as z:
        saved = {k: z[k] for k in z.files}
    used = 0
    for layer in model.layers:
        current = layer.get_weights()
        if not current:
            continue
        values = [saved.get(f"{layer.name}/{i}") for i in range(len(current))]
        missing = [i for i, v in enumerate(values) if v is None]
        if missing:
            raise LhpError(f"{source}: layer {layer.name} has no saved weights (was the checkpoint built "
                           "from another recipe?)")
        for cur, val in zip(current, values, strict=True):
            if cur.shape != val.shape:
                raise LhpError(f"{source}: layer {layer.name}: saved shape {val.shape}, model {cur.shape}")
        layer.set_weights(values)
        used += len(values)
    if used != len(saved):
        raise LhpError(f"{source}: {len(saved) - used} saved weight tensors match no layer of the QAT model")


def _configs() -> tuple[Any, Any]:
    import tensorflow_model_optimization as tfmot

    quantizers = tfmot.quantization.keras.quantizers
    base = tfmot.quantization.keras.QuantizeConfig

    class PassThroughQuantizeConfig(base):
        """No weights, no new range: the int8 kernel reuses its input's scale."""

        def get_weights_and_quantizers(self, layer: Any) -> list:
            return []

        def get_activations_and_quantizers(self, layer: Any) -> list:
            return []

        def set_quantize_weights(self, layer: Any, quantize_weights: list) -> None:
            pass

        def set_quantize_activations(self, layer: Any, quantize_activations: list) -> None:
            pass

        def get_output_quantizers(self, layer: Any) -> list:
            return []

        def get_config(self) -> dict:
            return {}

    class OutputQuantizeConfig(PassThroughQuantizeConfig):
        """A moving-average 8-bit range on the output (what calibration would measure)."""

        def get_output_quantizers(self, layer: Any) -> list:
            return [quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False,
                                                      narrow_range=False)]

    return PassThroughQuantizeConfig, OutputQuantizeConfig


def quantize_model(model: Any) -> Any:
    """``model`` annotated layer by layer and turned into a QAT model (fake-quant everywhere)."""
    import tensorflow_model_optimization as tfmot

    from lhp_tf.model import ops
    from lhp_tf.model.kbackend import keras

    require_legacy()
    qk = tfmot.quantization.keras
    PassThrough, Output = _configs()

    def annotate(layer: Any) -> Any:
        kind = type(layer).__name__
        if kind in PASS_THROUGH:
            return qk.quantize_annotate_layer(layer, quantize_config=PassThrough())
        if kind in OUTPUT_QUANTIZED:
            return qk.quantize_annotate_layer(layer, quantize_config=Output())
        if isinstance(layer, keras.layers.InputLayer):
            return layer
        return qk.quantize_annotate_layer(layer)

    annotated = keras.models.clone_model(model, clone_function=annotate)
    annotated.set_weights(model.get_weights())
    scope = {"PassThroughQuantizeConfig": PassThrough, "OutputQuantizeConfig": Output,
             **{name: getattr(ops, name) for name in (*PASS_THROUGH, "ChannelMean")}}
    with qk.quantize_scope(scope):
        return qk.quantize_apply(annotated)


def build_qat_model(recipe: Recipe, weights: str | os.PathLike[str], batch_size: int | None) -> Any:
    """The recipe's network (tf_keras) with the checkpoint's weights, deploy-rewritten, QAT-wrapped."""
    from lhp_tf.converters.inference_model import xnnpack_friendly

    from lhp_tf.model.network import build_model

    require_legacy()
    model = build_model(recipe.model, recipe.num_landmarks, batch_size=batch_size)
    load_layer_weights(model, weights, str(weights))
    model = xnnpack_friendly(model)
    return quantize_model(model)

