"""The graph every exporter starts from: the trained network at a fixed batch, in heatmap space.

Training builds the network with a dynamic batch and outputs heatmap logits. Deployment wants
neither: a dynamic batch adds SHAPE/RESHAPE ops that stop XNNPACK from taking the graph
(REFERENCE section 6), and a board should read heatmaps in [0, 1] without knowing which loss
was used. So the network is rebuilt from the recipe with ``batch_size=1``, the checkpoint's
weights are copied over tensor by tensor (same builder, same order), and the recipe's heatmap
activation is appended (``with_heatmap_activation``).

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


def load_checkpoint(checkpoint: str | os.PathLike[str]) -> Any:
    """The Keras model saved at ``checkpoint`` (custom layers registered)."""
    from lhp_tf.model.network import load_model

    try:
        return load_model(checkpoint)
    except LhpError:
        raise
    except (OSError, ValueError) as exc:
        raise LhpError(f"{checkpoint}: cannot load the checkpoint ({exc})") from exc


def copy_weights(source: Any, target: Any, where: str) -> None:
    """``target.set_weights(source.get_weights())`` with a clear error on an architecture mismatch."""
    src, dst = source.get_weights(), target.weights
    if len(src) != len(dst):
        raise LhpError(f"{where}: the checkpoint has {len(src)} weight tensors, the recipe's model has "
                       f"{len(dst)}: was it trained with another recipe? (pass --recipe)")
    for value, var in zip(src, dst, strict=True):
        if tuple(value.shape) != tuple(var.shape):
            raise LhpError(f"{where}: weight {getattr(var, 'path', var.name)} has shape {tuple(value.shape)} "
                           f"in the checkpoint and {tuple(var.shape)} in the recipe's model (pass --recipe)")
    target.set_weights(src)


def inference_model(trained: Any, recipe: Recipe, batch_size: int | None = 1,
                    where: str = "<model>") -> Any:
    """``trained`` rebuilt at ``batch_size`` (None: dynamic) with the recipe's heatmap activation."""
    from lhp_tf.model.network import build_model, with_heatmap_activation

    fixed = build_model(recipe.model, recipe.num_landmarks, batch_size=batch_size)
    copy_weights(trained, fixed, where)
    return xnnpack_friendly(with_heatmap_activation(fixed, recipe.train.loss))


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


def heatmap_activation(recipe: Recipe) -> str:
    """The metadata name of the activation ``with_heatmap_activation`` appends for this recipe."""
    return "sigmoid" if recipe.train.loss == "bce" else "none"
