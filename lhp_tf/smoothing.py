"""Temporal smoothing of landmarks in video: a One-Euro filter per face track.

Per-frame landmarks jitter by a pixel or two even on a still face (24x24 heatmaps). A fixed
moving average removes the jitter but lags behind a turning head; the One-Euro filter
(Casiez et al., CHI 2012) smooths hard when the points are still and follows them when they
move, by raising its cutoff with the (smoothed) speed. Here speed is measured in face sizes per
frame so one setting suits small and large faces, and the cutoff is given as ``alpha``: the
weight of a new frame when the face is still (1 = no smoothing).

Faces are tracked from frame to frame by box overlap; a face that is lost starts a new track.
This module imports neither TensorFlow nor Keras.
"""

from __future__ import annotations

import math

import numpy as np


def _alpha(cutoff: float) -> float:
    """EMA weight of a first-order low-pass at ``cutoff`` (cycles per frame), sampled once per frame."""
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau)


def _cutoff(alpha: float) -> float:
    """Inverse of :func:`_alpha`."""
    return alpha / (2.0 * math.pi * (1.0 - alpha))


class OneEuroFilter:
    """One-Euro filter over an array of points; ``alpha`` is the still-face weight of a new frame."""

    def __init__(self, alpha: float, beta: float = 5.0, d_alpha: float = 0.5) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"smoothing alpha must be in (0, 1], got {alpha}")
        self.alpha = alpha
        self.beta = beta
        self.d_alpha = d_alpha
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None

    def __call__(self, x: np.ndarray, scale: float = 1.0) -> np.ndarray:
        """Filtered copy of ``x`` ``(K, 2)``; ``scale`` (face size in pixels) normalises speed."""
        x = np.asarray(x, np.float64)
        if self._x is None or self.alpha >= 1.0:
            self._x, self._dx = x.copy(), np.zeros_like(x)
            return x.astype(np.float32)
        dx = x - self._x
        self._dx = self.d_alpha * dx + (1 - self.d_alpha) * self._dx
        speed = np.linalg.norm(self._dx, axis=-1, keepdims=True) / max(scale, 1e-6)
        cutoff = _cutoff(self.alpha) + self.beta * speed
        a = 1.0 / (1.0 + 1.0 / (2.0 * math.pi * cutoff))
        self._x = a * x + (1 - a) * self._x
        return self._x.astype(np.float32)


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(x1 - x0, 0.0) * max(y1 - y0, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


class FaceTracks:
    """Assigns each frame's faces to tracks (greedy, by box IoU) and smooths each track's points."""

    def __init__(self, alpha: float, min_iou: float = 0.3, beta: float = 5.0) -> None:
        self.alpha = alpha
        self.beta = beta
        self.min_iou = min_iou
        self._tracks: dict[int, tuple[np.ndarray, OneEuroFilter]] = {}
        self._next_id = 0

    def update(self, boxes: list[np.ndarray], points: list[np.ndarray]) -> tuple[list[int], list[np.ndarray]]:
        """Track ids and smoothed points for this frame's faces (same order as given)."""
        pairs = sorted(((box_iou(b, tb), i, tid) for i, b in enumerate(boxes)
                        for tid, (tb, _) in self._tracks.items()), reverse=True)
        assigned: dict[int, int] = {}
        used: set[int] = set()
        for iou, i, tid in pairs:
            if iou < self.min_iou:
                break
            if i in assigned or tid in used:
                continue
            assigned[i] = tid
            used.add(tid)
        tracks: dict[int, tuple[np.ndarray, OneEuroFilter]] = {}
        ids, out = [], []
        for i, (box, pts) in enumerate(zip(boxes, points, strict=True)):
            tid = assigned.get(i)
            if tid is None:
                tid, self._next_id = self._next_id, self._next_id + 1
                filt = OneEuroFilter(self.alpha, self.beta)
            else:
                filt = self._tracks[tid][1]
            scale = float(max(box[2] - box[0], box[3] - box[1]))
            out.append(filt(pts, scale))
            tracks[tid] = (np.asarray(box, np.float64), filt)
            ids.append(tid)
        self._tracks = tracks
        return ids, out
