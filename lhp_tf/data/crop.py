"""Face box -> model-input affine (numpy only; inference uses it with detector boxes).

The crop is the box scaled by ``box_scale`` about its centre and made square (the longer
side wins); it maps onto the ``H x W`` input with pixel centres aligned, so the crop's
pixel ``(0, 0)`` and ``(W-1, H-1)`` centres sit half a crop pixel inside the square's corners.
"""

from __future__ import annotations

import numpy as np


def square_box(box: np.ndarray, box_scale: float) -> tuple[np.ndarray, float]:
    """Centre (x, y) and side of the square crop for a face box."""
    x0, y0, x1, y1 = (float(v) for v in np.asarray(box).reshape(4))
    centre = np.array([(x0 + x1) / 2.0, (y0 + y1) / 2.0])
    side = max(x1 - x0, y1 - y0, 1.0) * box_scale
    return centre, side


def similarity(centre: np.ndarray, side: float, input_size: tuple[int, int] | int,
               angle_deg: float = 0.0, flip: bool = False, shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Image->crop affine of a square of ``side`` pixels about ``centre``, rotated and mirrored.

    Rotation is counter-clockwise on screen by ``angle_deg``; ``shift`` moves the square's
    centre by fractions of its side; ``flip`` mirrors the crop horizontally.
    """
    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    scale = np.array([w / side, h / side])
    a = np.deg2rad(angle_deg)
    c, s = np.cos(a), np.sin(a)
    # image -> centred, rotated, scaled coordinates
    rot = np.array([[c, s], [-s, c]])
    lin = np.diag(scale) @ rot
    centre = np.asarray(centre, np.float64) + np.asarray(shift, np.float64) * side
    out_centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
    t = out_centre - lin @ centre
    m = np.concatenate([lin, t[:, None]], axis=1)
    if flip:
        m = np.array([[-1.0, 0.0, w - 1.0], [0.0, 1.0, 0.0]]) @ np.vstack([m, [0, 0, 1]])
    return m.astype(np.float64)


def crop_transform(box: np.ndarray, input_size: tuple[int, int] | int, box_scale: float) -> np.ndarray:
    """The image->crop 2x3 affine for a face box (x_min, y_min, x_max, y_max)."""
    centre, side = square_box(box, box_scale)
    return similarity(centre, side, input_size).astype(np.float32)


def invert_affine(m: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine (works on a batch ``(..., 2, 3)``)."""
    m = np.asarray(m, np.float64)
    lin = m[..., :2]
    inv = np.linalg.inv(lin)
    t = -np.einsum("...ij,...j->...i", inv, m[..., 2])
    return np.concatenate([inv, t[..., None]], axis=-1)


def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """``outer`` after ``inner`` as one 2x3 affine."""
    o = np.vstack([np.asarray(outer, np.float64), [0, 0, 1]])
    i = np.vstack([np.asarray(inner, np.float64), [0, 0, 1]])
    return (o @ i)[:2]


def apply_affine(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map ``(..., K, 2)`` points through a (batch of) 2x3 affine(s)."""
    m = np.asarray(m, np.float64)
    p = np.asarray(points, np.float64)
    return (np.einsum("...ij,...kj->...ki", m[..., :2], p) + m[..., None, :, 2]).astype(np.float32)
