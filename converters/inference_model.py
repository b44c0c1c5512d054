"""The graph every exporter starts from: the trained network at a fixed batch, in heatmap space.

Training builds the network with a dynamic batch and outputs heatmap logits. Deployment wants
neither: a dynamic batch adds SHAPE/RESHAPE ops that stop XNNPACK from taking the graph
(docs/FACTS.md, section 6), and a board should read heatmaps without knowing which loss was
used. So the network is brought to ``batch_size=1`` and the codec's heatmap activation is
appended (a sigmoid after BCE). For a TFLite export the deploy graph re-calls the checkpoint's
own trained layers on a batch-1 input (the checkpoint carries its spec, so its graph is that
spec's network); a checkpoint saved before models carried their spec, whose spec comes from a
recipe, and the ONNX/SavedModel exports are rebuilt from the spec with the weights moved over
by layer name (:mod:`lhp_tf.model.weights`: a recipe that does not match the weights is an
error naming the layer).

One deployment rewrite follows (:func:`xnnpack_friendly`): XNNPACK runs AVERAGE_POOL_2D only
in float, so in an int8 graph the CCW cross-resolution pools and the SCAF downsampling pools
(14 nodes in a one-module lhp-small) fall back to the reference kernels, splitting the graph
into 7 delegate partitions. A k x k average pool with stride k is exactly a depthwise k x k
convolution with stride k and every weight 1/k^2 (exact in int8 too: equal per-channel
weights quantise to 127 * scale), which XNNPACK runs in int8. The training graph keeps the
pooling layer: the rewrite is an export concern.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from lhp_tf.config import Recipe
from lhp_tf.errors import LhpError
from lhp_tf.spec import ModelSpec


def load_checkpoint(checkpoint: str | os.PathLike[str], recipe: Recipe | None = None) -> tuple[Any, ModelSpec]:
    """``(trained model, its spec)`` (``lhp_tf.model.network.load_trained``), errors as LhpError."""
    from lhp_tf.model.network import load_trained

    try:
        return load_trained(checkpoint, recipe)
    except LhpError:
        raise
    except (OSError, ValueError) as exc:
        raise LhpError(f"{checkpoint}: cannot load the checkpoint ({exc})") from exc


def inference_model(trained: Any, spec: ModelSpec, batch_size: int | None = 1,
                    where: str = "<model>", target: str | None = None, quant: str = "float") -> Any:
    """``trained`` rebuilt at ``batch_size`` (None: dynamic) with the codec's heatmap activation.

    With a ``target`` (``xnnpack`` or ``npu``, batch 1) it is the deploy graph that target runs
    best for ``quant`` (:func:`lhp_tf.converters.deploy.deploy_model`: same function, rank-4,
    NPU-clean ops); without one (ONNX, SavedModel) only the pools are rewritten.
    """
    from lhp_tf.model.network import build_from_spec, spec_of, with_activation
    from lhp_tf.model.weights import transfer_weights

    if target is not None and batch_size != 1:
        raise LhpError(f"{where}: the deploy graph (--target {target}) is built at batch 1")
    if target is not None and spec_of(trained) is not None:
        from .deploy import deploy_model

        # the deploy rewrite rebuilds the graph anyway: it re-calls the trained layers on a
        # batch-1 input, so no second build and weight copy
        return deploy_model(with_activation(trained, spec.codec.activation), target, quant, batch_size=1)
    fixed = with_activation(build_from_spec(spec.arch, batch_size=batch_size), spec.codec.activation)
    transfer_weights(trained, fixed, where)
    if target is None:
        return xnnpack_friendly(fixed)
    from .deploy import deploy_model

    return deploy_model(fixed, target, quant)


def xnnpack_friendly(model: Any) -> Any:
    """``model`` with every k x k / stride k AveragePooling2D replaced by the equal depthwise conv.

    Other layers are reused as they are (same weights); only the pools are new layers.
    """
    from lhp_tf.model.kbackend import keras

    replaced: dict[str, int] = {}

    def clone(layer: Any) -> Any:
        if type(layer) is not keras.layers.AveragePooling2D:
            return layer
        pool = tuple(layer.pool_size)
        strides = tuple(layer.strides)
        if pool != strides or pool[0] != pool[1] or layer.padding != "valid":
            return layer
        replaced[layer.name] = pool[0]
        # fixed averaging weights: not trainable (QAT fine-tunes the rewritten graph)
        return keras.layers.DepthwiseConv2D(pool[0], strides=pool[0], padding="valid", use_bias=False,
                                            trainable=False, name=layer.name)

    if not any(type(layer) is keras.layers.AveragePooling2D for layer in model.layers):
        return model
    rewritten = keras.models.clone_model(model, clone_function=clone)
    for name, k in replaced.items():
        layer = rewritten.get_layer(name)
        kernel = layer.weights[0]
        layer.set_weights([np.full(tuple(kernel.shape), 1.0 / (k * k), dtype=np.float32)])
    return rewritten
