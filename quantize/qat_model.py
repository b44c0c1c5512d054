"""The lhp-tf network prepared for quantisation-aware training with tensorflow-model-optimization.

Runs only under ``TF_USE_LEGACY_KERAS=1`` (tfmot 0.8.1 refuses Keras 3 models): the network is
built by the same ``build_model`` as everywhere else, which then uses tf_keras through
``lhp_tf.model.kbackend``. Weights arrive from the Keras 3 checkpoint as an ``.npz`` keyed by
layer name (``lhp_tf.model.weights``), so nothing depends on the two Keras versions ordering a
whole model's weights alike.

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

from lhp_tf.spec import ModelSpec

#: Custom lhp-tf layers that only move values around (no arithmetic on them).
PASS_THROUGH = ("ChannelShuffle", "ChannelSplit", "NearestUpsample")
#: Layers tfmot does not know that compute new values (need an output range).
OUTPUT_QUANTIZED = ("ChannelMean", "Multiply")


def require_legacy() -> None:
    from lhp_tf.model.kbackend import LEGACY

    if not LEGACY:
        raise RuntimeError("QAT must run with TF_USE_LEGACY_KERAS=1 (tfmot needs tf_keras models)")


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


def build_qat_model(spec: ModelSpec, weights: str | os.PathLike[str], batch_size: int | None) -> Any:
    """The spec's network (tf_keras) with the checkpoint's weights, deploy-rewritten, QAT-wrapped."""
    from lhp_tf.converters.inference_model import xnnpack_friendly

    from lhp_tf.model.network import build_from_spec
    from lhp_tf.model.weights import assign_layer_weights, load_layer_weights

    require_legacy()
    model = build_from_spec(spec.arch, batch_size=batch_size)
    assign_layer_weights(model, load_layer_weights(weights), str(weights))
    model = xnnpack_friendly(model)
    return quantize_model(model)


def float_weights(qat_model: Any, spec: ModelSpec, path: str | os.PathLike[str]) -> int:
    """The fine-tuned float weights of ``qat_model``, as the spec's plain network holds them,
    to an ``.npz`` by layer name. A QuantizeWrapper owns its layer's variables under the
    layer's own names (``stem_conv1_conv/kernel:0``) beside its quantizer state
    (``quant_stem_conv1_conv/kernel_min:0``), so each weight of the plain network is looked up
    by layer and variable name. Returns the arrays written."""
    from lhp_tf.model.network import build_from_spec
    from lhp_tf.model.weights import save_layer_weights

    require_legacy()
    trained = {v.name: v for v in qat_model.weights}
    plain = build_from_spec(spec.arch, batch_size=None)
    for layer in plain.layers:
        if not layer.weights:
            continue
        names = [f"{layer.name}/{v.name.rsplit('/', 1)[-1]}" for v in layer.weights]
        missing = [n for n in names if n not in trained]
        if missing:
            raise RuntimeError(f"QAT model: no variable {missing[0]} (of layer {layer.name})")
        layer.set_weights([trained[n].numpy() for n in names])
    return save_layer_weights(plain, path)
