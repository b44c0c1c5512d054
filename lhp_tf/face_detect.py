"""Face boxes for images that come without one: BlazeFace run by the TFLite interpreter.

OpenCV 5 no longer ships Haar cascades (``cv2.data`` is empty and ``CascadeClassifier`` is
gone) and its YuNet detector needs a model file that is not bundled, so we ship MediaPipe's
BlazeFace models (Apache-2.0, see ``lhp_tf/assets/README.md``) and run them with the same
interpreter as the landmark model: no download, no TensorFlow, works on a board.

A detector box is not the box the landmark model was trained with (the landmarks' bounding
box, scaled by ``box_scale``): :func:`landmark_box` maps a detection onto that box with fixed
constants calibrated on annotated faces (see :data:`BOX_CALIBRATION`).

This module imports neither TensorFlow nor Keras.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from lhp_tf.errors import LhpError

_ASSETS = Path(__file__).resolve().parent / "assets"


@dataclass(frozen=True)
class DetectorSpec:
    """How one BlazeFace variant lays out its anchors and scales its outputs."""

    file: str
    input_size: int
    #: (stride, anchors per cell) per feature map, in the model's output order
    layers: tuple[tuple[int, int], ...]
    score_threshold: float


#: The two BlazeFace variants MediaPipe publishes (anchor layouts from its calculator options).
DETECTORS: dict[str, DetectorSpec] = {
    "short": DetectorSpec("face_detection_short_range.tflite", 128, ((8, 2), (16, 6)), 0.5),
    "full": DetectorSpec("face_detection_full_range_sparse.tflite", 192, ((4, 1),), 0.6),
}

#: BlazeFace keypoint indices (subject's right eye appears on the image's left).
RIGHT_EYE, LEFT_EYE, NOSE, MOUTH, RIGHT_EAR, LEFT_EAR = range(6)


@dataclass(frozen=True)
class Detection:
    """One face found by the detector, in image pixels."""

    box: np.ndarray  #: (4,) x_min, y_min, x_max, y_max
    keypoints: np.ndarray  #: (6, 2) eyes, nose tip, mouth centre, ear tragions
    score: float


def anchors(spec: DetectorSpec) -> np.ndarray:
    """SSD anchor centres ``(A, 2)`` in [0, 1] input coordinates (BlazeFace uses unit anchor size)."""
    out = []
    for stride, per_cell in spec.layers:
        n = int(np.ceil(spec.input_size / stride))
        ys, xs = np.meshgrid((np.arange(n) + 0.5) / n, (np.arange(n) + 0.5) / n, indexing="ij")
        centres = np.stack([xs, ys], axis=-1).reshape(-1, 1, 2)
        out.append(np.repeat(centres, per_cell, axis=1).reshape(-1, 2))
    return np.concatenate(out).astype(np.float32)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray,
                 iou_threshold: float) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Blend overlapping detections by score (BlazeFace's NMS): steadier boxes than hard NMS."""
    order = np.argsort(-scores)
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    alive = np.ones(len(scores), bool)
    out = []
    for i in range(len(scores)):
        if not alive[i]:
            continue
        group = alive & (_iou(boxes[i], boxes) > iou_threshold)
        group[i] = True
        w = scores[group][:, None]
        box = (boxes[group] * w).sum(0) / w.sum()
        kps = (keypoints[group] * w[:, :, None]).sum(0) / w.sum()
        out.append((box, kps, float(scores[i])))
        alive &= ~group
    return out


class FaceDetector:
    """BlazeFace on a BGR image: ``detector(image) -> list[Detection]``, best first."""

    def __init__(self, variant: str = "short", score_threshold: float | None = None,
                 iou_threshold: float = 0.3, num_threads: int = 1) -> None:
        if variant not in DETECTORS:
            raise LhpError(f"unknown face detector {variant!r}: expected one of {sorted(DETECTORS)}")
        from lhp_tf.runtime import load_interpreter

        self.spec = DETECTORS[variant]
        self.score_threshold = self.spec.score_threshold if score_threshold is None else score_threshold
        self.iou_threshold = iou_threshold
        self._interp, _ = load_interpreter(_ASSETS / self.spec.file, num_threads=num_threads)
        self._input = self._interp.get_input_details()[0]["index"]
        outs = sorted(self._interp.get_output_details(), key=lambda d: int(d["shape"][-1]), reverse=True)
        self._regressors, self._logits = outs[0]["index"], outs[1]["index"]
        self._anchors = anchors(self.spec)

    def __call__(self, image_bgr: np.ndarray) -> list[Detection]:
        size = self.spec.input_size
        h, w = image_bgr.shape[:2]
        side = max(h, w)
        # Letterbox to a centred square so the model sees undistorted faces.
        pad_x, pad_y = (side - w) / 2.0, (side - h) / 2.0
        m = np.array([[size / side, 0, pad_x * size / side], [0, size / side, pad_y * size / side]])
        square = cv2.warpAffine(image_bgr, m, (size, size), flags=cv2.INTER_AREA if side > size else cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT)
        rgb = cv2.cvtColor(square, cv2.COLOR_BGR2RGB).astype(np.float32) / 127.5 - 1.0
        self._interp.set_tensor(self._input, rgb[None])
        self._interp.invoke()
        raw = self._interp.get_tensor(self._regressors)[0].astype(np.float64)
        logits = self._interp.get_tensor(self._logits)[0, :, 0].astype(np.float64)
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits, -100, 100)))
        keep = scores >= self.score_threshold
        if not keep.any():
            return []
        raw, scores, anc = raw[keep], scores[keep], self._anchors[keep]
        centre = raw[:, 0:2] / size + anc
        half = raw[:, 2:4] / size / 2.0
        boxes = np.concatenate([centre - half, centre + half], axis=1)
        kps = raw[:, 4:16].reshape(-1, 6, 2) / size + anc[:, None, :]
        # [0, 1] letterbox coordinates -> image pixels
        offset = np.array([pad_x, pad_y])
        boxes = boxes * side - np.tile(offset, 2)
        kps = kps * side - offset
        return [Detection(box.astype(np.float32), k.astype(np.float32), s)
                for box, k, s in weighted_nms(boxes, kps, scores, self.iou_threshold)]


#: Detector box -> landmark box: the landmarks' bounding box (what the model was trained to
#: crop around) has its centre ``dx``/``dy`` box widths/heights from the detector box's centre
#: and is ``scale`` times its size. Measured by :func:`calibrate_box_mapping` on 298 synthetic
#: 68-point faces (lhp_tf.data.synth, seed 7, all poses; tests/test_inference.py re-measures
#: it): dx -0.010, dy 0.012, scale 0.960, centre error median 3.4 % / p90 6.6 % of the face
#: size, size error p90 7.7 %. dx is set to 0 because faces are left-right symmetric. On the
#: real astronaut photo (lhp_tf/assets) the same constants put the box within ~3 % of the
#: brow-to-chin, jaw-to-jaw extent judged by eye. Training augments scale by +-25 % and
#: shift by 5 %, so these residuals are inside what the model has seen.
BOX_CALIBRATION = {"dx": 0.0, "dy": 0.012, "scale": 0.96}


def landmark_box(box: np.ndarray, calibration: dict[str, float] | None = None) -> np.ndarray:
    """The box (x_min, y_min, x_max, y_max) a face's landmarks would span, from its detector box."""
    c = BOX_CALIBRATION if calibration is None else calibration
    x0, y0, x1, y1 = (float(v) for v in np.asarray(box).reshape(4))
    w, h = x1 - x0, y1 - y0
    cx, cy = (x0 + x1) / 2 + c["dx"] * w, (y0 + y1) / 2 + c["dy"] * h
    hw, hh = c["scale"] * w / 2, c["scale"] * h / 2
    return np.array([cx - hw, cy - hh, cx + hw, cy + hh], np.float32)


def calibrate_box_mapping(detector_boxes: np.ndarray, landmarks: np.ndarray) -> dict[str, float]:
    """Fit :data:`BOX_CALIBRATION` from detector boxes ``(N, 4)`` and true landmarks ``(N, K, 2)``.

    Medians (robust to the odd bad detection) of the centre offset in box units and of the
    ratio of the landmark box's longer side to the detector box's longer side (the crop is
    square on the longer side).
    """
    b = np.asarray(detector_boxes, np.float64)
    lm = np.asarray(landmarks, np.float64)
    lo, hi = lm.min(axis=1), lm.max(axis=1)
    size = b[:, 2:] - b[:, :2]
    offset = ((lo + hi) / 2 - (b[:, :2] + b[:, 2:]) / 2) / size
    ratio = (hi - lo).max(axis=1) / size.max(axis=1)
    return {"dx": float(np.median(offset[:, 0])), "dy": float(np.median(offset[:, 1])),
            "scale": float(np.median(ratio))}
