"""NME, failure rate, CED and AUC against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from lhp_tf.metrics import auc, ced_curve, failure_rate, interocular, nme


def test_interocular_uses_outer_eye_corners():
    lm68 = np.zeros((2, 68, 2))
    lm68[:, 36] = [10.0, 20.0]
    lm68[:, 45] = [40.0, 60.0]
    lm68[:, 39] = [1000.0, 0.0]  # an inner corner: must not matter
    np.testing.assert_allclose(interocular(lm68, "300W"), [50.0, 50.0])
    lm98 = np.zeros((98, 2))
    lm98[60] = [0.0, 0.0]
    lm98[72] = [30.0, 0.0]
    assert interocular(lm98, "wflw") == pytest.approx(30.0)
    with pytest.raises(ValueError, match="68 landmarks"):
        interocular(np.zeros((98, 2)), "300w")
    with pytest.raises(ValueError, match="unknown landmark format"):
        interocular(lm98, "cofw")


def test_nme_of_a_known_offset():
    gt = np.random.default_rng(0).uniform(0, 100, size=(3, 68, 2))
    pred = gt.copy()
    pred[0] += [3.0, 4.0]          # every point 5 px off
    pred[1, :34] += [0.0, 2.0]     # half the points 2 px off -> mean 1 px
    norm = np.array([50.0, 10.0, 20.0])
    np.testing.assert_allclose(nme(pred, gt, norm), [0.1, 0.1, 0.0])


def test_nme_rejects_mismatched_shapes_and_zero_norm():
    with pytest.raises(ValueError, match="both be"):
        nme(np.zeros((2, 5, 2)), np.zeros((2, 6, 2)), np.ones(2))
    with pytest.raises(ValueError, match="positive"):
        nme(np.zeros((2, 5, 2)), np.zeros((2, 5, 2)), np.array([1.0, 0.0]))


def test_failure_rate_counts_strictly_above_the_threshold():
    nmes = np.array([0.01, 0.05, 0.10, 0.1001, 0.3])
    assert failure_rate(nmes, 0.10) == pytest.approx(2 / 5)
    assert failure_rate(nmes, 0.5) == 0.0


def test_ced_curve():
    xs, ys = ced_curve(np.array([0.0, 0.02, 0.05, 0.2]), 0.10, 10)
    np.testing.assert_allclose(xs, np.linspace(0, 0.1, 11))
    np.testing.assert_allclose(ys, [0.25, 0.25, 0.5, 0.5, 0.5, 0.75, 0.75, 0.75, 0.75, 0.75, 0.75])


def test_auc_of_constructed_distributions():
    assert auc(np.zeros(10)) == pytest.approx(1.0)
    assert auc(np.full(10, 0.5)) == 0.0
    # every image at 0.03: the CED is a step from 0 to 1 at 0.03, area 0.07 -> 0.7
    assert auc(np.full(7, 0.03)) == pytest.approx(0.7, abs=1e-3)
    # NMEs uniform on [0, 0.2]: CED(x) = x / 0.2, area to 0.1 = 0.025 -> 0.25
    assert auc(np.linspace(0, 0.2, 20001)) == pytest.approx(0.25, abs=1e-4)
    # half perfect, half failed: 0.5
    assert auc(np.array([0.0, 1.0])) == pytest.approx(0.5)


def test_auc_simpson_is_exact_on_a_quadratic_ced():
    # NME = 0.1 * sqrt(u) for u uniform: CED(x) = (x / 0.1)^2 on [0, 0.1], area/0.1 = 1/3
    nmes = 0.1 * np.sqrt((np.arange(200000) + 0.5) / 200000)
    assert auc(nmes, 0.10) == pytest.approx(1 / 3, abs=1e-4)
