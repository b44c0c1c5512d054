"""Conditional channel weighting (CCW), Lite-HRNet's "LITE" block (stride 1, all branches).

Per block: split every branch's channels in half; the first halves pass untouched. The second
halves get (1) cross-resolution weighting: average-pool all to the smallest resolution,
concatenate, 1x1 (C -> C/reduce_ratio) + BN + ReLU, 1x1 back + BN + sigmoid, split per branch,
nearest-upsample to each branch's size, multiply; (2) depthwise 3x3 + BN; (3) spatial weighting:
global average pool, 1x1 C -> C/4 (bias) + ReLU, 1x1 back (bias) + sigmoid, multiply. Then
concatenate the halves and shuffle 2 groups. This replaces ShuffleNet's costly 1x1 convolutions
with weights computed from (cheap) pooled features.
"""

from __future__ import annotations

from typing import Any

from lhp_tf.model.conv import conv_bias, conv_bn, dw_bn
from lhp_tf.model.kbackend import keras
from lhp_tf.model.ops import ChannelShuffle, ChannelSplit, NearestUpsample

#: Spatial-weighting reduction ratio (fixed at 4 in the official code).
SPATIAL_RATIO = 4


def cross_resolution_weighting(xs: list[Any], reduce_ratio: int, name: str) -> list[Any]:
    n = len(xs)
    widths = [int(x.shape[-1]) for x in xs]
    total = sum(widths)
    pooled = [keras.layers.AveragePooling2D(2 ** (n - 1 - i), name=f"{name}_pool{i}")(x)
              for i, x in enumerate(xs[:-1])] + [xs[-1]]
    y = keras.layers.Concatenate(name=f"{name}_concat")(pooled) if n > 1 else pooled[0]
    y = conv_bn(y, max(1, int(total / reduce_ratio)), f"{name}_conv1")
    y = conv_bn(y, total, f"{name}_conv2", relu=False)
    y = keras.layers.Activation("sigmoid", name=f"{name}_sigmoid")(y)
    parts = ChannelSplit(widths, name=f"{name}_split")(y) if n > 1 else [y]
    out = []
    for i, (x, w) in enumerate(zip(xs, parts, strict=True)):
        w = NearestUpsample(2 ** (n - 1 - i), name=f"{name}_up{i}")(w) if i < n - 1 else w
        out.append(keras.layers.Multiply(name=f"{name}_mul{i}")([x, w]))
    return out


def spatial_weighting(x: Any, name: str) -> Any:
    c = int(x.shape[-1])
    w = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_gap")(x)
    w = conv_bias(w, max(1, int(c / SPATIAL_RATIO)), f"{name}_fc1", activation="relu")
    w = conv_bias(w, c, f"{name}_fc2", activation="sigmoid")
    return keras.layers.Multiply(name=f"{name}_mul")([x, w])


def ccw_block(xs: list[Any], reduce_ratio: int, name: str) -> list[Any]:
    """One CCW block over all branches; channel counts are unchanged."""
    keep, work = [], []
    for i, x in enumerate(xs):
        c = int(x.shape[-1])
        if c % 2:
            raise ValueError(f"{name}: branch {i} has an odd channel count {c}")
        a, b = ChannelSplit([c // 2, c // 2], name=f"{name}_split{i}")(x)
        keep.append(a)
        work.append(b)
    work = cross_resolution_weighting(work, reduce_ratio, f"{name}_crw")
    work = [dw_bn(x, f"{name}_b{i}") for i, x in enumerate(work)]
    work = [spatial_weighting(x, f"{name}_sw{i}") for i, x in enumerate(work)]
    out = []
    for i, (a, b) in enumerate(zip(keep, work, strict=True)):
        y = keras.layers.Concatenate(name=f"{name}_concat{i}")([a, b])
        out.append(ChannelShuffle(2, name=f"{name}_shuffle{i}")(y))
    return out
