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

Three places where tfmot's defaults train for another int8 model than the one we ship:

* tfmot leaves sigmoid outputs unquantised (the converter fixes LOGISTIC's output grid
  itself), but that grid, steps of 1/256, is where int8 hurts Lite-HRNet most: the SCAF and
  CCW attention sigmoids of a trained lhp-large sit at 0.5 +- 0.002 and int8 rounds their
  modulation away. Here every sigmoid gets that fixed grid as its fake-quant.
* every activation range starts at [-6, 6] and follows the batches slowly
  (:func:`start_ranges`); here it starts where the float network's outputs lie.
* tfmot's per-axis weight quantiser takes a kernel's last axis, which for a depthwise kernel
  is the depth multiplier (1): one range for all channels. The shipped model quantises
  depthwise kernels per channel (after folding BatchNorm, which per-channel symmetric
  quantisation does not notice), and so does the fake-quant here.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from lhp_tf.spec import ModelSpec

#: Custom lhp-tf layers that only move values around (no arithmetic on them).
PASS_THROUGH = ("ChannelShuffle", "ChannelSplit", "NearestUpsample")
#: Layers tfmot does not know that compute new values (need an output range).
OUTPUT_QUANTIZED = ("ChannelMean", "Multiply")
#: the top of int8 LOGISTIC's output range (scale 1/256, zero point -128, as TFLite fixes it)
SIGMOID_MAX = 255.0 / 256.0


def require_legacy() -> None:
    from lhp_tf.model.kbackend import LEGACY

    if not LEGACY:
        raise RuntimeError("QAT must run with TF_USE_LEGACY_KERAS=1 (tfmot needs tf_keras models)")


def _configs() -> tuple[Any, Any, Any, Any]:
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

    class SigmoidQuantizeConfig(PassThroughQuantizeConfig):
        """int8 LOGISTIC's fixed output grid: [0, 255/256] in steps of 1/256."""

        def get_output_quantizers(self, layer: Any) -> list:
            return [quantizers.FixedQuantizer(num_bits=8, init_min=0.0, init_max=SIGMOID_MAX, narrow_range=False)]

    class DepthwiseChannelQuantizer(quantizers.Quantizer):
        """Symmetric int8 per channel (axis 2 of a (kh, kw, C, 1) kernel), as the shipped depthwise
        convs are quantised. tfmot's per-axis weight quantiser takes the LAST axis, the depth
        multiplier, so it gives a depthwise kernel one range for all its channels."""

        def build(self, tensor_shape: Any, name: str, layer: Any) -> dict:
            return {}

        def __call__(self, inputs: Any, training: Any, weights: dict, **kwargs: Any) -> Any:
            import tensorflow as tf

            k = tf.transpose(inputs, [0, 1, 3, 2])
            top = tf.maximum(tf.stop_gradient(tf.reduce_max(tf.abs(k), axis=[0, 1, 2])), 1e-12)
            q = tf.quantization.fake_quant_with_min_max_vars_per_channel(k, -top, top, num_bits=8, narrow_range=True)
            return tf.transpose(q, [0, 1, 3, 2])

        def get_config(self) -> dict:
            return {}

    class DepthwiseQuantizeConfig(PassThroughQuantizeConfig):
        """A depthwise conv's kernel per channel; its output range only where no BatchNorm
        follows (a BatchNorm folds into the conv, and its own output carries the range)."""

        def __init__(self, quantize_output: bool = True) -> None:
            self.quantize_output = quantize_output

        def get_weights_and_quantizers(self, layer: Any) -> list:
            return [(layer.depthwise_kernel, DepthwiseChannelQuantizer())]

        def get_activations_and_quantizers(self, layer: Any) -> list:
            if not self.quantize_output:
                return []
            return [(layer.activation, quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False,
                                                                         narrow_range=False))]

        def set_quantize_weights(self, layer: Any, quantize_weights: list) -> None:
            layer.depthwise_kernel = quantize_weights[0]

        def set_quantize_activations(self, layer: Any, quantize_activations: list) -> None:
            if self.quantize_output:
                layer.activation = quantize_activations[0]

        def get_config(self) -> dict:
            return {"quantize_output": self.quantize_output}

    return PassThroughQuantizeConfig, OutputQuantizeConfig, SigmoidQuantizeConfig, DepthwiseQuantizeConfig


def quantize_model(model: Any) -> Any:
    """``model`` annotated layer by layer and turned into a QAT model (fake-quant everywhere)."""
    import tensorflow_model_optimization as tfmot

    from lhp_tf.model import ops
    from lhp_tf.model.kbackend import keras

    require_legacy()
    qk = tfmot.quantization.keras
    PassThrough, Output, Sigmoid, Depthwise = _configs()
    # depthwise conv -> BatchNorm pairs: tfmot fuses only pairs it annotates itself, so with
    # our depthwise config the BatchNorm carries the pair's output range
    after_dw = {bn.name: bn.get_input_at(-1)._keras_history.layer for bn in model.layers
                if isinstance(bn, keras.layers.BatchNormalization)}
    after_dw = {bn: conv.name for bn, conv in after_dw.items() if type(conv) is keras.layers.DepthwiseConv2D}

    def annotate(layer: Any) -> Any:
        kind = type(layer).__name__
        if type(layer) is keras.layers.DepthwiseConv2D:
            config = Depthwise(quantize_output=layer.name not in after_dw.values())
            return qk.quantize_annotate_layer(layer, quantize_config=config)
        if layer.name in after_dw:
            return qk.quantize_annotate_layer(layer, quantize_config=Output())
        if kind in PASS_THROUGH:
            return qk.quantize_annotate_layer(layer, quantize_config=PassThrough())
        if kind in OUTPUT_QUANTIZED:
            return qk.quantize_annotate_layer(layer, quantize_config=Output())
        if isinstance(layer, keras.layers.Activation) and getattr(layer.activation, "__name__", "") == "sigmoid":
            return qk.quantize_annotate_layer(layer, quantize_config=Sigmoid())
        if isinstance(layer, keras.layers.InputLayer):
            return layer
        return qk.quantize_annotate_layer(layer)

    annotated = keras.models.clone_model(model, clone_function=annotate)
    annotated.set_weights(model.get_weights())
    scope = {"PassThroughQuantizeConfig": PassThrough, "OutputQuantizeConfig": Output,
             "SigmoidQuantizeConfig": Sigmoid, "DepthwiseQuantizeConfig": Depthwise,
             **{name: getattr(ops, name) for name in (*PASS_THROUGH, "ChannelMean")}}
    with qk.quantize_scope(scope):
        return qk.quantize_apply(annotated)


#: the activation-range variables of tfmot's quantizers, each on its wrapped layer's output
_RANGE_VARIABLES = {"output_min": 0, "output_max": 1, "post_activation_min": 0, "post_activation_max": 1}
#: the range variables of tfmot's weight quantizers (symmetric, per output channel for convs)
_WEIGHT_RANGE = ("kernel_min", "kernel_max")


def output_ranges(model: Any, images: np.ndarray, batch_size: int) -> dict[str, tuple[float, float]]:
    """``{layer name: (low, high)}``: each layer's output range, as the mean over batches of
    ``images`` of the batch's min and max (widened to hold 0), which is the value tfmot's moving
    average of batch extremes settles at."""
    from lhp_tf.model.kbackend import keras

    # a layer reused from the model ``model`` was rewritten from has its output in ``model`` last;
    # layers with several outputs (a channel split) only pass values on and have no range
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)
              and not isinstance(layer.get_output_at(-1), (list, tuple))]
    probe = keras.Model(model.inputs, [layer.get_output_at(-1) for layer in layers])
    if not len(images):
        raise ValueError("no images to measure activation ranges on")
    batch_size = min(batch_size, len(images))  # a tiny training split: one batch of all of it
    lows, highs = [], []
    for start in range(0, len(images) - batch_size + 1, batch_size):
        outs = probe(images[start:start + batch_size], training=False)
        lows.append([min(float(np.min(o)), 0.0) for o in outs])
        highs.append([max(float(np.max(o)), 0.0) for o in outs])
    low, high = np.mean(lows, axis=0), np.mean(highs, axis=0)
    return {layer.name: (float(lo), float(hi)) for layer, lo, hi in zip(layers, low, high, strict=True)}


def start_ranges(qat_model: Any, ranges: dict[str, tuple[float, float]], input_range: tuple[float, float]) -> int:
    """Set every activation range of ``qat_model`` to its layer's measured range and every
    weight range to its kernel's; returns how many range variables were set.

    tfmot starts every activation range at [-6, 6] and moves it towards the batch extremes by
    0.1 % a step (a moving average with decay 0.999), so one QAT epoch of a synthetic recipe
    (87 steps) trains under ranges still about 92 % of [-6, 6]: an int8 step of ~0.045, far
    coarser than the calibrated ranges of the shipped model for its many small tensors (SCAF
    attention maps, sigmoid modulations of a few thousandths). The fine-tuning then adapts the
    weights to another quantiser than the one it ships with.

    The weight ranges (``kernel_min``/``kernel_max``, which tfmot also starts at [-6, 6] and
    sets only in a training call) are set from the kernels, symmetric per output channel as
    its quantiser sets them, so that the started network already runs as int8 does in
    inference mode: on held-out faces it then scores like the shipped int8 model (synthetic
    lhp-large, 20 epochs: 3.982 NME against post-training int8's 3.907 and float's 3.693;
    with [-6, 6] kernel ranges 4.679)."""
    count = 0
    for layer in qat_model.layers:
        inner = getattr(layer, "layer", None)
        for var in layer.weights:
            short = var.name.split("/")[-1].split(":")[0]
            if type(layer).__name__ == "QuantizeLayer" and short.endswith(("_min", "_max")):  # the input
                var.assign(np.full(var.shape, input_range[short.endswith("_max")], np.float32))
            elif inner is not None and short in _RANGE_VARIABLES:
                if inner.name not in ranges:
                    raise RuntimeError(f"QAT model: no measured range for layer {inner.name}")
                var.assign(np.full(var.shape, ranges[inner.name][_RANGE_VARIABLES[short]], np.float32))
            elif inner is not None and short.endswith(_WEIGHT_RANGE):
                kernel = next(w.numpy() for w in layer.weights  # the layer's attribute is the fake-quant tensor
                              if w.name.split("/")[-1].split(":")[0] == short[:-len("_min")])
                axes = tuple(range(kernel.ndim - 1)) if var.shape.rank else None
                top = np.maximum(np.abs(kernel).max(axis=axes), 1e-12).astype(np.float32)
                var.assign(np.broadcast_to(top if short.endswith("_max") else -top, var.shape))
            else:
                continue
            count += 1
    return count


def build_qat_model(spec: ModelSpec, weights: str | os.PathLike[str], batch_size: int | None,
                    range_images: np.ndarray | None = None, range_batch: int = 1) -> Any:
    """The spec's network (tf_keras) with the checkpoint's weights, deploy-rewritten, QAT-wrapped;
    with ``range_images``, its activation ranges start where the float network's outputs lie
    on them (:func:`start_ranges`), measured over batches of ``range_batch``."""
    from lhp_tf.converters.inference_model import xnnpack_friendly

    from lhp_tf.model.network import build_from_spec
    from lhp_tf.model.weights import assign_layer_weights, load_layer_weights

    require_legacy()
    model = build_from_spec(spec.arch, batch_size=batch_size)
    assign_layer_weights(model, load_layer_weights(weights), str(weights))
    model = xnnpack_friendly(model)
    # measured before quantize_model, which calls the layers again in its annotated copy
    ranges = None if range_images is None else output_ranges(model, range_images, range_batch)
    qat = quantize_model(model)
    if ranges is not None:
        start_ranges(qat, ranges, (min(float(range_images.min()), 0.0), max(float(range_images.max()), 0.0)))
    return qat


def trained_variables(qat_model: Any) -> list[Any]:
    """The variables QAT fine-tunes: the trainable ones of every layer that is itself trainable.

    tfmot 0.8.1's QuantizeWrapperV2 lists the weight it fake-quantises among its trainable
    weights even when the wrapped layer was built ``trainable=False``; the fixed 1/k^2 kernels of
    the average pools that :func:`~lhp_tf.converters.inference_model.xnnpack_friendly` rewrites
    as depthwise convs would then be trained, and lost again when the float weights go back to
    the plain network (which has pools there).
    """
    frozen = {id(v) for layer in qat_model.layers if not getattr(layer, "layer", layer).trainable
              for v in layer.weights}
    return [v for v in qat_model.trainable_variables if id(v) not in frozen]


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
