"""Landmark accuracy metrics: NME, failure rate, CED and AUC (numpy only; runs on boards).

Every function returns FRACTIONS (an NME of 0.045 is 4.5 %). Reporting code (``lhp bench``,
``lhp eval``) multiplies by 100 when it prints percent; keep the fractions in computations
so thresholds such as 0.10 mean the same everywhere.

Normalisation is inter-ocular (outer eye corners), the convention of the paper, HRNet-Facial,
STAR and PIPNet; inter-pupil gives larger numbers and must not be mixed in.
"""

from __future__ import annotations

import numpy as np

from lhp_tf.kinds import NUM_LANDMARKS

#: 0-based indices of the outer eye corners per annotation format
OUTER_EYE_CORNERS: dict[str, tuple[int, int]] = {"300w": (36, 45), "wflw": (60, 72)}

#: landmarks per annotation format, to catch a bundle paired with the wrong format


def interocular(landmarks: np.ndarray, fmt: str) -> np.ndarray:
    """Distance between the outer eye corners of ``landmarks (..., K, 2)`` -> shape ``(...)``."""
    key = fmt.lower()
    if key not in OUTER_EYE_CORNERS:
        raise ValueError(f"unknown landmark format {fmt!r}: expected one of {sorted(OUTER_EYE_CORNERS)}")
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.shape[-2] != NUM_LANDMARKS[key]:
        raise ValueError(f"{fmt} has {NUM_LANDMARKS[key]} landmarks, got {pts.shape[-2]}")
    a, b = OUTER_EYE_CORNERS[key]
    return np.linalg.norm(pts[..., a, :] - pts[..., b, :], axis=-1)


def nme(pred: np.ndarray, gt: np.ndarray, norm: np.ndarray) -> np.ndarray:
    """Per-image NME: mean point-to-point error over landmarks divided by ``norm`` -> (N,)."""
    p = np.asarray(pred, dtype=np.float64)
    g = np.asarray(gt, dtype=np.float64)
    d = np.asarray(norm, dtype=np.float64)
    if p.shape != g.shape or p.ndim != 3 or p.shape[2] != 2:
        raise ValueError(f"pred and gt must both be (N, K, 2), got {p.shape} and {g.shape}")
    if d.shape != (p.shape[0],):
        raise ValueError(f"norm must be (N,) = ({p.shape[0]},), got {d.shape}")
    if np.any(d <= 0):
        raise ValueError("norm must be positive for every image (degenerate eye corners?)")
    return np.linalg.norm(p - g, axis=-1).mean(axis=1) / d


def failure_rate(nmes: np.ndarray, threshold: float = 0.10) -> float:
    """Share of images whose NME is above ``threshold`` (a fraction)."""
    e = np.asarray(nmes, dtype=np.float64)
    if e.size == 0:
        raise ValueError("failure_rate of an empty NME list")
    return float(np.mean(e > threshold))


def ced_curve(nmes: np.ndarray, threshold: float = 0.10, steps: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative error distribution on ``steps`` equal intervals of [0, threshold].

    Returns ``(xs, ys)`` with ``steps + 1`` points; ``ys[i]`` is the share of images with
    NME <= ``xs[i]``.
    """
    e = np.sort(np.asarray(nmes, dtype=np.float64).ravel())
    if e.size == 0:
        raise ValueError("CED of an empty NME list")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    xs = np.linspace(0.0, threshold, steps + 1)
    ys = np.searchsorted(e, xs, side="right") / e.size
    return xs, ys


def _simpson(ys: np.ndarray, dx: float) -> float:
    """Composite Simpson's rule on equally spaced samples (odd count; else last panel trapezoid)."""
    n = ys.size - 1
    if n < 2:
        return float(0.5 * dx * (ys[0] + ys[-1])) if n == 1 else 0.0
    tail = 0.0
    if n % 2:
        tail = 0.5 * dx * (ys[-2] + ys[-1])
        ys = ys[:-1]
    return float(dx / 3.0 * (ys[0] + ys[-1] + 4.0 * ys[1:-1:2].sum() + 2.0 * ys[2:-1:2].sum()) + tail)


def auc(nmes: np.ndarray, threshold: float = 0.10, step: float = 1e-4) -> float:
    """Area under the CED from 0 to ``threshold`` divided by ``threshold`` (a fraction).

    Integrated with Simpson's rule on a grid of ``step``, as PIPNet and STAR report it.
    """
    steps = max(1, int(round(threshold / step)))
    xs, ys = ced_curve(nmes, threshold, steps)
    return _simpson(ys, xs[1] - xs[0]) / threshold
