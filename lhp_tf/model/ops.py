"""Small layers the Lite-HRNet family needs, written to lower to XNNPACK-friendly TFLite ops.

Each layer uses only fixed-shape reshape / transpose / concatenation / split / mean, so a
batch-1 graph converts to TFLite ops that XNNPACK delegates. In particular the nearest
upsample is built from concatenated copies and reshapes: Keras' ``UpSampling2D(nearest)``
lowers to TILE and ``Resizing(nearest)`` to RESIZE_NEAREST_NEIGHBOR, which XNNPACK did not take
(docs/FACTS.md, section 6). The layers call TensorFlow directly so they work under Keras 3 and tf_keras.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from lhp_tf.model.kbackend import keras, register_serializable


def _at_least_one(layer: str, name: str, value: int) -> int:
    """``value`` as an int, or a ValueError naming the layer's parameter when it is below 1."""
    if value < 1:
        raise ValueError(f"{layer}: {name} must be >= 1, got {value}")
    return int(value)


def _static_batch(x: tf.Tensor) -> int:
    """The batch size when it is static (1 in exported graphs), else -1 for reshape."""
    b = x.shape[0]
    return int(b) if b is not None else -1


@register_serializable
class ChannelShuffle(keras.layers.Layer):
    """ShuffleNet channel shuffle: (..., g, C/g) -> (..., C/g, g), for 4-D NHWC inputs.

    Pixels are flattened first so every tensor stays rank 4 (NPUs and many accelerators refuse
    rank 5): (B, H*W, g, C/g) -> TRANSPOSE (0, 1, 3, 2) -> (B, H, W, C).
    """

    def __init__(self, groups: int = 2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.groups = _at_least_one("ChannelShuffle", "groups", groups)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        _, h, w, c = x.shape
        if c % self.groups:
            raise ValueError(f"{self.name}: {c} channels do not split into {self.groups} groups")
        b = _static_batch(x)
        y = tf.reshape(x, (b, h * w, self.groups, c // self.groups))
        y = tf.transpose(y, (0, 1, 3, 2))
        return tf.reshape(y, (b, h, w, c))

    def compute_output_shape(self, input_shape: Any) -> Any:
        return tuple(input_shape)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "groups": self.groups}


@register_serializable
class QuarterInterleave(keras.layers.Layer):
    """Interleave the four channel quarters of a 4-D NHWC input (q channels each):
    ``out[4m + 2a + b] = x[(2b + a) q + m]`` for a, b in {0, 1}, i.e. quarters 0, 2, 1, 3 taken
    one channel at a time. It is the permutation that ends a CCW block pair of the deploy graph
    (``lhp_tf.converters.deploy``), done as one transpose instead of a 1x1 permutation conv:
    (B*H*W, 2, 2, q) -> TRANSPOSE (0, 3, 2, 1) -> (B, H, W, 4q), rank 4 throughout.
    """

    def call(self, x: tf.Tensor) -> tf.Tensor:
        _, h, w, c = x.shape
        if c % 4:
            raise ValueError(f"{self.name}: {c} channels do not split into quarters")
        y = tf.reshape(x, (-1, 2, 2, c // 4))
        y = tf.transpose(y, (0, 3, 2, 1))
        return tf.reshape(y, (_static_batch(x), h, w, c))

    def compute_output_shape(self, input_shape: Any) -> Any:
        return tuple(input_shape)


@register_serializable
class ChannelSplit(keras.layers.Layer):
    """Split the channel axis into consecutive parts of the given sizes.

    Equal parts lower to SPLIT and unequal ones to one SLICE each: XNNPACK takes both, but not
    the SPLIT_V that ``tf.split`` with a size list produces.
    """

    def __init__(self, sizes: list[int] | tuple[int, ...], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sizes = [int(s) for s in sizes]
        if not self.sizes or min(self.sizes) < 1:
            raise ValueError(f"ChannelSplit: sizes must be positive, got {self.sizes}")

    def call(self, x: tf.Tensor) -> list[tf.Tensor]:
        if x.shape[-1] != sum(self.sizes):
            raise ValueError(f"{self.name}: {x.shape[-1]} channels cannot split into {self.sizes}")
        if len(set(self.sizes)) == 1:
            return list(tf.split(x, len(self.sizes), axis=-1))
        b, h, w, _ = x.shape
        b = _static_batch(x)
        parts, start = [], 0
        for size in self.sizes:
            parts.append(tf.slice(x, (0, 0, 0, start), (b, h, w, size)))
            start += size
        return parts

    def compute_output_shape(self, input_shape: Any) -> Any:
        return [tuple(input_shape[:-1]) + (s,) for s in self.sizes]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "sizes": list(self.sizes)}


def upsample_steps(factor: int) -> list[int]:
    """Factor an upsampling factor into steps of at most 4: XNNPACK concatenates at most 4 inputs
    (an 8-way CONCATENATION stayed on the reference kernels)."""
    steps, rest = [], factor
    for f in (4, 3, 2):
        while rest % f == 0 and rest > 1:
            steps.append(f)
            rest //= f
    return steps + ([rest] if rest > 1 else [])


@register_serializable
class NearestUpsample(keras.layers.Layer):
    """Exact nearest-neighbour upsample by an integer factor, via concatenation and reshape.

    Copies along channels then a reshape repeat every pixel ``factor`` times horizontally; copies
    along width then a reshape repeat every row vertically. This is bit-exact (no arithmetic)
    and lowers to CONCATENATION + RESHAPE, never TILE or RESIZE_NEAREST_NEIGHBOR (which XNNPACK
    does not take). Measured and not used (int8 toys, LiteRT, 1 thread, 50 x2 upsamples of
    6x6x24): DEPTH_TO_SPACE after a 4-way channel concatenation, 93 -> 108 us back to back and
    167 -> 153 us right after another model (a x4 would need a 16-way concatenation, which stays
    on the reference kernels); TRANSPOSE_CONV with identity weights, ~10x slower.
    """

    def __init__(self, factor: int = 2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.factor = _at_least_one("NearestUpsample", "factor", factor)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        for s in upsample_steps(self.factor):
            _, h, w, c = x.shape
            b = _static_batch(x)
            y = tf.concat([x] * s, axis=-1)            # (b, h, w, s*c): pixel copies side by side
            y = tf.reshape(y, (b, h, w * s, c))        # each pixel repeated s times along x
            y = tf.concat([y] * s, axis=2)             # (b, h, s*w*s, c): row copies side by side
            x = tf.reshape(y, (b, h * s, w * s, c))    # each row repeated s times along y
        return x

    def compute_output_shape(self, input_shape: Any) -> Any:
        b, h, w, c = input_shape
        s = self.factor
        return (b, None if h is None else h * s, None if w is None else w * s, c)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "factor": self.factor}


@register_serializable
class ChannelMean(keras.layers.Layer):
    """Average over the channel axis, keeping it: (B, H, W, C) -> (B, H, W, 1)."""

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_mean(x, axis=-1, keepdims=True)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return tuple(input_shape[:-1]) + (1,)


@register_serializable
class PooledChannelMean(keras.layers.Layer):
    """The channel mean, then a k x k / stride k average pool, as one MEAN: (B, H, W, C) ->
    (B, H/k, W/k, 1) through the rank-4 view (B*H/k, k, W/k, k*C) averaged over axes 1 and 3.

    SCAF's pooled channel means in the CPU deploy graphs (``lhp_tf.converters.deploy``): XNNPACK
    runs this MEAN 2-4x faster than the strided C -> 1 conv that computes the same values,
    int8 and float."""

    def __init__(self, k: int = 2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.k = _at_least_one("PooledChannelMean", "k", k)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        _, h, w, c = x.shape
        k = self.k
        if h % k or w % k:
            raise ValueError(f"{self.name}: a {h}x{w} map does not pool by {k}")
        b = _static_batch(x)
        rows = -1 if b < 0 else b * h // k
        y = tf.reduce_mean(tf.reshape(x, (rows, k, w // k, k * c)), axis=(1, 3), keepdims=True)
        return tf.reshape(y, (b, h // k, w // k, 1))

    def compute_output_shape(self, input_shape: Any) -> Any:
        b, h, w, _ = input_shape
        return (b, None if h is None else h // self.k, None if w is None else w // self.k, 1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "k": self.k}


@register_serializable
class SpaceToDepth(keras.layers.Layer):
    """Each ``block`` x ``block`` patch of pixels as one pixel of ``block**2`` times the
    channels, in TensorFlow's order (channel ``(dy * block + dx) * C + c``); lowers to
    SPACE_TO_DEPTH. The ``amx`` deploy graph's int8 stem uses it (:mod:`lhp_tf.converters.deploy`)."""

    def __init__(self, block: int = 2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if block < 2:
            raise ValueError(f"SpaceToDepth: block must be >= 2, got {block}")
        self.block = int(block)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return tf.nn.space_to_depth(x, self.block)

    def compute_output_shape(self, input_shape: Any) -> Any:
        b, h, w, c = input_shape
        k = self.block
        return (b, None if h is None else h // k, None if w is None else w // k, c * k * k)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "block": self.block}
