"""Heatmap decoding: sub-pixel accuracy, the coordinate convention, flips and affines."""

from __future__ import annotations

import numpy as np
import pytest

from lhp_tf.codec import HeatmapCodec
from lhp_tf.decode import (
    crop_to_image,
    decode_argmax,
    decode_dark,
    flip_heatmaps_back,
)


def gaussian_heatmaps(centres: np.ndarray, size: int = 24, sigma: float = 1.5) -> np.ndarray:
    """(N, size, size, K) Gaussians peaking at ``centres (N, K, 2)`` (heatmap pixels)."""
    yy, xx = np.mgrid[0:size, 0:size]
    dx = xx[None, :, :, None] - centres[:, None, None, :, 0]
    dy = yy[None, :, :, None] - centres[:, None, None, :, 1]
    return np.exp(-(dx ** 2 + dy ** 2) / (2 * sigma ** 2))


@pytest.fixture
def centres() -> np.ndarray:
    return np.random.default_rng(0).uniform(3, 20, size=(50, 8, 2))


def test_dark_recovers_subpixel_peaks(centres):
    for sigma in (1.0, 1.5, 2.0):
        coords, conf = decode_dark(gaussian_heatmaps(centres, sigma=sigma))
        assert coords.shape == centres.shape and conf.shape == centres.shape[:2]
        assert np.abs(coords - centres).max() < 0.05, sigma


def test_dark_without_modulation_is_exact_on_a_gaussian(centres):
    coords, _ = decode_dark(gaussian_heatmaps(centres), kernel=1)
    np.testing.assert_allclose(coords, centres, atol=1e-3)


def test_argmax_quarter_shift_within_a_quarter_pixel(centres):
    coords, conf = decode_argmax(gaussian_heatmaps(centres))
    err = np.abs(coords - centres)
    assert err.max() <= 0.25 + 1e-6
    # the shift helps: plain argmax errs up to 0.5 px, with a mean of 0.25
    assert err.mean() < 0.2
    np.testing.assert_allclose(conf, gaussian_heatmaps(centres).max(axis=(1, 2)), rtol=1e-6)


def test_dark_beats_argmax_on_noisy_heatmaps(centres):
    rng = np.random.default_rng(1)
    hm = gaussian_heatmaps(centres) + rng.normal(0, 0.02, size=(50, 24, 24, 8))
    hm = np.clip(hm, 0, None)
    dark = np.abs(decode_dark(hm)[0] - centres).mean()
    argmax = np.abs(decode_argmax(hm)[0] - centres).mean()
    assert dark < argmax


def test_peak_on_the_border_stays_in_range():
    hm = np.zeros((1, 8, 8, 2))
    hm[0, 0, 0, 0] = 1.0
    hm[0, 7, 3, 1] = 1.0
    for method in ("dark", "argmax"):
        codec = HeatmapCodec(input_size=(32, 32), decoder=method)
        coords, _ = codec.decode(hm)
        np.testing.assert_allclose(codec.crop_to_heatmap(coords[0]), [[0, 0], [3, 7]], atol=1e-6)


def test_decode_rejects_unknown_method_and_bad_shape():
    from lhp_tf.errors import LhpError

    with pytest.raises(LhpError, match="decoder 'soft'"):
        HeatmapCodec(decoder="soft")
    with pytest.raises(ValueError, match=r"\(N, h, w, K\)"):
        decode_dark(np.zeros((4, 4, 1)))


def test_crop_heatmap_round_trip_and_pixel_centres():
    # a crop pixel block [0, 4) has its centre 1.5 at heatmap pixel 0; the crop centre maps to the heatmap centre
    codec = HeatmapCodec(input_size=(96, 96), stride=4)
    np.testing.assert_allclose(codec.crop_to_heatmap(np.array([1.5, 47.5, -0.5])), [0.0, 11.5, -0.5])
    x = np.random.default_rng(2).uniform(-5, 100, size=(3, 5, 2))
    np.testing.assert_allclose(codec.heatmap_to_crop(codec.crop_to_heatmap(x)), x)


def test_flip_back_maps_mirrored_peaks_to_the_original_positions():
    rng = np.random.default_rng(3)
    centres = rng.uniform(3, 20, size=(4, 4, 2))
    perm = np.array([1, 0, 3, 2])
    hm = gaussian_heatmaps(centres)
    # what a perfect model predicts on the mirrored crop: point i of the flipped face is the
    # mirror of point perm[i], at u -> w - 1 - u
    mirrored = centres[:, perm].copy()
    mirrored[..., 0] = 24 - 1 - mirrored[..., 0]
    back = flip_heatmaps_back(gaussian_heatmaps(mirrored), perm)
    np.testing.assert_allclose(back, hm, atol=1e-12)
    np.testing.assert_allclose(decode_dark(back)[0], centres, atol=0.05)


def test_crop_to_image_applies_each_affine():
    pts = np.array([[[0.0, 0.0], [10.0, 5.0]], [[1.0, 2.0], [3.0, 4.0]]])
    m = np.array([[[2.0, 0.0, 100.0], [0.0, 2.0, 50.0]], [[0.0, -1.0, 7.0], [1.0, 0.0, 0.0]]])
    expected = np.array([[[100.0, 50.0], [120.0, 60.0]], [[5.0, 1.0], [3.0, 3.0]]])
    np.testing.assert_allclose(crop_to_image(pts, m), expected)
