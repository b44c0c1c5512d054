"""The official "ConvModule": convolution, then BatchNorm, then an optional activation.

Kept as separate Keras layers (not fused) so the TFLite converter folds them itself, the
complexity counter sees each one, and tensorflow-model-optimization recognises the
conv -> BN -> ReLU pattern. Initialisation follows the official code: conv weights
Normal(std=0.001), zero bias, BN gamma 1 and beta 0; BN momentum 0.9 (PyTorch's 0.1) and eps 1e-5.
"""

from __future__ import annotations

from typing import Any

from lhp_tf.model.kbackend import keras

#: Standard deviation of the official conv weight initialisation.
INIT_STD = 0.001


def kernel_init() -> Any:
    return keras.initializers.RandomNormal(mean=0.0, stddev=INIT_STD)


def batch_norm(x: Any, name: str) -> Any:
    return keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=name)(x)


def conv_bn(x: Any, filters: int, name: str, kernel: int = 1, strides: int = 1,
            relu: bool = True, bn: bool = True) -> Any:
    """Conv2D (no bias when followed by BN) -> BN -> ReLU, each step optional."""
    x = keras.layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=not bn,
                            kernel_initializer=kernel_init(), name=f"{name}_conv")(x)
    if bn:
        x = batch_norm(x, f"{name}_bn")
    if relu:
        x = keras.layers.ReLU(name=f"{name}_relu")(x)
    return x


def dw_bn(x: Any, name: str, strides: int = 1, relu: bool = False) -> Any:
    """Depthwise 3x3 -> BN (-> ReLU); the official code leaves the activation out."""
    x = keras.layers.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False,
                                     depthwise_initializer=kernel_init(), name=f"{name}_dw")(x)
    x = batch_norm(x, f"{name}_bn")
    if relu:
        x = keras.layers.ReLU(name=f"{name}_relu")(x)
    return x


def conv_bias(x: Any, filters: int, name: str, activation: str | None = None) -> Any:
    """1x1 conv with bias and no BN (attention FCs, output heads), then an optional activation."""
    x = keras.layers.Conv2D(filters, 1, use_bias=True, kernel_initializer=kernel_init(),
                            name=f"{name}_conv" if activation else name)(x)
    if activation == "relu":
        x = keras.layers.ReLU(name=f"{name}_relu")(x)
    elif activation == "sigmoid":
        x = keras.layers.Activation("sigmoid", name=f"{name}_sigmoid")(x)
    elif activation is not None:
        raise ValueError(f"unknown activation {activation!r}")
    return x
