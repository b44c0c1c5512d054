"""Evaluation figures drawn with OpenCV: the CED curve and images with landmarks.

OpenCV is already a dependency (the data pipeline reads images with it); matplotlib is not,
and a CED curve is a handful of polylines. Every PNG is written atomically.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np

from lhp_tf.checkpoint import atomic_write

_COLOURS = [(200, 80, 30), (40, 160, 40), (30, 30, 220), (160, 40, 160), (20, 150, 200),
            (120, 120, 0), (0, 90, 160), (90, 90, 90), (200, 150, 0), (0, 0, 0)]


def _write_png(path: str | os.PathLike[str], image: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"{path}: OpenCV could not encode the PNG")
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(buf.tobytes()))


def draw_ced(path: str | os.PathLike[str], curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
             threshold: float = 0.10, title: str = "CED") -> None:
    """Plot cumulative error distributions (xs as NME fractions, ys in [0, 1]) into a PNG."""
    w, h, left, right, top, bottom = 640, 480, 70, 20, 40, 60
    img = np.full((h, w, 3), 255, np.uint8)
    pw, ph = w - left - right, h - top - bottom

    def to_px(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        px = left + np.asarray(x) / threshold * pw
        py = top + (1.0 - np.asarray(y)) * ph
        return np.stack([px, py], axis=-1).round().astype(np.int32)

    font = cv2.FONT_HERSHEY_SIMPLEX
    for i in range(11):
        gx = left + i * pw // 10
        gy = top + i * ph // 10
        cv2.line(img, (gx, top), (gx, top + ph), (225, 225, 225), 1)
        cv2.line(img, (left, gy), (left + pw, gy), (225, 225, 225), 1)
        if i % 2 == 0:
            cv2.putText(img, f"{threshold * 100 * i / 10:g}", (gx - 8, top + ph + 18), font, 0.4,
                        (0, 0, 0), 1, cv2.LINE_AA)
            cv2.putText(img, f"{1.0 - i / 10:.1f}", (left - 32, gy + 4), font, 0.4, (0, 0, 0), 1,
                        cv2.LINE_AA)
    cv2.rectangle(img, (left, top), (left + pw, top + ph), (0, 0, 0), 1)
    cv2.putText(img, "NME (%)", (left + pw // 2 - 30, h - 15), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, title, (left, 25), font, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    for i, (name, (xs, ys)) in enumerate(curves.items()):
        colour = _COLOURS[i % len(_COLOURS)]
        cv2.polylines(img, [to_px(xs, ys)], False, colour, 2, cv2.LINE_AA)
        ly = top + 18 + 18 * i
        cv2.line(img, (left + pw - 170, ly - 4), (left + pw - 145, ly - 4), colour, 2)
        cv2.putText(img, name, (left + pw - 140, ly), font, 0.45, colour, 1, cv2.LINE_AA)
    _write_png(path, img)


def draw_landmarks(path: str | os.PathLike[str], image: np.ndarray, pred: np.ndarray,
                   truth: np.ndarray | None = None, box: Sequence[float] | None = None,
                   size: int = 320) -> None:
    """Image with true (green) and predicted (red) landmarks, cropped around the face box."""
    pts = [np.asarray(pred, np.float64)] + ([np.asarray(truth, np.float64)] if truth is not None else [])
    if box is not None:
        x0, y0, x1, y1 = (float(v) for v in box)
    else:
        allp = np.concatenate(pts)
        x0, y0 = allp.min(axis=0)
        x1, y1 = allp.max(axis=0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    side = max(x1 - x0, y1 - y0, 1.0) * 1.4
    scale = size / side
    m = np.array([[scale, 0, size / 2 - scale * cx], [0, scale, size / 2 - scale * cy]])
    crop = cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    if crop.ndim == 2:
        crop = cv2.cvtColor(crop, cv2.COLOR_GRAY2BGR)

    def mapped(p: np.ndarray) -> np.ndarray:
        return (p @ m[:, :2].T + m[:, 2]).round().astype(int)

    if truth is not None:
        for x, y in mapped(np.asarray(truth, np.float64)):
            cv2.circle(crop, (int(x), int(y)), 2, (0, 200, 0), -1, cv2.LINE_AA)
    for x, y in mapped(np.asarray(pred, np.float64)):
        cv2.circle(crop, (int(x), int(y)), 2, (0, 0, 255), -1, cv2.LINE_AA)
    _write_png(path, crop)
