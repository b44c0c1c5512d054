"""The small custom layers: exact results against numpy and get_config round trips."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from lhp_tf.model.kbackend import keras  # noqa: E402
from lhp_tf.model.ops import (  # noqa: E402
    ChannelMean,
    ChannelShuffle,
    ChannelSplit,
    NearestUpsample,
    PooledChannelMean,
)

RNG = np.random.default_rng(0)


def _x(shape: tuple[int, ...]) -> np.ndarray:
    return RNG.standard_normal(shape).astype("float32")


@pytest.mark.parametrize("factor", [1, 2, 4, 8])
def test_nearest_upsample_is_exact_repeat(factor: int) -> None:
    x = _x((2, 3, 5, 4))
    y = np.asarray(NearestUpsample(factor)(x))
    expected = x.repeat(factor, axis=1).repeat(factor, axis=2)
    assert y.shape == expected.shape
    np.testing.assert_array_equal(y, expected)


@pytest.mark.parametrize("groups", [2, 4])
def test_channel_shuffle_matches_numpy(groups: int) -> None:
    x = _x((1, 3, 3, 8))
    y = np.asarray(ChannelShuffle(groups)(x))
    expected = x.reshape(1, 3, 3, groups, 8 // groups).transpose(0, 1, 2, 4, 3).reshape(1, 3, 3, 8)
    np.testing.assert_array_equal(y, expected)
    # A shuffle by 2 then by C/2 is the identity permutation.
    back = np.asarray(ChannelShuffle(8 // groups)(y))
    np.testing.assert_array_equal(back, x)


def test_channel_split_and_mean() -> None:
    x = _x((1, 2, 2, 7))
    a, b = ChannelSplit([3, 4])(x)
    np.testing.assert_array_equal(np.asarray(a), x[..., :3])
    np.testing.assert_array_equal(np.asarray(b), x[..., 3:])
    np.testing.assert_allclose(np.asarray(ChannelMean()(x)), x.mean(-1, keepdims=True), rtol=1e-6)


@pytest.mark.parametrize("k", [1, 2, 4])
def test_pooled_channel_mean_is_the_mean_then_the_pool(k: int) -> None:
    x = _x((3, 8, 12, 5))  # batch 3: the view stacks every image's rows
    expected = x.mean(-1).reshape(3, 8 // k, k, 12 // k, k).mean((2, 4))[..., None]
    np.testing.assert_allclose(np.asarray(PooledChannelMean(k)(x)), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="does not pool by"):
        PooledChannelMean(3)(x[:, :, :10])


def test_bad_channel_counts_are_reported() -> None:
    with pytest.raises(ValueError, match="groups"):
        ChannelShuffle(3)(_x((1, 2, 2, 8)))
    with pytest.raises(ValueError, match="cannot split"):
        ChannelSplit([3, 3])(_x((1, 2, 2, 7)))


@pytest.mark.parametrize("layer", [ChannelShuffle(4, name="s"), ChannelSplit([2, 6], name="p"),
                                   NearestUpsample(4, name="u"), ChannelMean(name="m"),
                                   PooledChannelMean(4, name="q")])
def test_get_config_round_trip(layer: keras.layers.Layer) -> None:
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    # Registered: Keras' generic deserialisation finds the class by its registered name.
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(restored) is type(layer) and restored.get_config() == config
    x = _x((1, 4, 4, 8))
    a, b = layer(x), clone(x)
    for u, v in zip(a if isinstance(a, list) else [a], b if isinstance(b, list) else [b], strict=True):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
