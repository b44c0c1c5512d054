"""Heads: Lite-HRNet's iterative head and the three heatmap output heads.

* Iterative head (official Lite-HRNet): from the lowest resolution up, bilinearly upsample the
  previous result and add it, then a depthwise-separable 3x3 (dw + BN, 1x1 + BN + ReLU) that
  maps to the next branch's width.
* ``v1`` (HRNetV1, official): one 1x1 conv to K heatmaps on the highest-resolution branch.
* ``v2`` (HRNetV2 / HRNet-Facial): upsample every branch to the highest resolution, concatenate,
  1x1 conv + BN + ReLU keeping the width, 1x1 conv to K.
* ``mr`` (Lite-HRNet Plus section 3.2): a 1x1 conv to K on every branch, upsample each to the
  highest resolution and sum; with widths (40, 80, 160, 320) it costs 1.875x the v1 head.

All heads output logits. Head upsampling is bilinear, which lowers to RESIZE_BILINEAR (delegated).
"""

from __future__ import annotations

from typing import Any

from lhp_tf.kinds import HEAD_KINDS
from lhp_tf.model.conv import conv_bias, conv_bn, dw_bn
from lhp_tf.model.kbackend import keras


def _upsample(x: Any, factor: int, name: str) -> Any:
    if factor == 1:
        return x
    return keras.layers.UpSampling2D(factor, interpolation="bilinear", name=name)(x)


def iterative_head(xs: list[Any], name: str = "head_iter") -> list[Any]:
    """Official IterativeHead; branch i comes out with the width of branch i-1 (branch 0: its own)."""
    rev = xs[::-1]
    widths = [int(x.shape[-1]) for x in rev]
    ys: list[Any] = []
    last = None
    for k, s in enumerate(rev):
        if last is not None:
            last = _upsample(last, 2, f"{name}{k}_up")
            s = keras.layers.Add(name=f"{name}{k}_add")([s, last])
        cout = widths[k + 1] if k < len(rev) - 1 else widths[k]
        s = dw_bn(s, f"{name}{k}")
        s = conv_bn(s, cout, f"{name}{k}_pw")
        ys.append(s)
        last = s
    return ys[::-1]


def output_head(xs: list[Any], kind: str, num_landmarks: int, name: str = "head_out") -> Any:
    """Heatmap logits at the highest branch's resolution."""
    if kind == "v1":
        return conv_bias(xs[0], num_landmarks, name)
    if kind == "v2":
        ups = [_upsample(x, 2 ** i, f"{name}_up{i}") for i, x in enumerate(xs)]
        y = keras.layers.Concatenate(name=f"{name}_concat")(ups)
        y = conv_bn(y, int(y.shape[-1]), f"{name}_fuse")
        return conv_bias(y, num_landmarks, name)
    if kind == "mr":
        maps = [_upsample(conv_bias(x, num_landmarks, f"{name}{i}"), 2 ** i, f"{name}{i}_up")
                for i, x in enumerate(xs)]
        return keras.layers.Add(name=f"{name}_sum")(maps) if len(maps) > 1 else maps[0]
    raise ValueError(f"unknown head {kind!r} (known: {', '.join(HEAD_KINDS)})")
