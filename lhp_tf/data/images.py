"""Decoding and cropping images in numpy/OpenCV: the one place pixels leave the disk.

Training decodes every image once into a loose, face-centred crop kept in memory (see
:class:`CropCache`); evaluation warps straight from the original image with the same
:func:`lhp_tf.data.crop.crop_transform` that inference uses with detector boxes.
Model inputs are RGB. This module imports neither TensorFlow nor Keras.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

from lhp_tf.data.crop import (
    apply_affine,
    compose,
    crop_transform,
    invert_affine,
    similarity,
    square_box,
)
from lhp_tf.data.sample import ProblemLog, Sample

#: Inter-ocular (outer eye corner) indices used for NME normalisation.
EYE_CORNERS = {68: (36, 45), 98: (60, 72)}


def decode(sample: Sample, log: ProblemLog) -> np.ndarray | None:
    """RGB uint8 image of a sample; an unreadable file is reported against its annotation line."""
    img = cv2.imread(sample.image_path, cv2.IMREAD_COLOR)
    if img is None:
        file, _, line = sample.source.rpartition(":")
        log.report(file or sample.source, int(line) if line.isdigit() else None,
                   f"unreadable image: {sample.image_path}")
        return None
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def warp(img: np.ndarray, m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Warp by image->target affine ``m`` into ``size`` (H, W), pre-shrinking to avoid aliasing."""
    h, w = size
    zoom = np.sqrt(abs(np.linalg.det(np.asarray(m, np.float64)[:, :2])))
    if zoom < 0.6:
        k = 1.0 / zoom / 1.25
        sw, sh = max(1, int(round(img.shape[1] / k))), max(1, int(round(img.shape[0] / k)))
        fx, fy = sw / img.shape[1], sh / img.shape[0]
        img = cv2.resize(img, (sw, sh), interpolation=cv2.INTER_AREA)
        # pixel-centre aligned: x_small = (x + 0.5) * f - 0.5
        shrink = np.array([[fx, 0, 0.5 * fx - 0.5], [0, fy, 0.5 * fy - 0.5]])
        m = compose(m, invert_affine(shrink))
    return cv2.warpAffine(img, np.asarray(m, np.float64), (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def _decode_all(samples: list[Sample], log: ProblemLog, fn) -> list:
    def one(s: Sample):
        img = cv2.imread(s.image_path, cv2.IMREAD_COLOR)
        return None if img is None else fn(s, cv2.cvtColor(img, cv2.COLOR_BGR2RGB))

    with ThreadPoolExecutor(2) as pool:
        out = list(pool.map(one, samples))
    for s, o in zip(samples, out, strict=True):
        if o is None:
            decode(s, log)  # reports with file and line (raises in stop mode)
    return out


@dataclass
class CropCache:
    """Loose crops of every sample: images (N, C, C, 3) uint8, landmarks (N, K, 2) in cache pixels.

    In cache coordinates every face's crop square is centred with side ``C / margin``, so
    augmentation is the same affine formula for every sample.
    """

    images: np.ndarray
    landmarks: np.ndarray
    img2cache: np.ndarray
    keep: np.ndarray
    margin: float

    @property
    def size(self) -> int:
        return int(self.images.shape[1])


def build_cache(samples: list[Sample], box_scale: float, size: int, margin: float, log: ProblemLog) -> CropCache:
    """Decode every image once into a loose crop (threads: OpenCV releases the GIL)."""
    def one(s: Sample, img: np.ndarray):
        centre, side = square_box(s.box, box_scale)
        m = similarity(centre, side * margin, size)
        return warp(img, m, (size, size)), m

    out = _decode_all(samples, log, one)
    keep = np.array([o is not None for o in out], bool)
    good = [o for o in out if o is not None]
    k = samples[0].landmarks.shape[0] if samples else 0
    images = np.stack([g[0] for g in good]) if good else np.zeros((0, size, size, 3), np.uint8)
    mats = np.stack([g[1] for g in good]).astype(np.float32) if good else np.zeros((0, 2, 3), np.float32)
    lms = np.stack([apply_affine(m, s.landmarks) for s, m in zip([s for s, ok in zip(samples, keep, strict=True) if ok],
                                                                 mats, strict=True)]) if good else np.zeros((0, k, 2), np.float32)
    return CropCache(images, lms.astype(np.float32), mats, keep, margin)


def inter_ocular(landmarks: np.ndarray) -> np.ndarray:
    """Outer-eye-corner distance per face (box diagonal of the landmarks for other schemes)."""
    lm = np.asarray(landmarks, np.float64)
    k = lm.shape[-2]
    if k in EYE_CORNERS:
        a, b = EYE_CORNERS[k]
        return np.linalg.norm(lm[..., a, :] - lm[..., b, :], axis=-1).astype(np.float32)
    span = lm.max(-2) - lm.min(-2)
    return np.linalg.norm(span, axis=-1).astype(np.float32)


@dataclass
class EvalArrays:
    """Model inputs and ground truth of an evaluation split (the bundle's content)."""

    images: np.ndarray       # (N, H, W, 3) uint8 RGB
    landmarks: np.ndarray    # (N, K, 2) image pixels
    crop2img: np.ndarray     # (N, 2, 3)
    norm: np.ndarray         # (N,)
    keep: np.ndarray         # (len(samples),) bool: decoded


def eval_arrays(samples: list[Sample], input_size: tuple[int, int], box_scale: float, log: ProblemLog) -> EvalArrays:
    """Crop every sample straight from its image with :func:`crop_transform` (no augmentation)."""
    h, w = input_size

    def one(s: Sample, img: np.ndarray):
        m = crop_transform(s.box, (h, w), box_scale)
        return warp(img, m, (h, w)), m

    out = _decode_all(samples, log, one)
    keep = np.array([o is not None for o in out], bool)
    kept = [s for s, ok in zip(samples, keep, strict=True) if ok]
    k = samples[0].landmarks.shape[0] if samples else 0
    if not kept:
        return EvalArrays(np.zeros((0, h, w, 3), np.uint8), np.zeros((0, k, 2), np.float32),
                          np.zeros((0, 2, 3), np.float32), np.zeros((0,), np.float32), keep)
    images = np.stack([o[0] for o in out if o is not None])
    mats = np.stack([o[1] for o in out if o is not None])
    lms = np.stack([s.landmarks for s in kept]).astype(np.float32)
    return EvalArrays(images, lms, invert_affine(mats).astype(np.float32), inter_ocular(lms), keep)
