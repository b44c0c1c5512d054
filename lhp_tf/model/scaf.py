"""Stepped channel attention fusion (SCAF), Lite-HRNet Plus section 3.1.

SCAF replaces every convolution path of the fusion block with channel attention. Merging
branch j into branch i (either direction):

* the source j is averaged over its channels into one map (computed once per source);
* the receiver i is global-average-pooled over space (once per receiver), and a per-merge pair
  of FCs (C_i -> C_i/r, ReLU, -> C_i, sigmoid) turns it into per-channel weights of i's width;
* the source map is multiplied by the weights, giving a C_i-channel map at j's resolution, which
  is brought to i's resolution (exact nearest upsample for a lower-resolution source, average
  pooling for a higher-resolution one) and added to branch i. The sum is followed by ReLU like
  the original fusion.

The cost per merge is about 2 C_i^2 / r multiply-adds (the FCs) and does not grow with H x W,
unlike the C_j C_i H W of a pointwise path. The FCs are 1x1 convs with bias on the pooled map.

``resize_first=True`` resizes the one-channel map before multiplying: scaling by per-channel
weights commutes with nearest upsampling and average pooling, so the result is the same (up to
float rounding) with C_i times fewer resized elements. The default keeps the paper's order,
because it is what the paper describes and what its complexity figures count (the presets are
calibrated on it); ``lhp flops --set model.scaf_resize_first=true`` shows the saving.
"""

from __future__ import annotations

from typing import Any

from lhp_tf.model.conv import conv_bias
from lhp_tf.model.kbackend import keras
from lhp_tf.model.ops import ChannelMean, NearestUpsample


def channel_attention(pooled: Any, width: int, ratio: int, name: str) -> Any:
    """FC -> ReLU -> FC -> sigmoid on a (1, 1, C) pooled map: per-channel weights in [0, 1]."""
    w = conv_bias(pooled, max(1, width // ratio), f"{name}_fc1", activation="relu")
    return conv_bias(w, width, f"{name}_fc2", activation="sigmoid")


def scaf_fusion(xs: list[Any], ratio: int, name: str, resize_first: bool = False) -> list[Any]:
    """SCAF over all branches; channel counts and resolutions are unchanged."""
    if ratio < 1:
        raise ValueError(f"{name}: SCAF reduction ratio must be >= 1, got {ratio}")
    n = len(xs)
    widths = [int(x.shape[-1]) for x in xs]
    pooled = [keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_gap{i}")(x)
              for i, x in enumerate(xs)]
    means = [ChannelMean(name=f"{name}_mean{j}")(x) for j, x in enumerate(xs)]
    out = []
    for i in range(n):
        terms = [xs[i]]
        for j in range(n):
            if j == i:
                continue
            path = f"{name}_{i}from{j}"
            w = channel_attention(pooled[i], widths[i], ratio, path)
            m = means[j]
            if not resize_first:
                m = keras.layers.Multiply(name=f"{path}_mul")([m, w])
            if j > i:
                m = NearestUpsample(2 ** (j - i), name=f"{path}_up")(m)
            else:
                m = keras.layers.AveragePooling2D(2 ** (i - j), name=f"{path}_down")(m)
            terms.append(keras.layers.Multiply(name=f"{path}_mul")([m, w]) if resize_first else m)
        y = keras.layers.Add(name=f"{name}_{i}_add")(terms)
        out.append(keras.layers.ReLU(name=f"{name}_{i}_relu")(y))
    return out
