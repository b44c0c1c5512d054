"""The fusion block that exchanges information between resolutions after each module.

Output branch i sums every input branch j, brought to branch i's width and resolution, then
applies ReLU (official Lite-HRNet):

* j > i: channel projection C_j -> C_i + BN, exact nearest upsample by 2^(j-i);
* j < i: (i-j) steps of depthwise 3x3 stride 2 + BN then a projection + BN (intermediate steps
  keep C_j and end in ReLU, the last maps to C_i);
* j == i: identity.

The projection is where the cost is (C_j * C_i * H * W per path). ``kind`` picks it:
``pointwise`` (official 1x1 conv), ``bottleneck`` (linear low-rank pair of 1x1 convs through
min(C_j, C_i) / bottleneck_ratio channels, MobileNetV2-style) or ``group`` (1x1 group conv,
ShuffleNet-style, as split -> per-group 1x1 -> concat -> shuffle, which XNNPACK delegates).
``scaf`` (the paper's stepped channel attention fusion) is in :mod:`lhp_tf.model.scaf`; the
official code's quirk of adding branch 0 twice is not reproduced.
"""

from __future__ import annotations

from typing import Any

from lhp_tf.kinds import FUSION_KINDS
from lhp_tf.model.conv import batch_norm, conv_bn, dw_bn, kernel_init
from lhp_tf.model.kbackend import keras
from lhp_tf.model.ops import ChannelShuffle, ChannelSplit, NearestUpsample


def group_conv_bn(x: Any, filters: int, groups: int, name: str) -> Any:
    """1x1 group conv + BN, then a channel shuffle so the next group conv mixes groups."""
    cin = int(x.shape[-1])
    if cin % groups or filters % groups:
        raise ValueError(f"{name}: group fusion needs {cin} and {filters} channels divisible by "
                         f"groups={groups}")
    parts = ChannelSplit([cin // groups] * groups, name=f"{name}_split")(x)
    outs = [keras.layers.Conv2D(filters // groups, 1, use_bias=False, kernel_initializer=kernel_init(),
                                name=f"{name}_g{g}_conv")(p) for g, p in enumerate(parts)]
    y = keras.layers.Concatenate(name=f"{name}_concat")(outs)
    y = batch_norm(y, f"{name}_bn")
    return ChannelShuffle(groups, name=f"{name}_shuffle")(y)


def project(x: Any, filters: int, kind: str, name: str, groups: int = 4,
            bottleneck_ratio: int = 4) -> Any:
    """Channel projection + BN (no activation) of the chosen kind."""
    if kind == "pointwise":
        return conv_bn(x, filters, name, relu=False)
    if kind == "bottleneck":
        mid = max(1, min(int(x.shape[-1]), filters) // bottleneck_ratio)
        y = conv_bn(x, mid, f"{name}_reduce", relu=False)
        return conv_bn(y, filters, f"{name}_expand", relu=False)
    if kind == "group":
        return group_conv_bn(x, filters, groups, name)
    raise ValueError(f"unknown fusion kind {kind!r} (known: {', '.join(FUSION_KINDS)})")


def conv_fusion(xs: list[Any], kind: str, name: str, groups: int = 4,
                bottleneck_ratio: int = 4) -> list[Any]:
    """The official fusion with pointwise, bottleneck or group projections."""
    widths = [int(x.shape[-1]) for x in xs]
    out = []
    for i in range(len(xs)):
        terms = []
        for j, x in enumerate(xs):
            path = f"{name}_{i}from{j}"
            if j == i:
                terms.append(x)
            elif j > i:
                y = project(x, widths[i], kind, path, groups, bottleneck_ratio)
                terms.append(NearestUpsample(2 ** (j - i), name=f"{path}_up")(y))
            else:
                y = x
                for k in range(i - j):
                    last = k == i - j - 1
                    y = dw_bn(y, f"{path}_down{k}", strides=2)
                    y = project(y, widths[i] if last else widths[j], kind, f"{path}_down{k}_proj",
                                groups, bottleneck_ratio)
                    if not last:
                        y = keras.layers.ReLU(name=f"{path}_down{k}_relu")(y)
                terms.append(y)
        y = keras.layers.Add(name=f"{name}_{i}_add")(terms)
        out.append(keras.layers.ReLU(name=f"{name}_{i}_relu")(y))
    return out


def fusion_block(xs: list[Any], kind: str, name: str, scaf_ratio: int = 4, groups: int = 4,
                 bottleneck_ratio: int = 4, scaf_resize_first: bool = False) -> list[Any]:
    """Fuse all branches with the chosen kind of fusion."""
    if kind == "scaf":
        from lhp_tf.model.scaf import scaf_fusion

        return scaf_fusion(xs, scaf_ratio, name, resize_first=scaf_resize_first)
    return conv_fusion(xs, kind, name, groups, bottleneck_ratio)
