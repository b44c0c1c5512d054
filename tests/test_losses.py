"""Heatmap losses against plain numpy references."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from lhp_tf.losses import heatmap_loss  # noqa: E402


def _targets(rng: np.random.Generator, b: int = 3, h: int = 6, w: int = 5, k: int = 4):
    heat = rng.uniform(0, 1, (b, h, w, k)).astype(np.float32)
    weight = rng.integers(0, 2, (b, k)).astype(np.float32)
    logits = rng.normal(0, 2, (b, h, w, k)).astype(np.float32)
    return heat, weight, logits


def _np_bce(y: np.ndarray, z: np.ndarray) -> np.ndarray:
    p = 1.0 / (1.0 + np.exp(-z.astype(np.float64)))
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


@pytest.mark.parametrize("kind", ["bce", "mse"])
def test_loss_matches_numpy(kind: str) -> None:
    heat, weight, logits = _targets(np.random.default_rng(1))
    got = heatmap_loss(kind)({"heatmap": heat, "weight": weight}, tf.constant(logits)).numpy()
    pix = _np_bce(heat, logits) if kind == "bce" else (logits.astype(np.float64) - heat) ** 2
    want = (pix.mean(axis=(1, 2)) * weight).mean(axis=1)
    assert got.shape == (3,)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_zero_weight_landmark_does_not_count() -> None:
    heat, _, logits = _targets(np.random.default_rng(2), b=1, k=2)
    weight = np.array([[1.0, 0.0]], np.float32)
    wild = logits.copy()
    wild[..., 1] = 50.0  # a landmark outside the crop: its prediction must not matter
    for kind in ("bce", "mse"):
        fn = heatmap_loss(kind)
        a = fn({"heatmap": heat, "weight": weight}, tf.constant(logits)).numpy()
        b = fn({"heatmap": heat, "weight": weight}, tf.constant(wild)).numpy()
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_bce_is_stable_for_large_logits_and_minimal_at_target() -> None:
    y = np.zeros((1, 2, 2, 1), np.float32)
    y[0, 0, 0, 0] = 1.0
    z = np.where(y > 0, 80.0, -80.0).astype(np.float32)
    loss = heatmap_loss("bce")({"heatmap": y, "weight": np.ones((1, 1), np.float32)}, tf.constant(z))
    assert np.isfinite(loss.numpy()).all() and float(loss[0]) < 1e-6


def test_unknown_loss_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown heatmap loss"):
        heatmap_loss("l1")
