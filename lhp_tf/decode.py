"""Heatmaps -> landmark coordinates, in numpy only (this module runs on boards).

All functions are vectorised over heatmaps shaped ``(N, h, w, K)`` and return coordinates
``(N, K, 2)`` as ``(x, y)`` in heatmap pixels, pixel centres at integer positions. These are
the numeric kernels; :class:`lhp_tf.codec.HeatmapCodec` owns the stride, the heatmap <-> crop
formula and the choice of decoder and kernel, and is what callers use.

With that pixel-centre convention a horizontal flip is exact in both spaces
(``x -> W - 1 - x`` in the crop is ``u -> w - 1 - u`` in the heatmap), so flip-test averaging
needs no half-pixel correction.
"""

from __future__ import annotations

import numpy as np

#: smallest value allowed inside the log of DARK (heatmaps are >= 0 after sigmoid, but MSE
#: models can output small negatives)
_LOG_FLOOR = 1e-10


def _check_heatmaps(heatmaps: np.ndarray) -> np.ndarray:
    hm = np.asarray(heatmaps, dtype=np.float64)
    if hm.ndim != 4:
        raise ValueError(f"heatmaps must be (N, h, w, K), got shape {hm.shape}")
    return hm


def _argmax(hm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer peak per (image, landmark): x (N, K), y (N, K) and the value there."""
    n, h, w, k = hm.shape
    flat = hm.transpose(0, 3, 1, 2).reshape(n, k, h * w)
    idx = flat.argmax(axis=2)
    maxvals = np.take_along_axis(flat, idx[..., None], axis=2)[..., 0]
    return idx % w, idx // w, maxvals


def _at(hm_nkhw: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Gather ``hm[n, k, y, x]`` for (N, K) index arrays, clamping to the border."""
    n, k, h, w = hm_nkhw.shape
    yc = np.clip(y, 0, h - 1)
    xc = np.clip(x, 0, w - 1)
    ni = np.arange(n)[:, None]
    ki = np.arange(k)[None, :]
    return hm_nkhw[ni, ki, yc, xc]


def decode_argmax(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Argmax plus the classic quarter-pixel shift toward the larger neighbour.

    Returns ``(coords (N, K, 2) in heatmap pixels, maxvals (N, K))``; the peak value is the
    confidence.
    """
    hm = _check_heatmaps(heatmaps)
    x, y, maxvals = _argmax(hm)
    hm_t = hm.transpose(0, 3, 1, 2)
    h, w = hm.shape[1:3]
    dx = _at(hm_t, y, x + 1) - _at(hm_t, y, x - 1)
    dy = _at(hm_t, y + 1, x) - _at(hm_t, y - 1, x)
    # No shift at the border: the missing neighbour would bias it outward.
    dx = np.where((x > 0) & (x < w - 1), dx, 0.0)
    dy = np.where((y > 0) & (y < h - 1), dy, 0.0)
    coords = np.stack([x + 0.25 * np.sign(dx), y + 0.25 * np.sign(dy)], axis=-1)
    return coords.astype(np.float32), maxvals.astype(np.float32)


def _gaussian_kernel_1d(size: int) -> np.ndarray:
    """OpenCV's default sigma for a kernel size, so ``kernel`` means what it means in DARK."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"DARK kernel size must be a positive odd integer, got {size}")
    sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    t = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-0.5 * (t / sigma) ** 2)
    return g / g.sum()


def _blur(hm: np.ndarray, size: int) -> np.ndarray:
    """Separable Gaussian blur over (h, w) of an (N, h, w, K) array, reflect-101 borders."""
    g = _gaussian_kernel_1d(size)
    r = size // 2
    out = hm
    for axis in (1, 2):
        pad = [(0, 0)] * 4
        pad[axis] = (r, r)
        padded = np.pad(out, pad, mode="reflect") if out.shape[axis] > r else np.pad(out, pad, mode="edge")
        length = out.shape[axis]
        acc = np.zeros_like(out)
        for i, gi in enumerate(g):
            acc += gi * np.take(padded, np.arange(i, i + length), axis=axis)
        out = acc
    return out


def decode_dark(heatmaps: np.ndarray, kernel: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """DARK decoding (Zhang et al. 2020): sub-pixel peak from a 2nd-order Taylor expansion.

    The heatmap is first Gaussian-modulated (blurred with a ``kernel``-tap Gaussian, rescaled
    to its original maximum) so that it is closer to the Gaussian the model was trained to
    produce; its log is then a quadratic whose maximum is ``argmax - H^-1 g``. Where the
    Hessian is not negative definite (flat or border peaks) the integer argmax is kept.
    Returns ``(coords (N, K, 2) in heatmap pixels, maxvals (N, K))`` like :func:`decode_argmax`.
    """
    hm = _check_heatmaps(heatmaps)
    x, y, maxvals = _argmax(hm)
    if kernel > 1:
        orig_max = hm.max(axis=(1, 2), keepdims=True)
        blurred = _blur(hm, kernel)
        blur_max = blurred.max(axis=(1, 2), keepdims=True)
        scale = np.where(blur_max > 0, orig_max / np.where(blur_max > 0, blur_max, 1.0), 1.0)
        hm = blurred * scale
    logh = np.log(np.maximum(hm, _LOG_FLOOR)).transpose(0, 3, 1, 2)

    c = _at(logh, y, x)
    xp, xm = _at(logh, y, x + 1), _at(logh, y, x - 1)
    yp, ym = _at(logh, y + 1, x), _at(logh, y - 1, x)
    dx = 0.5 * (xp - xm)
    dy = 0.5 * (yp - ym)
    dxx = xp - 2 * c + xm
    dyy = yp - 2 * c + ym
    dxy = 0.25 * (_at(logh, y + 1, x + 1) - _at(logh, y - 1, x + 1)
                  - _at(logh, y + 1, x - 1) + _at(logh, y - 1, x - 1))
    det = dxx * dyy - dxy * dxy
    h, w = logh.shape[2:]
    interior = (x > 0) & (x < w - 1) & (y > 0) & (y < h - 1)
    valid = interior & (dxx < 0) & (det > 1e-12)
    safe_det = np.where(valid, det, 1.0)
    # offset = -H^-1 g with H = [[dxx, dxy], [dxy, dyy]]
    ox = -(dyy * dx - dxy * dy) / safe_det
    oy = -(dxx * dy - dxy * dx) / safe_det
    ox = np.where(valid, np.clip(ox, -1.0, 1.0), 0.0)
    oy = np.where(valid, np.clip(oy, -1.0, 1.0), 0.0)
    coords = np.stack([x + ox, y + oy], axis=-1)
    return coords.astype(np.float32), maxvals.astype(np.float32)


def flip_heatmaps_back(heatmaps: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """Heatmaps predicted on a horizontally flipped crop -> heatmaps of the original crop.

    Mirrors the width axis and swaps left/right channels (``perm[i]`` is landmark i's mirror).
    Average the result with the unflipped prediction for flip testing.
    """
    hm = np.asarray(heatmaps)
    perm = np.asarray(perm, dtype=np.int64)
    if hm.ndim != 4 or perm.shape != (hm.shape[3],):
        raise ValueError(f"heatmaps (N, h, w, K) and a permutation of K expected, got {hm.shape} and {perm.shape}")
    return hm[:, :, ::-1, :][..., perm]


def crop_to_image(coords_crop: np.ndarray, crop2img: np.ndarray) -> np.ndarray:
    """Apply each image's (2, 3) crop->image affine to its (K, 2) crop points."""
    pts = np.asarray(coords_crop, dtype=np.float64)
    m = np.asarray(crop2img, dtype=np.float64)
    if pts.ndim != 3 or m.shape != (pts.shape[0], 2, 3):
        raise ValueError(f"coords (N, K, 2) and crop2img (N, 2, 3) expected, got {pts.shape} and {m.shape}")
    return np.einsum("nij,nkj->nki", m[:, :, :2], pts) + m[:, None, :, 2]
