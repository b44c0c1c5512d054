"""Transition between stages: adapt existing branches' widths and open a new lowest branch.

An existing branch whose width changes gets depthwise 3x3 + BN, then 1x1 + BN + ReLU; a new
branch comes from the previous lowest branch through depthwise 3x3 stride 2 + BN, 1x1 + BN + ReLU
(one such step per halving), as in the official code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lhp_tf.model.conv import conv_bn, dw_bn


def transition(xs: list[Any], widths: Sequence[int], name: str) -> list[Any]:
    pre = [int(x.shape[-1]) for x in xs]
    out = []
    for i, c in enumerate(widths):
        if i < len(xs):
            y = xs[i]
            if c != pre[i]:
                y = dw_bn(y, f"{name}_b{i}")
                y = conv_bn(y, c, f"{name}_b{i}_pw")
        else:
            y = xs[-1]
            steps = i + 1 - len(xs)
            for k in range(steps):
                cout = c if k == steps - 1 else pre[-1]
                y = dw_bn(y, f"{name}_b{i}_down{k}", strides=2)
                y = conv_bn(y, cout, f"{name}_b{i}_down{k}_pw")
        out.append(y)
    return out
