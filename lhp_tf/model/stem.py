"""Lite-HRNet's shuffle stem: a stride-2 conv, then a two-branch ShuffleNet unit of stride 2.

96x96 in -> 24x24 out. The first half of the channels goes through depthwise 3x3 s2 -> 1x1;
the second half through 1x1 expand -> depthwise 3x3 s2 -> 1x1; concatenate, shuffle 2 groups.
"""

from __future__ import annotations

from typing import Any

from lhp_tf.model.conv import conv_bn, dw_bn
from lhp_tf.model.kbackend import keras
from lhp_tf.model.ops import ChannelShuffle, ChannelSplit


def stem(x: Any, channels: int = 32, expand_ratio: float = 1.0, name: str = "stem") -> Any:
    """Official Stem with ``out_channels == stem_channels`` (every published config)."""
    if channels % 2:
        raise ValueError(f"stem channels must be even, got {channels}")
    half = channels // 2
    mid = int(round(channels * expand_ratio))
    x = conv_bn(x, channels, f"{name}_conv1", kernel=3, strides=2)
    a, b = ChannelSplit([half, half], name=f"{name}_split")(x)
    a = dw_bn(a, f"{name}_branch1_dw", strides=2)
    a = conv_bn(a, half, f"{name}_branch1_pw")
    b = conv_bn(b, mid, f"{name}_expand")
    b = dw_bn(b, f"{name}_branch2_dw", strides=2)
    b = conv_bn(b, half, f"{name}_linear")
    x = keras.layers.Concatenate(name=f"{name}_concat")([a, b])
    return ChannelShuffle(2, name=f"{name}_shuffle")(x)
