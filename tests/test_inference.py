"""lhp_tf.inference / face_detect / smoothing: known answers on toy models and a real photo.

The photo is lhp_tf/assets/astronaut.jpg (Eileen Collins, NASA, public domain; see
lhp_tf/assets/README.md). The known-answer model is tests/tflite_toys.py's "blob" model:
landmark k is read from a Gaussian blob in crop channel k, so cropping, decoding and mapping
back to image pixels must recover the blob centres.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from lhp_tf.data.crop import apply_affine, crop_transform, invert_affine
from lhp_tf.errors import LhpError
from lhp_tf.face_detect import (
    BOX_CALIBRATION,
    DETECTORS,
    FaceDetector,
    anchors,
    calibrate_box_mapping,
    landmark_box,
    weighted_nms,
)
from lhp_tf.inference import LandmarkDetector
from lhp_tf.smoothing import FaceTracks, OneEuroFilter

PHOTO = Path(__file__).resolve().parents[1] / "lhp_tf" / "assets" / "astronaut.jpg"
#: where the face of the astronaut photo is (x_min, y_min, x_max, y_max), checked by eye
FACE = (175, 80, 275, 185)


def _photo() -> np.ndarray:
    image = cv2.imread(str(PHOTO))
    assert image is not None, f"{PHOTO} missing"
    return image


def test_anchor_layouts_match_the_models() -> None:
    assert anchors(DETECTORS["short"]).shape == (896, 2)
    assert anchors(DETECTORS["full"]).shape == (2304, 2)
    a = anchors(DETECTORS["short"])
    # first stride-8 cell holds 2 anchors at its centre; the stride-16 maps follow
    np.testing.assert_allclose(a[0], [0.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(a[1], a[0])
    np.testing.assert_allclose(a[512], [0.5 / 8, 0.5 / 8])


def test_weighted_nms_merges_overlaps_and_keeps_separate_faces() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], np.float64)
    kps = np.zeros((3, 6, 2))
    kept = weighted_nms(boxes, kps, np.array([0.9, 0.9, 0.8]), 0.3)
    assert len(kept) == 2
    np.testing.assert_allclose(kept[0][0], [0.5, 0, 10.5, 10])
    assert kept[1][2] == pytest.approx(0.8)


@pytest.mark.parametrize("variant", ["short", "full"])
def test_face_detector_finds_the_astronaut(variant: str) -> None:
    found = FaceDetector(variant)(_photo())
    assert len(found) == 1
    d = found[0]
    assert d.score > 0.8
    cx, cy = (d.box[0] + d.box[2]) / 2, (d.box[1] + d.box[3]) / 2
    assert FACE[0] < cx < FACE[2] and FACE[1] < cy < FACE[3]
    kp = d.keypoints
    # subject's right eye is on the image's left; eyes above the nose, nose above the mouth
    assert kp[0, 0] < kp[1, 0]
    assert max(kp[0, 1], kp[1, 1]) < kp[2, 1] < kp[3, 1]
    box = landmark_box(d.box)
    assert FACE[0] - 10 < box[0] < box[2] < FACE[2] + 10
    assert FACE[1] - 10 < box[1] < box[3] < FACE[3] + 10


def test_face_detector_finds_nothing_in_a_blank_or_tiny_image() -> None:
    det = FaceDetector()
    assert det(np.full((240, 320, 3), 127, np.uint8)) == []
    assert det(np.zeros((5, 7, 3), np.uint8)) == []


def test_landmark_box_is_the_calibrated_shift_and_scale_of_the_detector_box() -> None:
    cal = {"dx": 0.1, "dy": -0.2, "scale": 0.5}
    np.testing.assert_allclose(landmark_box([10, 20, 30, 60], cal), [17, 22, 27, 42])
    np.testing.assert_allclose(landmark_box([0, 0, 100, 100], {"dx": 0, "dy": 0, "scale": 1}), [0, 0, 100, 100])


def test_box_calibration_reproduces_on_synthetic_faces() -> None:
    """Re-measure BOX_CALIBRATION with the real detector on faces whose landmarks are known."""
    from lhp_tf.data.synth import render, sample_params

    det = FaceDetector()
    rng = np.random.default_rng(7)
    boxes, lms = [], []
    for _ in range(60):
        image, lm68, _ = render(sample_params(rng, 256))
        found = det(image)
        if found:
            boxes.append(found[0].box)
            lms.append(lm68)
    assert len(boxes) >= 55  # BlazeFace finds the synthetic faces
    cal = calibrate_box_mapping(np.array(boxes), np.array(lms))
    assert abs(cal["dx"] - BOX_CALIBRATION["dx"]) < 0.03
    assert abs(cal["dy"] - BOX_CALIBRATION["dy"]) < 0.03
    assert abs(cal["scale"] - BOX_CALIBRATION["scale"]) < 0.04


def _blob_image(k: int, input_size: int, box: np.ndarray, crop_pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A BGR image whose crop for ``box`` shows landmark j as a Gaussian blob in RGB channel j % 3."""
    from tflite_toys import BLOB_SIGMA

    m = crop_transform(box, input_size, 1.25)
    img_pts = apply_affine(invert_affine(m), crop_pts)
    scale = float(np.linalg.norm(invert_affine(m)[:, 0]))
    yy, xx = np.mgrid[0:300, 0:400]
    image = np.zeros((300, 400, 3))
    for j, (x, y) in enumerate(img_pts):
        blob = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * (BLOB_SIGMA * scale) ** 2))
        image[..., 2 - j % 3] = np.maximum(image[..., 2 - j % 3], blob)
    return np.round(image * 255).astype(np.uint8), img_pts


@pytest.mark.parametrize("quant,tol", [("float", 0.5), ("int8", 1.5)])
def test_tflite_recovers_known_landmarks_in_image_pixels(blob_models: dict, quant: str, tol: float) -> None:
    from tflite_toys import INPUT, K

    det = LandmarkDetector.from_path(blob_models[quant])
    assert det.spec.input_size == (INPUT, INPUT) and det.spec.num_landmarks == K
    box = np.array([150.0, 90.0, 230.0, 170.0])
    crop_pts = np.array([[20.0, 24.0], [40.5, 30.0], [31.0, 45.5]])
    image, truth = _blob_image(K, INPUT, box, crop_pts)
    faces = det(image, boxes=[box])
    assert len(faces) == 1
    f = faces[0]
    np.testing.assert_allclose(f.box, box)
    assert f.landmarks.shape == (K, 2) and f.confidence.shape == (K,)
    err = np.linalg.norm(f.landmarks - truth, axis=1)
    assert err.max() < tol, err
    assert f.score is None
    d = f.to_dict()
    assert len(d["landmarks"]) == K and "score" not in d


def test_tflite_path_imports_no_tensorflow(blob_models: dict) -> None:
    code = (
        "import sys, cv2\n"
        "from lhp_tf.inference import LandmarkDetector\n"
        f"det = LandmarkDetector.from_path({str(blob_models['int8'])!r})\n"
        f"faces = det(cv2.imread({str(PHOTO)!r}))\n"
        "assert len(faces) == 1 and faces[0].landmarks.shape == (3, 2), faces\n"
        "bad = [m for m in ('tensorflow', 'keras', 'tf_keras') if m in sys.modules]\n"
        "sys.exit(f'imported {bad}' if bad else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_unknown_or_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LhpError, match="model file not found"):
        LandmarkDetector.from_path(tmp_path / "nope.tflite")
    odd = tmp_path / "model.onnx"
    odd.write_bytes(b"x")
    with pytest.raises(LhpError, match="model.onnx"):
        LandmarkDetector.from_path(odd)
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer at all")
    with pytest.raises(LhpError, match="bad.tflite"):
        LandmarkDetector.from_path(bad)


@pytest.mark.slow
def test_keras_checkpoint_alone_gives_68_points_on_a_photo(tmp_path: Path) -> None:
    """An untrained lhp-small: the point is the plumbing (the checkpoint's own spec says the
    landmark count, the crop and the sigmoid; no recipe beside it)."""
    from lhp_tf.checkpoint import save_keras
    from lhp_tf.config import load_recipe
    from lhp_tf.model.network import LandmarkNet
    from lhp_tf.spec import ModelSpec

    # one small stage keeps building/loading fast; the loading path is the same for any size
    recipe = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "300w-small.yaml",
                         ["model.modules=[1]", "model.blocks=[1]", "model.channels=[16, 32]"])
    save_keras(LandmarkNet(ModelSpec.from_recipe(recipe)), tmp_path / "best.keras")
    det = LandmarkDetector.from_path(tmp_path / "best.keras")
    faces = det(_photo())
    assert len(faces) == 1
    f = faces[0]
    assert f.landmarks.shape == (68, 2) and np.isfinite(f.landmarks).all()
    assert ((f.confidence >= 0) & (f.confidence <= 1)).all()  # sigmoid applied (BCE recipe)
    x0, y0, x1, y1 = f.box
    pad = 0.15 * (x1 - x0)  # the crop is the box scaled by 1.25
    assert (f.landmarks[:, 0] > x0 - pad).all() and (f.landmarks[:, 0] < x1 + pad).all()
    assert (f.landmarks[:, 1] > y0 - pad).all() and (f.landmarks[:, 1] < y1 + pad).all()


@pytest.mark.slow
def test_old_checkpoint_without_spec_or_recipe_names_what_is_missing(tmp_path: Path) -> None:
    """A checkpoint saved before models carried their spec needs the recipe it was trained with."""
    from lhp_tf.checkpoint import save_keras
    from lhp_tf.config import dump_recipe, load_recipe
    from lhp_tf.model.network import build_model

    recipe = load_recipe("300w-small", ["model.modules=[1]", "model.blocks=[1]", "model.channels=[16, 32]"])
    ckpt = tmp_path / "old.keras"
    save_keras(build_model(recipe.model, recipe.num_landmarks), ckpt)
    with pytest.raises(LhpError, match="carries no model spec.*--recipe"):
        LandmarkDetector.from_path(ckpt)
    (tmp_path / "recipe.yaml").write_text(dump_recipe(recipe))
    assert LandmarkDetector.from_path(ckpt).spec.num_landmarks == 68


def test_one_euro_smooths_a_still_face_and_follows_a_moving_one() -> None:
    rng = np.random.default_rng(0)
    still = np.full((68, 2), 100.0)
    filt = OneEuroFilter(0.3)
    out = np.stack([filt(still + rng.normal(0, 1.0, still.shape), scale=100) for _ in range(60)])
    assert out[20:].std(axis=0).mean() < 0.55  # raw jitter std is 1.0
    filt = OneEuroFilter(0.3)
    for t in range(30):
        moved = filt(still + 5.0 * t, scale=100)  # 5 % of the face per frame
    assert np.abs(moved - (still + 5.0 * 29)).max() < 2.5  # a plain EMA at 0.3 lags by ~11.7 px
    assert np.array_equal(OneEuroFilter(1.0)(still + 3), (still + 3).astype(np.float32))
    with pytest.raises(ValueError):
        OneEuroFilter(0.0)


def test_face_tracks_keep_ids_by_overlap() -> None:
    tracks = FaceTracks(0.5)
    a, b = np.array([0, 0, 10, 10.0]), np.array([50, 50, 60, 60.0])
    pts = [np.zeros((3, 2)), np.ones((3, 2))]
    ids0, _ = tracks.update([a, b], pts)
    ids1, _ = tracks.update([b + 1, a + 1], pts[::-1])
    assert ids1 == [ids0[1], ids0[0]]
    ids2, _ = tracks.update([a + 200], pts[:1])
    assert ids2[0] not in ids0
