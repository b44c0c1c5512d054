"""Landmarks on real images: ``LandmarkDetector.from_path(model)(image_bgr) -> list[FaceLandmarks]``.

One API over both model kinds a user has: a ``.keras`` checkpoint and an exported ``.tflite``.
Each carries its :class:`lhp_tf.spec.ModelSpec` (input size, box scale, landmark count, heatmap
codec), so neither needs a recipe. The ``.tflite`` path imports neither TensorFlow nor Keras,
so it runs on a board with numpy, OpenCV and an interpreter.

Each face is cropped exactly as in training: the face box (the landmarks' bounding box, or a
detector's estimate of it, see :func:`lhp_tf.face_detect.landmark_box`) is scaled by
``box_scale``, made square and warped to the model input; decoded heatmap peaks are mapped
back to image pixels through the inverse warp.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from lhp_tf.codec import landmarks_from_crops
from lhp_tf.data.crop import crop_transform, invert_affine
from lhp_tf.errors import LhpError
from lhp_tf.spec import ModelSpec

#: heatmaps from a batch of uint8 crops ``(N, H, W, 3)`` -> ``(N, h, w, K)``
Backend = Callable[[np.ndarray], np.ndarray]


@dataclass
class FaceLandmarks:
    """One face: landmarks in image pixels, a confidence per landmark and the box they came from."""

    box: np.ndarray  #: (4,) x_min, y_min, x_max, y_max: the face box the crop was made from
    landmarks: np.ndarray  #: (K, 2) image pixels (x, y)
    confidence: np.ndarray  #: (K,) heatmap peak value (a probability for sigmoid models)
    score: float | None = None  #: the face detector's score; None when the box was given

    def to_dict(self, decimals: int = 2) -> dict[str, Any]:
        """JSON-ready: ``{"box", "landmarks", "confidence"[, "score"]}``."""
        out: dict[str, Any] = {
            "box": [round(float(v), decimals) for v in self.box],
            "landmarks": [[round(float(x), decimals), round(float(y), decimals)] for x, y in self.landmarks],
            "confidence": [round(float(c), 4) for c in self.confidence],
        }
        if self.score is not None:
            out["score"] = round(float(self.score), 4)
        return out


def _tflite_backend(path: Path, num_threads: int) -> tuple[Backend, ModelSpec]:
    from lhp_tf.runtime import TFLiteModel

    model = TFLiteModel(path, num_threads=num_threads)
    if model.spec is None:
        raise LhpError(f"{path}: this .tflite carries no lhp_tf model spec (box scale, landmark scheme, "
                       "heatmap codec): export it with 'lhp convert', which embeds it")
    return model.predict, model.spec


def _keras_backend(path: Path, recipe_path: str | os.PathLike[str] | None) -> tuple[Backend, ModelSpec]:
    from lhp_tf.converters.run_folder import find_recipe
    from lhp_tf.evaluate import heatmap_fn
    from lhp_tf.model.network import load_trained, with_activation

    model, spec = load_trained(path, find_recipe(path, recipe_path, required=False))
    infer = heatmap_fn(with_activation(model, spec.codec.activation))

    def run(crops: np.ndarray) -> np.ndarray:
        return np.asarray(infer(crops.astype(np.float32) / 255.0), dtype=np.float32)

    return run, spec


class LandmarkDetector:
    """Faces in, landmarks out: ``detector(image_bgr, boxes=None) -> list[FaceLandmarks]``.

    Without ``boxes`` the faces are found by the bundled BlazeFace detector
    (:class:`lhp_tf.face_detect.FaceDetector`), created on first need.
    """

    def __init__(self, backend: Backend, spec: ModelSpec, face_detector: Any = None,
                 decoder: str | None = None, detector_variant: str = "short", num_threads: int = 1,
                 source: str = "") -> None:
        self.backend = backend
        self.spec = spec
        self.codec = spec.codec.with_decoder(decoder)
        self.source = source
        self._face_detector = face_detector
        self._detector_variant = detector_variant
        self._num_threads = num_threads

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], *, recipe: str | os.PathLike[str] | None = None,
                  decoder: str | None = None, detector: str = "short", num_threads: int = 1) -> LandmarkDetector:
        """Load a ``.tflite`` (no TensorFlow) or a ``.keras`` checkpoint; each carries its spec.

        ``recipe`` is needed only for a checkpoint saved before checkpoints carried a spec;
        ``decoder`` overrides the model's codec's decoder.
        """
        p = Path(path)
        if not p.is_file():
            raise LhpError(f"{p}: model file not found")
        if p.suffix == ".tflite":
            backend, spec = _tflite_backend(p, num_threads)
        elif p.suffix == ".keras":
            backend, spec = _keras_backend(p, recipe)
        else:
            raise LhpError(f"{p}: unknown model type {p.suffix!r}: expected a .keras checkpoint or a .tflite")
        return cls(backend, spec, decoder=decoder, detector_variant=detector, num_threads=num_threads,
                   source=str(p))

    @property
    def face_detector(self) -> Any:
        if self._face_detector is None:
            from lhp_tf.face_detect import FaceDetector

            self._face_detector = FaceDetector(self._detector_variant, num_threads=self._num_threads)
        return self._face_detector

    def find_faces(self, image_bgr: np.ndarray) -> list[tuple[np.ndarray, float]]:
        """``(landmark box, detector score)`` for every face the detector finds, best first."""
        from lhp_tf.face_detect import landmark_box

        return [(landmark_box(d.box), d.score) for d in self.face_detector(image_bgr)]

    def crop(self, image_bgr: np.ndarray, box: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
        """The model-input crop (uint8, the model's channel order) and its image->crop affine."""
        h, w = self.spec.input_size
        m = crop_transform(np.asarray(box, np.float32), (h, w), self.spec.box_scale)
        crop = cv2.warpAffine(image_bgr, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        return cv2.cvtColor(crop, cv2.COLOR_BGR2RGB), m

    def predict_boxes(self, image_bgr: np.ndarray, boxes: Sequence[Sequence[float]],
                      scores: Sequence[float | None] | None = None) -> list[FaceLandmarks]:
        """Landmarks for faces whose boxes (x_min, y_min, x_max, y_max) are known."""
        image_bgr = _as_bgr(image_bgr)
        if len(boxes) == 0:
            return []
        crops, mats = zip(*(self.crop(image_bgr, b) for b in boxes), strict=True)
        k = self.spec.num_landmarks

        def run(batch: np.ndarray) -> np.ndarray:
            heatmaps = np.asarray(self.backend(batch), np.float32)
            if heatmaps.shape[-1] != k:
                raise LhpError(f"{self.source}: model produced {heatmaps.shape[-1]} heatmaps, expected {k}")
            return heatmaps

        img_pts, maxvals = landmarks_from_crops(run, np.stack(crops), invert_affine(np.stack(mats)), self.codec)
        scores = list(scores) if scores is not None else [None] * len(boxes)
        return [FaceLandmarks(np.asarray(b, np.float32).reshape(4), p.astype(np.float32), c.astype(np.float32), s)
                for b, p, c, s in zip(boxes, img_pts, maxvals, scores, strict=True)]

    def __call__(self, image_bgr: np.ndarray,
                 boxes: Sequence[Sequence[float]] | None = None) -> list[FaceLandmarks]:
        """Landmarks of every face in a BGR image (found by the detector unless ``boxes`` is given)."""
        image_bgr = _as_bgr(image_bgr)
        if boxes is not None:
            return self.predict_boxes(image_bgr, boxes)
        found = self.find_faces(image_bgr)
        return self.predict_boxes(image_bgr, [b for b, _ in found], [s for _, s in found])


def _as_bgr(image: np.ndarray) -> np.ndarray:
    """Accept grey, BGR and BGRA uint8 images (what ``cv2.imread`` and video frames give)."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise LhpError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise LhpError(f"expected an H x W x 3 BGR image, got shape {image.shape}")
