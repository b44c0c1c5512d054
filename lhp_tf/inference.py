"""Landmarks on real images: ``LandmarkDetector.from_path(model)(image_bgr) -> list[FaceLandmarks]``.

One API over both model kinds a user has: a ``.keras`` checkpoint (its run folder's
``recipe.yaml`` says the input size, box scale, landmark count and loss) and an exported
``.tflite`` (its embedded ``lhp_tf`` metadata says the same). The ``.tflite`` path imports
neither TensorFlow nor Keras, so it runs on a board with numpy, OpenCV and an interpreter.

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

from lhp_tf.data.crop import crop_transform, invert_affine
from lhp_tf.decode import crop_to_image, decode, heatmap_to_crop
from lhp_tf.errors import LhpError

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


@dataclass(frozen=True)
class ModelInfo:
    """What cropping and decoding need to know about a landmark model."""

    input_size: tuple[int, int]  #: (H, W)
    num_landmarks: int
    box_scale: float
    heatmap_stride: int = 4
    heatmap_activation: str = "sigmoid"
    source: str = ""


def _tflite_backend(path: Path, num_threads: int) -> tuple[Backend, ModelInfo]:
    from lhp_tf.runtime import TFLiteModel

    model = TFLiteModel(path, num_threads=num_threads)
    meta = model.metadata
    if meta is None:
        raise LhpError(f"{path}: this .tflite carries no lhp_tf metadata (box scale, landmark count): "
                       "export it with 'lhp convert', which embeds them")
    info = ModelInfo(input_size=model.input_size, num_landmarks=model.num_landmarks,
                     box_scale=float(meta.get("box_scale", 1.25)), heatmap_stride=model.stride,
                     heatmap_activation=str(meta.get("heatmap_activation", "sigmoid")), source=str(path))
    return model.predict, info


def _keras_backend(path: Path, recipe_path: str | os.PathLike[str] | None) -> tuple[Backend, ModelInfo]:
    from lhp_tf.converters.run_folder import find_recipe
    from lhp_tf.evaluate import heatmap_fn
    from lhp_tf.model.network import load_model, with_heatmap_activation

    recipe = find_recipe(path, recipe_path)
    model = with_heatmap_activation(load_model(path), recipe.train.loss)
    h, w = (int(v) for v in recipe.model.input_size)
    out_h = int(model.output_shape[1])
    info = ModelInfo(input_size=(h, w), num_landmarks=recipe.num_landmarks, box_scale=recipe.data.box_scale,
                     heatmap_stride=h // out_h, heatmap_activation="sigmoid" if recipe.train.loss == "bce" else "none",
                     source=str(path))

    infer = heatmap_fn(model)

    def run(crops: np.ndarray) -> np.ndarray:
        return np.asarray(infer(crops.astype(np.float32) / 255.0), dtype=np.float32)

    return run, info


class LandmarkDetector:
    """Faces in, landmarks out: ``detector(image_bgr, boxes=None) -> list[FaceLandmarks]``.

    Without ``boxes`` the faces are found by the bundled BlazeFace detector
    (:class:`lhp_tf.face_detect.FaceDetector`), created on first need.
    """

    def __init__(self, backend: Backend, info: ModelInfo, face_detector: Any = None,
                 decoder: str = "dark", detector_variant: str = "short", num_threads: int = 1) -> None:
        self.backend = backend
        self.info = info
        self.decoder = decoder
        self._face_detector = face_detector
        self._detector_variant = detector_variant
        self._num_threads = num_threads

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], *, recipe: str | os.PathLike[str] | None = None,
                  decoder: str = "dark", detector: str = "short", num_threads: int = 1) -> LandmarkDetector:
        """Load a ``.tflite`` (no TensorFlow) or a ``.keras`` checkpoint (with its run's recipe)."""
        p = Path(path)
        if not p.is_file():
            raise LhpError(f"{p}: model file not found")
        if p.suffix == ".tflite":
            backend, info = _tflite_backend(p, num_threads)
        elif p.suffix == ".keras":
            backend, info = _keras_backend(p, recipe)
        else:
            raise LhpError(f"{p}: unknown model type {p.suffix!r}: expected a .keras checkpoint or a .tflite")
        return cls(backend, info, decoder=decoder, detector_variant=detector, num_threads=num_threads)

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
        h, w = self.info.input_size
        m = crop_transform(np.asarray(box, np.float32), (h, w), self.info.box_scale)
        crop = cv2.warpAffine(image_bgr, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        return cv2.cvtColor(crop, cv2.COLOR_BGR2RGB), m

    def predict_boxes(self, image_bgr: np.ndarray, boxes: Sequence[Sequence[float]],
                      scores: Sequence[float | None] | None = None) -> list[FaceLandmarks]:
        """Landmarks for faces whose boxes (x_min, y_min, x_max, y_max) are known."""
        image_bgr = _as_bgr(image_bgr)
        if len(boxes) == 0:
            return []
        crops, mats = zip(*(self.crop(image_bgr, b) for b in boxes), strict=True)
        heatmaps = np.asarray(self.backend(np.stack(crops)), np.float32)
        if heatmaps.shape[-1] != self.info.num_landmarks:
            raise LhpError(f"{self.info.source}: model produced {heatmaps.shape[-1]} heatmaps, "
                           f"expected {self.info.num_landmarks}")
        coords, maxvals = decode(heatmaps, self.decoder)
        crop_pts = heatmap_to_crop(coords, self.info.heatmap_stride)
        img_pts = crop_to_image(crop_pts, invert_affine(np.stack(mats)))
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
