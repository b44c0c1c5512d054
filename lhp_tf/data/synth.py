"""Synthetic faces in the real WFLW / 300W layouts, drawn with OpenCV from a 3D face model.

Why: the demo and CI need data that a landmark model can actually learn, with the same
on-disk layout as the real sets so the readers need no special case. The face is a
symmetric 3D model (head cross-sections, brows, eyes, nose, lips) whose features are
dense curves; landmarks are points *on* those curves, in iBUG-68 and WFLW-98 order, so
they sit exactly on the drawn strokes. Pose is a 3D rotation (yaw, pitch, roll) with
weak-perspective projection; the jaw landmarks follow the silhouette at each height, as
annotators place them. Every parameter has a mirror image (:func:`mirror`), so a mirrored
face carries exactly the flip-permuted landmarks.

This module imports neither TensorFlow nor Keras.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from lhp_tf.data import wflw

# ----------------------------------------------------------------------------- parameters

N_CONTOUR = 96          # dense silhouette samples per side (multiple of 8 and 16)
N_CURVE = 24            # dense samples per feature curve (multiple of 3 and 4)
HEAD_TOP = 1.35         # forehead height above the ear line, face units
Y0 = -0.12              # ear line (jaw point 0)
HALF_WIDTH = 0.98
JAW_DEPTH = 0.85        # cross-section depth / width
FRONT = 0.75            # depth of the face front


@dataclass
class Side:
    """Per-side expression, in that side's own frame (positive gaze = outward)."""

    brow_raise: float = 0.0
    eye_open: float = 1.0
    gaze: float = 0.0
    smile: float = 0.0


@dataclass
class FaceParams:
    """Everything that decides one synthetic image; :func:`mirror` maps it to its mirror image."""

    size: int = 256
    cx: float = 128.0
    cy: float = 128.0
    scale: float = 60.0              # pixels per face unit (half face width ~ 1)
    yaw: float = 0.0                 # degrees, positive turns the face to the image right
    pitch: float = 0.0
    roll: float = 0.0
    jaw_height: float = 1.2
    mouth_open: float = 0.0
    gaze_y: float = 0.0
    left: Side = field(default_factory=Side)    # image-left half
    right: Side = field(default_factory=Side)   # image-right half
    skin: tuple[float, float, float] = (150.0, 170.0, 210.0)   # BGR
    hair: tuple[float, float, float] = (30.0, 40.0, 60.0)
    lips: tuple[float, float, float] = (110.0, 110.0, 180.0)
    iris: tuple[float, float, float] = (40.0, 70.0, 100.0)
    light: tuple[float, float] = (0.3, -0.5)   # image-plane light direction
    light_strength: float = 0.25
    ambient: float = 1.0
    gain: float = 1.0
    cast: tuple[float, float, float] = (1.0, 1.0, 1.0)
    bg_colors: tuple[tuple[float, float, float], tuple[float, float, float]] = ((80.0, 90.0, 100.0), (160.0, 150.0, 140.0))
    bg_dir: tuple[float, float] = (0.6, 0.8)
    bg_shapes: tuple[tuple, ...] = ()          # (kind, coords tuple, color, thickness)
    eye_shadow: float = 0.0
    occluder: tuple | None = None              # (kind, x, y, w, h, angle, color) in face units
    blur_sigma: float = 0.0
    motion: tuple[float, float] = (0.0, 0.0)   # (length px, angle deg)
    attributes: dict[str, int] = field(default_factory=dict)


def mirror(p: FaceParams) -> FaceParams:
    """The parameters of the horizontally mirrored image."""
    w = p.size - 1

    def mx(x: float) -> float:
        return w - x

    shapes = []
    for kind, coords, color, thick in p.bg_shapes:
        c = list(coords)
        if kind in ("rect",):
            c = [mx(c[2]), c[1], mx(c[0]), c[3]]
        elif kind == "ellipse":
            c = [mx(c[0]), c[1], c[2], c[3], -c[4]]
        elif kind in ("circle",):
            c = [mx(c[0]), c[1], c[2]]
        else:  # line / poly: x, y pairs
            c = [mx(v) if i % 2 == 0 else v for i, v in enumerate(c)]
        shapes.append((kind, tuple(c), color, thick))
    occ = None
    if p.occluder is not None:
        kind, x, y, ow, oh, ang, color = p.occluder
        occ = (kind, -x, y, ow, oh, -ang, color)
    return dataclasses.replace(
        p, cx=mx(p.cx), yaw=-p.yaw, roll=-p.roll, left=p.right, right=p.left,
        light=(-p.light[0], p.light[1]), bg_dir=(-p.bg_dir[0], p.bg_dir[1]), bg_shapes=tuple(shapes),
        occluder=occ, motion=(p.motion[0], 180.0 - p.motion[1]))


# ----------------------------------------------------------------------------- geometry


def _head(y: np.ndarray, jaw_height: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cross-section at height y: half width a, half depth c, centre depth zc."""
    above = y < Y0
    r = np.where(above, (y - Y0) / HEAD_TOP, (y - Y0) / jaw_height)
    a = HALF_WIDTH * np.sqrt(np.clip(1.0 - r * r, 0.0, 1.0))
    c = JAW_DEPTH * a
    return a, c, FRONT - c


def _surface_z(x: np.ndarray, y: np.ndarray, jaw_height: float) -> np.ndarray:
    a, c, zc = _head(y, jaw_height)
    q = np.clip(1.0 - (x / np.maximum(a, 1e-6)) ** 2, 0.0, 1.0)
    return zc + c * np.sqrt(q)


def _silhouette(y: np.ndarray, jaw_height: float, yaw: float, sign: float) -> np.ndarray:
    """3D points on the yaw-dependent silhouette at heights y (sign -1: image left)."""
    a, c, zc = _head(y, jaw_height)
    t = math.radians(yaw)
    phi = np.arctan2(c * math.sin(t), a * math.cos(t))
    return np.stack([sign * a * np.cos(phi), y, zc + sign * c * np.sin(phi)], axis=-1)


def _half_curves(s: Side, p: FaceParams) -> dict[str, np.ndarray]:
    """Feature curves of the image-left half (x < 0), parameter t from outer to inner."""
    t = np.linspace(0.0, 1.0, N_CURVE + 1)
    xy: dict[str, tuple[np.ndarray, np.ndarray, float | np.ndarray]] = {}
    # brows: upper edge outer -> inner, lower edge tapering to the outer tip
    bx = -0.88 + 0.66 * t
    by = -0.50 - 0.085 * np.sin(np.pi * (0.12 + 0.76 * t)) - s.brow_raise * (0.05 + 0.05 * t)
    xy["brow_up"] = (bx, by, 0.02)
    xy["brow_lo"] = (bx, by + 0.025 + 0.075 * t ** 0.7, 0.02)
    # eyes: corners, upper and lower lids outer -> inner
    ex = -0.64 + 0.42 * t
    line = -0.215 + 0.03 * t
    op = max(s.eye_open, 0.04)
    xy["lid_up"] = (ex, line - op * 0.095 * np.sin(np.pi * t ** 0.9), 0.0)
    xy["lid_lo"] = (ex, line + op * 0.045 * np.sin(np.pi * t ** 1.1), 0.0)
    xy["iris"] = (np.array([-0.43 - 0.07 * s.gaze]), np.array([-0.205 + 0.03 * p.gaze_y]), 0.0)
    # nostrils: outer wing -> centre
    xy["nostril"] = (np.array([-0.24, -0.12, 0.0]), np.array([0.40, 0.455, 0.475]), np.array([0.06, 0.13, 0.2]))
    # mouth: corner -> centre
    ym = 0.74
    cxm = -(0.34 + 0.07 * s.smile)
    cym = ym - 0.08 * s.smile + 0.02 * p.mouth_open
    e = np.sin(np.pi * t / 2.0)
    mx = cxm * (1.0 - t)
    half_open = p.mouth_open / 2.0
    bow = 0.02 * np.clip((t - 0.75) / 0.25, 0, 1) ** 2
    xy["lip_up"] = (mx, cym + (ym - 0.105 - cym) * e ** 0.7 + bow, 0.05)
    xy["lip_lo"] = (mx, cym + (ym + half_open + 0.11 - cym) * e ** 0.8, 0.05)
    mxi = 0.92 * cxm * (1.0 - t)
    xy["in_up"] = (mxi, cym + (ym - half_open - cym) * e, 0.04)
    xy["in_lo"] = (mxi, cym + (ym + half_open - cym) * e, 0.04)
    # one surface evaluation for every curve: the renderer is Python-overhead bound
    names = list(xy)
    xs = np.concatenate([xy[k][0] for k in names])
    ys = np.concatenate([xy[k][1] for k in names])
    dz = np.concatenate([xy[k][2] + np.zeros_like(xy[k][0]) for k in names])
    pts = np.stack([xs, ys, _surface_z(xs, ys, p.jaw_height + 0.5 * p.mouth_open) + dz], axis=-1)
    out, i = {}, 0
    for k in names:
        n = len(xy[k][0])
        out[k] = pts[i:i + n]
        i += n
    return out


def _rotation(p: FaceParams) -> np.ndarray:
    y, x, z = (math.radians(v) for v in (p.yaw, p.pitch, p.roll))
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(x), -math.sin(x)], [0, math.sin(x), math.cos(x)]])
    rz = np.array([[math.cos(z), -math.sin(z), 0], [math.sin(z), math.cos(z), 0], [0, 0, 1]])
    return rz @ rx @ ry


def face_curves(p: FaceParams) -> dict[str, np.ndarray]:
    """Projected 2D curves (image pixels) of every feature; '_l' / '_r' halves are outer->inner."""
    flip = np.array([-1.0, 1.0, 1.0])
    curves3: dict[str, np.ndarray] = {}
    for name, c in _half_curves(p.left, p).items():
        curves3[name + "_l"] = c
    for name, c in _half_curves(p.right, p).items():
        curves3[name + "_r"] = c * flip
    jh = p.jaw_height + 0.5 * p.mouth_open
    alpha = np.linspace(0.0, np.pi / 2, N_CONTOUR + 1)
    ys = Y0 + jh * np.sin(alpha)
    curves3["jaw_l"] = _silhouette(ys, jh, p.yaw, -1.0)
    curves3["jaw_r"] = _silhouette(ys, jh, p.yaw, 1.0)
    top = Y0 - HEAD_TOP * np.sin(np.linspace(0.0, np.pi / 2 * 0.97, 24))
    curves3["head_l"] = _silhouette(top, jh, p.yaw, -1.0)
    curves3["head_r"] = _silhouette(top, jh, p.yaw, 1.0)
    by = np.array([-0.17, 0.0, 0.16, 0.33])
    curves3["bridge"] = np.stack([np.zeros(4), by, _surface_z(np.zeros(4), by, jh) + [0.03, 0.12, 0.25, 0.38]], -1)
    neck = np.array([[-0.5, 0.9, -0.45], [0.5, 0.9, -0.45], [0.62, 3.0, -0.45], [-0.62, 3.0, -0.45]])
    curves3["neck"] = neck
    r = _rotation(p)
    names = list(curves3)
    flat = np.concatenate([curves3[k] for k in names]) @ (r[:2].T * p.scale) + [p.cx, p.cy]
    out, i = {}, 0
    for k in names:
        n = len(curves3[k])
        out[k] = flat[i:i + n]
        i += n
    return out


def _pick(c: dict[str, np.ndarray], name: str, idx: list[int], side: str) -> list[np.ndarray]:
    return [c[f"{name}_{side}"][i] for i in idx]


def landmarks(c: dict[str, np.ndarray], num: int) -> np.ndarray:
    """Landmarks of a format (68 or 98) read off the projected curves."""
    n = N_CURVE
    third, quarter = n // 3, n // 4
    if num == 68:
        step = N_CONTOUR // 8
        jaw = [c["jaw_l"][j * step] for j in range(8)] + [c["jaw_l"][-1]] + \
              [c["jaw_r"][(16 - j) * step] for j in range(9, 17)]
        brows = _pick(c, "brow_up", [0, quarter, 2 * quarter, 3 * quarter, n], "l") + \
            _pick(c, "brow_up", [n, 3 * quarter, 2 * quarter, quarter, 0], "r")
        nose = list(c["bridge"]) + _pick(c, "nostril", [0, 1], "l") + [c["nostril_l"][2]] + \
            _pick(c, "nostril", [1, 0], "r")
        eye_l = [c["lid_up_l"][0], c["lid_up_l"][third], c["lid_up_l"][2 * third], c["lid_up_l"][n],
                 c["lid_lo_l"][2 * third], c["lid_lo_l"][third]]
        eye_r = [c["lid_up_r"][n], c["lid_up_r"][2 * third], c["lid_up_r"][third], c["lid_up_r"][0],
                 c["lid_lo_r"][third], c["lid_lo_r"][2 * third]]
        half = n // 2
        pts = jaw + brows + nose + eye_l + eye_r
    elif num == 98:
        step = N_CONTOUR // 16
        jaw = [c["jaw_l"][j * step] for j in range(16)] + [c["jaw_l"][-1]] + \
              [c["jaw_r"][(32 - j) * step] for j in range(17, 33)]
        brow_l = _pick(c, "brow_up", [0, quarter, 2 * quarter, 3 * quarter, n], "l") + \
            _pick(c, "brow_lo", [n, 3 * quarter, 2 * quarter, quarter], "l")
        brow_r = _pick(c, "brow_up", [n, 3 * quarter, 2 * quarter, quarter, 0], "r") + \
            _pick(c, "brow_lo", [quarter, 2 * quarter, 3 * quarter, n], "r")
        nose = list(c["bridge"]) + _pick(c, "nostril", [0, 1], "l") + [c["nostril_l"][2]] + \
            _pick(c, "nostril", [1, 0], "r")
        eye_l = [c["lid_up_l"][i] for i in (0, quarter, 2 * quarter, 3 * quarter, n)] + \
            [c["lid_lo_l"][i] for i in (3 * quarter, 2 * quarter, quarter)]
        eye_r = [c["lid_up_r"][i] for i in (n, 3 * quarter, 2 * quarter, quarter, 0)] + \
            [c["lid_lo_r"][i] for i in (quarter, 2 * quarter, 3 * quarter)]
        half = n // 2
        pts = jaw + brow_l + brow_r + nose + eye_l + eye_r
    else:
        raise ValueError(f"synthetic faces know 68 and 98 landmarks, not {num}")
    outer = [c["lip_up_l"][0], c["lip_up_l"][third], c["lip_up_l"][2 * third], c["lip_up_l"][n],
             c["lip_up_r"][2 * third], c["lip_up_r"][third], c["lip_up_r"][0],
             c["lip_lo_r"][third], c["lip_lo_r"][2 * third], c["lip_lo_l"][n],
             c["lip_lo_l"][2 * third], c["lip_lo_l"][third]]
    inner = [c["in_up_l"][0], c["in_up_l"][half], c["in_up_l"][n], c["in_up_r"][half], c["in_up_r"][0],
             c["in_lo_r"][half], c["in_lo_l"][n], c["in_lo_l"][half]]
    pts = pts + outer + inner
    if num == 98:
        pts = pts + [c["iris_l"][0], c["iris_r"][0]]
    return np.array(pts, np.float32)


# ----------------------------------------------------------------------------- drawing

_SHIFT = 4
_ONE = 1 << _SHIFT


def _fx(pts: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(pts, np.float64) * _ONE).astype(np.int32)


def _poly(img: np.ndarray, pts: np.ndarray, color, thickness: int = -1) -> None:
    p = _fx(pts).reshape(-1, 1, 2)
    if thickness < 0:
        cv2.fillPoly(img, [p], color, cv2.LINE_AA, _SHIFT)
    else:
        cv2.polylines(img, [p], False, color, thickness, cv2.LINE_AA, _SHIFT)


def _background(p: FaceParams) -> np.ndarray:
    n = p.size
    m = 32  # the gradient is smooth: compute it coarse, resize up (pixel-centre aligned)
    g = (np.arange(m, dtype=np.float32) + 0.5) * (n / m) - 0.5 - (n - 1) / 2.0
    u = (g[None, :] * p.bg_dir[0] + g[:, None] * p.bg_dir[1]) / (n / 2.0)
    t = np.clip(0.5 + 0.5 * u, 0.0, 1.0)[..., None]
    a, b = (np.array(v, np.float32) for v in p.bg_colors)
    small = (a * (1 - t) + b * t).astype(np.uint8)
    img = cv2.resize(small, (n, n), interpolation=cv2.INTER_LINEAR)
    for kind, coords, color, thick in p.bg_shapes:
        if kind == "rect":
            x0, y0, x1, y1 = coords
            _poly(img, np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]), color, -1 if thick < 0 else -1)
        elif kind == "circle":
            x, y, r = coords
            cv2.circle(img, tuple(_fx([x, y]).tolist()), int(round(r * _ONE)), color, thick, cv2.LINE_AA, _SHIFT)
        elif kind == "ellipse":
            x, y, ax, ay, ang = coords
            cv2.ellipse(img, tuple(_fx([x, y]).tolist()), (int(ax * _ONE), int(ay * _ONE)), ang, 0, 360,
                        color, thick, cv2.LINE_AA, _SHIFT)
        elif kind == "line":
            _poly(img, np.array(coords).reshape(-1, 2), color, max(thick, 1))
        else:
            _poly(img, np.array(coords).reshape(-1, 2), color, -1)
    return img


def _shade(img: np.ndarray, mask: np.ndarray, p: FaceParams, roi: tuple[int, int, int, int]) -> None:
    """Composite lit skin into ``img`` where ``mask`` (uint8, ROI-sized) is set."""
    x0, y0, x1, y1 = roi
    if x1 <= x0 or y1 <= y0:
        return
    k = max(3, int(p.scale * 0.2) | 1)
    soft = cv2.blur(cv2.blur(mask, (k, k)), (k, k))           # darker towards the outline
    f = 1.0 / (1.6 * p.scale)
    xs = (np.arange(x0, x1, dtype=np.float32) - np.float32(p.cx)) * np.float32(p.light[0] * f)
    ys = (np.arange(y0, y1, dtype=np.float32) - np.float32(p.cy)) * np.float32(p.light[1] * f)
    ramp = np.clip(xs[None, :] + ys[:, None], -1.0, 1.0)
    shade = (np.float32(p.ambient) * (1.0 + np.float32(p.light_strength) * ramp)) * \
        (np.float32(0.82) + np.float32(0.18 / 255.0) * soft)
    skin = cv2.merge([shade * np.float32(v) for v in p.skin])
    alpha = mask.astype(np.float32) * np.float32(1.0 / 255.0)
    sub = img[y0:y1, x0:x1].astype(np.float32)
    out = cv2.blendLinear(skin, sub, alpha, 1.0 - alpha)
    img[y0:y1, x0:x1] = np.clip(out, 0, 255).astype(np.uint8)


def _clip_draw(img: np.ndarray, clip: np.ndarray, draw) -> None:
    """Run ``draw(layer)`` on a copy and keep its pixels only inside polygon ``clip``."""
    h, w = img.shape[:2]
    x0, y0 = np.floor(clip.min(0)).astype(int) - 2
    x1, y1 = np.ceil(clip.max(0)).astype(int) + 3
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 <= x0 or y1 <= y0:
        return
    layer = img[y0:y1, x0:x1].copy()
    draw(layer, np.array([x0, y0], np.float64))
    mask = np.zeros(layer.shape[:2], np.uint8)
    _poly(mask, clip - [x0, y0], 255)
    a = mask.astype(np.float32)[..., None] / 255.0
    img[y0:y1, x0:x1] = (layer * a + img[y0:y1, x0:x1] * (1 - a)).astype(np.uint8)


def _darker(color, f: float) -> tuple[float, float, float]:
    return tuple(float(v) * f for v in color)


def render(p: FaceParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw a face: ``(image BGR uint8, landmarks68, landmarks98)`` in image pixels."""
    c = face_curves(p)
    img = _background(p)
    n = p.size
    # hair behind the head, then neck
    top = 0.5 * (c["head_l"][-1] + c["head_r"][-1])
    ear = 0.5 * (c["head_l"][0] + c["head_r"][0])
    hc = 0.5 * (top + ear)
    axes = (np.linalg.norm(c["head_r"][0] - c["head_l"][0]) * 0.56, np.linalg.norm(top - ear) * 0.62)
    cv2.ellipse(img, tuple(_fx(hc).tolist()), (int(axes[0] * _ONE), int(axes[1] * _ONE)), p.roll, 0, 360,
                p.hair, -1, cv2.LINE_AA, _SHIFT)
    _poly(img, c["neck"], _darker(p.skin, 0.8 * p.ambient))
    # face: silhouette polygon, lit skin
    outline = np.concatenate([c["head_l"][::-1], c["jaw_l"], c["jaw_r"][::-1], c["head_r"]])
    x0, y0 = np.maximum(np.floor(outline.min(0)).astype(int) - 2, 0)
    x1, y1 = np.minimum(np.ceil(outline.max(0)).astype(int) + 3, n)
    if x1 > x0 and y1 > y0:
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        _poly(mask, outline - [x0, y0], 255)
        _shade(img, mask, p, (x0, y0, x1, y1))
    # hair cap over the top of the forehead
    k = 9
    cap = np.concatenate([c["head_l"][k:][::-1], c["head_r"][k:]])
    _poly(img, cap, p.hair)
    # brows
    brow = _darker(p.hair, 0.9)
    for s in "lr":
        _poly(img, np.concatenate([c[f"brow_up_{s}"], c[f"brow_lo_{s}"][::-1]]), brow)
    # eyes
    lid = max(1, int(round(p.scale * 0.025)))
    for s in "lr":
        up, lo = c[f"lid_up_{s}"], c[f"lid_lo_{s}"]
        if p.eye_shadow > 0:
            shadow = np.concatenate([up, (up + [0, -p.scale * 0.07])[::-1]])
            _poly(img, shadow, (120.0 * p.eye_shadow + 60, 60.0, 110.0 * p.eye_shadow + 40))
        eye = np.concatenate([up, lo[::-1]])
        _poly(img, eye, (225.0, 232.0, 238.0))
        iris_c = c[f"iris_{s}"][0]

        def draw_iris(layer: np.ndarray, off: np.ndarray, iris_c: np.ndarray = iris_c) -> None:
            cen = tuple(_fx(iris_c - off).tolist())
            cv2.circle(layer, cen, int(p.scale * 0.085 * _ONE), p.iris, -1, cv2.LINE_AA, _SHIFT)
            cv2.circle(layer, cen, int(p.scale * 0.035 * _ONE), (15.0, 15.0, 15.0), -1, cv2.LINE_AA, _SHIFT)

        _clip_draw(img, eye, draw_iris)
        _poly(img, up, (25.0, 25.0, 30.0), lid)
        _poly(img, lo, _darker(p.skin, 0.55), 1)
    # nose
    line = max(1, int(round(p.scale * 0.015)))
    _poly(img, c["bridge"], _darker(p.skin, 0.72 * p.ambient), line)
    nostril = np.concatenate([c["nostril_l"], c["nostril_r"][::-1][1:]])
    _poly(img, nostril, _darker(p.skin, 0.5 * p.ambient), line + 1)
    for s in "lr":
        q = c[f"nostril_{s}"]
        cen = 0.5 * (q[0] + q[1]) + [0.0, -p.scale * 0.03]
        cv2.ellipse(img, tuple(_fx(cen).tolist()), (int(p.scale * 0.045 * _ONE), int(p.scale * 0.022 * _ONE)),
                    p.roll, 0, 360, _darker(p.skin, 0.35), -1, cv2.LINE_AA, _SHIFT)
    # mouth
    outer = np.concatenate([c["lip_up_l"], c["lip_up_r"][::-1][1:], c["lip_lo_r"][1:], c["lip_lo_l"][::-1][1:]])
    _poly(img, outer, p.lips)
    inner = np.concatenate([c["in_up_l"], c["in_up_r"][::-1][1:], c["in_lo_r"][1:], c["in_lo_l"][::-1][1:]])
    if p.mouth_open > 0.03:
        _poly(img, inner, (40.0, 30.0, 60.0))
        teeth_lo = c["in_up_l"] + [0.0, p.scale * min(p.mouth_open * 0.4, 0.05)]
        teeth = np.concatenate([c["in_up_l"], c["in_up_r"][::-1][1:],
                                (c["in_up_r"] + [0.0, p.scale * min(p.mouth_open * 0.4, 0.05)])[1:],
                                teeth_lo[::-1][1:]])
        _poly(img, teeth, (215.0, 225.0, 230.0))
    _poly(img, np.concatenate([c["in_up_l"], c["in_up_r"][::-1][1:]]), _darker(p.lips, 0.5), line)
    # occluder
    if p.occluder is not None:
        kind, ox, oy, ow, oh, ang, color = p.occluder
        r = _rotation(p)
        jh = p.jaw_height + 0.5 * p.mouth_open
        centre3 = np.array([ox, oy, float(_surface_z(np.array(ox), np.array(oy), jh)) + 0.3])
        cen = (r @ centre3)[:2] * p.scale + [p.cx, p.cy]
        axes = (int(ow * p.scale * _ONE), int(oh * p.scale * _ONE))
        if kind == "ellipse":
            cv2.ellipse(img, tuple(_fx(cen).tolist()), axes, ang + p.roll, 0, 360, color, -1, cv2.LINE_AA, _SHIFT)
        else:
            a = math.radians(ang + p.roll)
            u = np.array([math.cos(a), math.sin(a)]) * ow * p.scale
            v = np.array([-math.sin(a), math.cos(a)]) * oh * p.scale
            _poly(img, np.array([cen - u - v, cen + u - v, cen + u + v, cen - u + v]), color)
            stripe = _darker(color, 0.6)
            for f in (-0.5, 0.0, 0.5):
                _poly(img, np.array([cen - u + v * f, cen + u + v * f]), stripe, max(1, int(p.scale * 0.03)))
    # illumination, blur
    if p.gain != 1.0 or p.cast != (1.0, 1.0, 1.0):
        img = cv2.transform(img, np.diag(p.gain * np.array(p.cast, np.float32)))
    if p.motion[0] >= 1.0:
        # long kernels: filter at half resolution (4x cheaper; the result is smooth anyway)
        half = p.motion[0] > 8
        src = cv2.resize(img, (n // 2, n // 2), interpolation=cv2.INTER_AREA) if half else img
        k = _motion_kernel(p.motion[0] / 2 if half else p.motion[0], p.motion[1])
        img = cv2.filter2D(src, -1, k, borderType=cv2.BORDER_REFLECT)
        if half:
            img = cv2.resize(img, (n, n), interpolation=cv2.INTER_LINEAR)
    if p.blur_sigma > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), p.blur_sigma, borderType=cv2.BORDER_REFLECT)
    return img, landmarks(c, 68), landmarks(c, 98)


def _motion_kernel(length: float, angle: float) -> np.ndarray:
    """A line kernel built analytically so its mirror equals the mirrored angle's kernel."""
    r = int(math.ceil(length / 2))
    g = np.arange(-r, r + 1, dtype=np.float64)
    x, y = np.meshgrid(g, g)
    a = math.radians(angle)
    along = x * math.cos(a) + y * math.sin(a)
    across = -x * math.sin(a) + y * math.cos(a)
    k = np.clip(1.0 - np.abs(across), 0, 1) * (np.abs(along) <= length / 2)
    return (k / k.sum()).astype(np.float32)


# ----------------------------------------------------------------------------- sampling

ATTRS = wflw.ATTRIBUTES


def _color(rng: np.random.Generator, lo, hi) -> tuple[float, float, float]:
    return tuple(float(v) for v in rng.uniform(lo, hi))


def sample_params(rng: np.random.Generator, size: int, force: frozenset[str] = frozenset(),
                  hard: float = 0.15) -> FaceParams:
    """Random face; attributes in ``force`` are switched on, others appear with probability ``hard``."""
    on = {a: int(a in force or rng.random() < hard) for a in ATTRS}
    large = on["largepose"]
    yaw = float(rng.uniform(28, 42) * rng.choice([-1, 1])) if large and rng.random() < 0.7 else float(rng.normal(0, 10))
    roll = float(rng.uniform(28, 45) * rng.choice([-1, 1])) if large and abs(yaw) < 28 else float(rng.normal(0, 8))
    yaw = float(np.clip(yaw, -25, 25)) if not large else yaw
    roll = float(np.clip(roll, -25, 25)) if not large else roll
    pitch = float(rng.normal(0, 8 if not large else 14))
    if on["expression"]:
        kind = rng.integers(3)
        mouth = float(rng.uniform(0.2, 0.4)) if kind != 1 else float(rng.uniform(0, 0.08))
        smile = float(rng.uniform(0.6, 1.0)) if kind != 0 else float(rng.uniform(0, 0.3))
        brow = float(rng.uniform(0.5, 1.0)) if kind == 0 else float(rng.uniform(-0.2, 0.3))
    else:
        mouth = float(rng.choice([0.0, rng.uniform(0.0, 0.1)]))
        smile = float(rng.uniform(-0.2, 0.4))
        brow = float(rng.uniform(-0.3, 0.3))
    gaze = float(rng.normal(0, 0.5))

    def side() -> Side:
        return Side(brow_raise=brow + float(rng.normal(0, 0.1)), eye_open=float(np.clip(rng.normal(1.0, 0.15), 0.5, 1.4)),
                    gaze=gaze, smile=smile + float(rng.normal(0, 0.05)))

    left, right = side(), side()
    right = dataclasses.replace(right, gaze=-gaze)
    scale = float(rng.uniform(0.17, 0.27) * size)
    margin = 1.1 * scale
    cx = float(rng.uniform(margin, size - 1 - margin))
    cy = float(rng.uniform(margin * 0.9, size - 1 - margin * 1.1))
    tone = rng.uniform(0, 1)
    skin = tuple(float(v) for v in np.array([70, 95, 140]) + tone * np.array([120, 110, 95]) + rng.normal(0, 8, 3))
    hair = _color(rng, (10, 15, 20), (90, 110, 150)) if rng.random() < 0.8 else _color(rng, (150, 170, 190), (200, 220, 240))
    makeup = on["makeup"]
    lips = _color(rng, (60, 30, 150), (120, 70, 230)) if makeup else tuple(float(v) for v in np.array(skin) * [0.7, 0.65, 0.95])
    illum = on["illumination"]
    light_a = float(rng.uniform(0, 2 * np.pi))
    light = (math.cos(light_a), math.sin(light_a))
    if illum:
        strength = float(rng.uniform(0.5, 0.8))
        gain = float(rng.choice([rng.uniform(0.35, 0.55), rng.uniform(1.35, 1.7)]))
        cast = _color(rng, (0.75, 0.75, 0.75), (1.25, 1.25, 1.25))
    else:
        strength, gain, cast = float(rng.uniform(0.1, 0.3)), float(rng.uniform(0.85, 1.15)), (1.0, 1.0, 1.0)
    shapes = []
    for _ in range(int(rng.integers(4, 14))):
        kind = str(rng.choice(["rect", "circle", "ellipse", "line", "poly"]))
        color = _color(rng, (0, 0, 0), (255, 255, 255))
        xy = rng.uniform(-0.1 * size, 1.1 * size, 6)
        if kind == "rect":
            coords = (min(xy[0], xy[1]), min(xy[2], xy[3]), max(xy[0], xy[1]), max(xy[2], xy[3]))
        elif kind == "circle":
            coords = (xy[0], xy[1], rng.uniform(0.02, 0.2) * size)
        elif kind == "ellipse":
            coords = (xy[0], xy[1], rng.uniform(0.02, 0.2) * size, rng.uniform(0.02, 0.2) * size, rng.uniform(0, 180))
        else:
            coords = tuple(xy)
        thick = int(rng.choice([-1, 1, 2, 3])) if kind in ("circle", "ellipse", "line") else -1
        if kind == "line":
            thick = max(thick, 1)
        shapes.append((kind, tuple(float(v) for v in coords), color, thick))
    occ = None
    if on["occlusion"]:
        kind = str(rng.choice(["ellipse", "rect"]))
        target = rng.integers(4)
        ox, oy = [(-0.45, -0.25), (0.0, 0.75), (-0.6, 0.45), (0.0, -0.2)][target]
        ow, oh = [(0.35, 0.2), (0.5, 0.25), (0.3, 0.45), (0.85, 0.16)][target]
        occ = (kind, float(ox * rng.choice([-1, 1]) + rng.normal(0, 0.05)), float(oy + rng.normal(0, 0.05)),
               float(ow), float(oh), float(rng.uniform(-30, 30)), _color(rng, (0, 0, 0), (255, 255, 255)))
    blur, motion = 0.0, (0.0, 0.0)
    if on["blur"]:
        if rng.random() < 0.5:
            blur = float(rng.uniform(0.012, 0.025) * size)
        else:
            motion = (float(rng.uniform(0.03, 0.06) * size), float(rng.uniform(0, 180)))
    elif rng.random() < 0.3:
        blur = float(rng.uniform(0.0, 0.004) * size)
    return FaceParams(
        size=size, cx=cx, cy=cy, scale=scale, yaw=yaw, pitch=pitch, roll=roll,
        jaw_height=float(rng.uniform(1.1, 1.3)), mouth_open=mouth, gaze_y=float(rng.normal(0, 0.3)),
        left=left, right=right, skin=skin, hair=hair, lips=lips, iris=_color(rng, (20, 30, 30), (140, 120, 110)),
        light=light, light_strength=strength, ambient=float(rng.uniform(0.85, 1.05)), gain=gain, cast=cast,
        bg_colors=(_color(rng, (0, 0, 0), (255, 255, 255)), _color(rng, (0, 0, 0), (255, 255, 255))),
        bg_dir=(float(rng.normal()), float(rng.normal())), bg_shapes=tuple(shapes),
        eye_shadow=float(rng.uniform(0.5, 1.0)) if makeup else 0.0, occluder=occ, blur_sigma=blur, motion=motion,
        attributes=on)


# ----------------------------------------------------------------------------- writing datasets

#: 300W folders in the order small sets fill them (each folder gets one before any repeats).
_W300_CYCLE = (
    "afw", "helen/trainset", "lfpw/trainset", "helen/testset", "lfpw/testset", "ibug",
    "300W/01_Indoor", "300W/02_Outdoor", "helen/trainset", "lfpw/trainset", "helen/trainset",
    "afw", "helen/trainset", "lfpw/trainset", "helen/trainset", "300W/01_Indoor", "helen/trainset",
    "lfpw/trainset", "helen/trainset", "helen/trainset",
)
_WFLW_CYCLE = ("test", "train", "train", "train")


def _write_image(path: Path, img: np.ndarray) -> None:
    if path.suffix == ".png":
        ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    else:
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 92])
    if not ok:
        raise OSError(f"cannot encode {path}")
    path.write_bytes(buf.tobytes())


def _pts_text(lm: np.ndarray) -> str:
    rows = "\n".join(f"{x + 1:.4f} {y + 1:.4f}" for x, y in lm)
    return f"version: 1\nn_points:  {len(lm)}\n{{\n{rows}\n}}\n"


def _wflw_line(lm: np.ndarray, box: np.ndarray, attrs: dict[str, int], name: str) -> str:
    coords = " ".join(f"{v:.6f}" for v in lm.ravel())
    rect = " ".join(str(int(round(v))) for v in box)
    flags = " ".join(str(attrs[a]) for a in ATTRS)
    return f"{coords} {rect} {flags} {name}"


def _render_job(job: tuple[FaceParams, str, str]) -> tuple[np.ndarray, np.ndarray]:
    """Worker: draw one face, write its image (and .pts), return both landmark sets."""
    p, image_path, pts_path = job
    img, lm68, lm98 = render(p)
    _write_image(Path(image_path), img)
    if pts_path:
        Path(pts_path).write_text(_pts_text(lm68))
    return lm68, lm98


def _run_jobs(jobs: list[tuple[FaceParams, str, str]], workers: int) -> list[tuple[np.ndarray, np.ndarray]]:
    if workers <= 1 or len(jobs) < 64:
        return [_render_job(j) for j in jobs]
    import multiprocessing as mp

    with mp.get_context("fork").Pool(workers) as pool:
        return pool.map(_render_job, jobs, chunksize=32)


@dataclass
class Job:
    """One planned image: its parameters, where it goes and (WFLW) its split and box padding."""

    params: FaceParams
    image: Path
    pts: Path | None
    split: str
    name: str
    pad: np.ndarray


def plan(fmt: str, out: Path, num: int, seed: int, image_size: int = 256) -> list[Job]:
    """The images a dataset of ``num`` faces consists of; a pure function of the arguments."""
    out = Path(out)
    rng = np.random.default_rng([seed, 0x5EED])
    jobs = []
    if fmt == "300w":
        for i in range(num):
            folder = _W300_CYCLE[i % len(_W300_CYCLE)]
            hard = 0.45 if folder == "ibug" else 0.15
            force = frozenset({str(rng.choice(ATTRS))}) if folder == "ibug" else frozenset()
            p = sample_params(rng, image_size, force, hard)
            stem = f"synth_{i:06d}"
            image = out / folder / (f"{stem}.png" if i % 20 == 7 else f"{stem}.jpg")
            jobs.append(Job(p, image, out / folder / f"{stem}.pts", folder, stem, np.zeros((2, 2))))
    elif fmt == "wflw":
        n_test = 0
        for i in range(num):
            split = _WFLW_CYCLE[i % len(_WFLW_CYCLE)]
            force: frozenset[str] = frozenset()
            if split == "test":
                force = frozenset({ATTRS[n_test % len(ATTRS)]})
                n_test += 1
            p = sample_params(rng, image_size, force, 0.12)
            name = f"{i % 7}--Synth_{split}/synth_{i:06d}.jpg"
            jobs.append(Job(p, out / wflw.IMAGES / name, None, split, name, rng.uniform(0.0, 0.08, 4).reshape(2, 2)))
    else:
        raise ValueError(f"unknown format {fmt!r}")
    return jobs


def generate(fmt: str, out: Path, num: int, seed: int, image_size: int = 256,
             workers: int | None = None) -> dict[str, int]:
    """Write ``num`` synthetic faces in ``fmt``'s real layout under ``out``; returns counts per folder/split.

    Parameters are drawn in one sequential stream (:func:`plan`, deterministic by seed);
    drawing and encoding run on ``workers`` processes (default: all cores).
    """
    out = Path(out)
    workers = (os.cpu_count() or 1) if workers is None else workers
    jobs = plan(fmt, out, num, seed, image_size)
    for j in jobs:
        j.image.parent.mkdir(parents=True, exist_ok=True)
    results = _run_jobs([(j.params, str(j.image), str(j.pts) if j.pts else "") for j in jobs], workers)
    counts: dict[str, int] = {}
    if fmt == "300w":
        for j in jobs:
            counts[j.split] = counts.get(j.split, 0) + 1
        return counts
    lines: dict[str, list[str]] = {"train": [], "test": []}
    for (_, lm98), j in zip(results, jobs, strict=True):
        lo, hi = lm98.min(0), lm98.max(0)
        box = np.concatenate([lo - j.pad[0] * (hi - lo), hi + j.pad[1] * (hi - lo)])
        lines[j.split].append(_wflw_line(lm98, box, j.params.attributes, j.name))
    for split, rows in lines.items():
        _write_lines(wflw.annotation_file(out, split), rows)
        counts[split] = len(rows)
    for k, a in enumerate(ATTRS):
        rows = [r for r in lines["test"] if r.split()[200 + k] == "1"]
        _write_lines(wflw.annotation_file(out, a), rows)
        counts[a] = len(rows)
    return counts


def _write_lines(file: Path, rows: list[str]) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text("\n".join(rows) + ("\n" if rows else ""))


#: Bump when the drawing or the landmark tables change: cached sets of older versions are redrawn.
SYNTH_VERSION = "2"
_VERSION_FILE = ".synth-version"


def is_current(target: Path) -> bool:
    """Whether ``target`` holds a complete set drawn by this generator version."""
    marker = Path(target) / _VERSION_FILE
    return marker.is_file() and marker.read_text().strip() == SYNTH_VERSION


def materialise(fmt: str, target: Path, num: int, seed: int, image_size: int) -> Path:
    """Generate into ``target`` once, atomically (temp folder, then rename); reuse afterwards.

    A set drawn by an older generator (``SYNTH_VERSION``) is redrawn and swapped in.
    """
    target = Path(target)
    if is_current(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".tmp-{target.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    generate(fmt, tmp, num, seed, image_size)
    (tmp / _VERSION_FILE).write_text(SYNTH_VERSION + "\n")
    if is_current(target):  # another process (a second worker) finished first: keep its set
        shutil.rmtree(tmp, ignore_errors=True)
        return target
    if target.is_dir():  # stale version: move it aside, then swap
        old = target.parent / f".old-{target.name}-{os.getpid()}"
        try:
            os.rename(target, old)
            shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass
    try:
        os.rename(tmp, target)
    except OSError:
        if not target.is_dir():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return target
