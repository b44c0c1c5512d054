"""``lhp predict`` on a real photo, a folder, a video, a face-less image and a broken file.

The model is a 68-landmark .tflite of the toy "blob" network (tests/tflite_toys.py): its points
mean nothing on a photo, but it has the real interface (metadata, 96x96 input, 68 heatmaps),
so these tests check the command's plumbing: face found, 68 points drawn inside the face, the
JSON written, and clean handling of the bad cases. tests/test_demo.py runs it with a trained model.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from lhp_tf.cli import main as lhp
from lhp_tf.errors import LhpError
from lhp_tf.predict import main as predict

PHOTO = Path(__file__).resolve().parents[1] / "lhp_tf" / "assets" / "astronaut.jpg"


@pytest.fixture(scope="module")
def model68(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tflite_toys import _metadata, blob_keras_model, convert

    from lhp_tf.tflite_metadata import embed_metadata

    path = tmp_path_factory.mktemp("toy68") / "toy68.tflite"
    raw = convert(blob_keras_model(68, 96), "float")
    path.write_bytes(embed_metadata(raw, _metadata(68, 96, "float")))
    return path


def _run(capsys: pytest.CaptureFixture, *argv: str) -> dict:
    assert predict(list(argv) + ["--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_photo_gets_one_face_with_68_points_drawn(model68: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    doc = _run(capsys, str(PHOTO), "--model", str(model68), "--out", str(out))
    assert doc["num_landmarks"] == 68
    (entry,) = doc["files"]
    assert entry["file"] == str(PHOTO)
    (face,) = entry["faces"]
    pts = np.array(face["landmarks"])
    assert pts.shape == (68, 2) and len(face["confidence"]) == 68 and face["score"] > 0.8
    x0, y0, x1, y1 = face["box"]
    assert 165 < x0 < x1 < 285 and 70 < y0 < y1 < 195  # the astronaut's face
    side = 1.25 * max(x1 - x0, y1 - y0) / 2  # points lie inside the model's crop
    centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    assert (np.abs(pts - centre) <= side).all()
    assert json.loads((out / "predictions.json").read_text()) == doc
    drawn = cv2.imread(str(out / PHOTO.name))
    original = cv2.imread(str(PHOTO))
    assert drawn.shape == original.shape
    changed = np.abs(drawn.astype(int) - original.astype(int)).sum(axis=2) > 60
    for x, y in pts.round().astype(int):  # a dot at every landmark
        assert changed[y, x]
    assert not changed[:60].any()  # nothing drawn far from the face


def test_image_without_a_face_exits_cleanly_with_zero_faces(model68: Path, tmp_path: Path, capsys) -> None:
    blank = tmp_path / "wall.png"
    cv2.imwrite(str(blank), np.full((120, 160, 3), 200, np.uint8))
    assert predict([str(blank), "--model", str(model68), "--out", str(tmp_path / "o")]) == 0
    assert "no face found" in capsys.readouterr().out
    doc = json.loads((tmp_path / "o" / "predictions.json").read_text())
    assert doc["files"] == [{"file": str(blank), "faces": []}]


def test_unreadable_file_is_named(model68: Path, tmp_path: Path, capsys) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 definitely not a jpeg")
    with pytest.raises(LhpError, match="broken.jpg"):
        predict([str(broken), "--model", str(model68), "--out", str(tmp_path / "o")])
    assert lhp(["predict", str(tmp_path / "missing.png"), "--model", str(model68)]) == 2
    assert "missing.png" in capsys.readouterr().err


def test_folder_processes_every_image(model68: Path, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    image = cv2.imread(str(PHOTO))
    cv2.imwrite(str(folder / "a.jpg"), image)
    cv2.imwrite(str(folder / "b.png"), cv2.flip(image, 1))
    (folder / "notes.txt").write_text("not an image")
    doc = _run(capsys, str(folder), "--model", str(model68), "--out", str(tmp_path / "o"), "--no-draw")
    assert [Path(f["file"]).name for f in doc["files"]] == ["a.jpg", "b.png"]
    assert all(len(f["faces"]) == 1 for f in doc["files"])
    assert not (tmp_path / "o" / "a.jpg").exists()


def test_video_is_annotated_frame_by_frame_with_smoothing(model68: Path, tmp_path: Path, capsys) -> None:
    image = cv2.imread(str(PHOTO))[:, :, :]
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (320, 240))
    assert writer.isOpened()
    for t in range(8):  # the face drifts right by 3 px a frame
        m = np.float32([[0.6, 0, -40 + 3 * t], [0, 0.6, 0]])
        writer.write(cv2.warpAffine(image, m, (320, 240)))
    writer.release()
    out = tmp_path / "o"
    doc = _run(capsys, str(video), "--model", str(model68), "--out", str(out), "--smooth", "0.5")
    (entry,) = doc["files"]
    assert entry["fps"] == pytest.approx(10.0)
    frames = entry["frames"]
    assert [f["frame"] for f in frames] == list(range(8))
    assert all(len(f["faces"]) == 1 for f in frames)
    assert {f["faces"][0]["track"] for f in frames} == {0}  # one face, one track
    written = next(p for p in out.iterdir() if p.stem == "clip")
    cap = cv2.VideoCapture(str(written))
    count = 0
    while cap.read()[0]:
        count += 1
    cap.release()
    assert count == 8


def test_bad_smoothing_value_is_rejected(model68: Path) -> None:
    with pytest.raises(LhpError, match="--smooth"):
        predict([str(PHOTO), "--model", str(model68), "--smooth", "1.5"])


def test_folder_goes_on_past_broken_files_and_replaces_the_json(model68: Path, tmp_path: Path, capsys) -> None:
    """A broken image first in the folder: the good ones after it are still processed, the
    broken ones listed, the old predictions.json replaced, and the exit code says it failed."""
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a_broken.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    cv2.imwrite(str(folder / "b.jpg"), cv2.imread(str(PHOTO)))
    (folder / "c_empty.png").write_bytes(b"")
    out = tmp_path / "o"
    out.mkdir()
    (out / "predictions.json").write_text('{"files": [{"file": "old.jpg"}]}')
    assert predict([str(folder), "--model", str(model68), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "b.jpg: 1 face" in captured.out
    assert "a_broken.jpg: cannot read this file as an image" in captured.err
    assert "2 of 3 files failed" in captured.err
    doc = json.loads((out / "predictions.json").read_text())
    assert [Path(f["file"]).name for f in doc["files"]] == ["b.jpg"]
    assert [Path(f["file"]).name for f in doc["failed"]] == ["a_broken.jpg", "c_empty.png"]
    assert (out / "b.jpg").is_file() and not (out / "a_broken.jpg").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_failed_single_file_leaves_the_old_json(model68: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    out = tmp_path / "o"
    out.mkdir()
    (out / "predictions.json").write_text("old")
    with pytest.raises(LhpError, match="broken.jpg"):
        predict([str(broken), "--model", str(model68), "--out", str(out)])
    assert (out / "predictions.json").read_text() == "old"
