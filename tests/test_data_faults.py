"""Data that reads but that training cannot use: caught by the readers and by ``lhp data check``."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from lhp_tf.config import DataConfig
from lhp_tf.data import datasets, w300, wflw
from lhp_tf.data.check import check_root
from lhp_tf.data.cli import main as data_main
from lhp_tf.data.sample import DataError, ProblemLog

RNG = np.random.default_rng(0)


def _face_points(k: int, size: int) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, k, endpoint=False)
    return np.stack([size / 2 + size / 4 * np.cos(t), size / 2 + size / 3 * np.sin(t)], 1)


def _jpeg(path: Path, size: int = 128) -> None:
    img = cv2.GaussianBlur((RNG.random((size, size, 3)) * 255).astype(np.uint8), (0, 0), 2)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img)


def _w300_face(root: Path, name: str, points: np.ndarray | None = None, text: str | None = None) -> Path:
    d = root / "ibug"
    d.mkdir(parents=True, exist_ok=True)
    pts = d / f"{name}.pts"
    if text is None:
        rows = "\n".join(f"{x + 1:.3f} {y + 1:.3f}" for x, y in (_face_points(68, 128) if points is None else points))
        text = f"version: 1\nn_points:  68\n{{\n{rows}\n}}\n"
    pts.write_text(text)
    _jpeg(d / f"{name}.jpg")
    return pts


def _wflw_line(image: str, points: np.ndarray | None = None) -> str:
    pts = _face_points(98, 128) if points is None else points
    return " ".join([*(f"{v:.3f}" for v in pts.ravel()), "20", "20", "108", "108", "0", "0", "0", "0", "0", "0", image])


def _wflw_root(root: Path, lines: list[str]) -> Path:
    f = wflw.annotation_file(root, "train")
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text("".join(line + "\n" for line in lines))
    return f


def test_huge_pts_value_is_refused_with_file_and_line(tmp_path: Path) -> None:
    """1e39 is finite in float64 and infinite in float32 (later a LinAlgError in export-eval)."""
    rows = [f"{x + 1} {y + 1}" for x, y in _face_points(68, 128)]
    rows[9] = "1e39 5"
    p = _w300_face(tmp_path, "face", text="version: 1\nn_points: 68\n{\n" + "\n".join(rows) + "\n}\n")
    with pytest.raises(DataError, match=rf"{p}:13: bad number: the point has '1e39', beyond \+-1e\+06"):
        w300.read_split(tmp_path, "challenging", ProblemLog("stop"))


def test_degenerate_landmarks_are_refused(tmp_path: Path) -> None:
    p = _w300_face(tmp_path, "face", points=np.full((68, 2), 40.0))
    with pytest.raises(DataError, match=rf"{p}: bad landmarks: all points on one line"):
        w300.read_split(tmp_path, "challenging", ProblemLog("stop"))


def test_wflw_path_too_long_is_a_data_error(tmp_path: Path) -> None:
    f = _wflw_root(tmp_path, [_wflw_line("a/" + "x" * 5000 + ".jpg"), _wflw_line("a/b\0c.jpg")])
    with pytest.raises(DataError, match=rf"{f}:1: bad image path: .*OSError"):
        wflw.read_split(tmp_path, "train", ProblemLog("stop"))
    log = ProblemLog("skip")
    assert wflw.read_split(tmp_path, "train", log) == []
    assert [p.line for p in log.problems] == [1, 2]


def test_check_flags_truncated_jpeg_and_points_far_outside(tmp_path: Path, capsys) -> None:
    _w300_face(tmp_path, "good")
    whole = (tmp_path / "ibug" / "cut.jpg")
    _w300_face(tmp_path, "cut")
    data = whole.read_bytes()
    whole.write_bytes(data[: len(data) * 2 // 3])
    assert cv2.imread(str(whole)) is not None  # libjpeg warns and decodes: a decode alone passes it
    far = _face_points(68, 128)
    far[30] = (900.0, 60.0)
    _w300_face(tmp_path, "far", points=far)
    rc = data_main(["check", "--format", "300w", "--root", str(tmp_path), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 1
    problems = {Path(p["file"]).name: p["error"] for p in report["splits"]["challenging"]["problems"]}
    assert set(problems) == {"cut.pts", "far.pts"}
    assert problems["cut.pts"].startswith("truncated image:")
    assert problems["far.pts"].startswith("landmarks far outside the image: point 30 at (900.0, 60.0)")
    assert report["splits"]["challenging"]["samples"] == 1


def test_check_flags_empty_annotation_list(tmp_path: Path, capsys) -> None:
    f = _wflw_root(tmp_path, [])
    rc = data_main(["check", "--format", "wflw", "--root", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 1
    assert f"train: {f}: empty annotation list" in out


def test_check_with_the_wrong_format_is_an_error(tmp_path: Path, capsys) -> None:
    _w300_face(tmp_path, "good")
    assert data_main(["check", "--format", "300w", "--root", str(tmp_path)]) == 0
    capsys.readouterr()
    rc = data_main(["check", "--format", "wflw", "--root", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 1
    assert f"error: {tmp_path}: no usable wflw sample in any split; is --format right" in out
    assert check_root("wflw", tmp_path)["error"]


def test_empty_or_all_skipped_split_is_an_error_where_asked_for(tmp_path: Path, capsys) -> None:
    f = _wflw_root(tmp_path, [_wflw_line("a/missing.jpg"), _wflw_line("a/gone.jpg")])
    cfg = DataConfig(format="wflw", root=str(tmp_path), on_error="skip")
    with pytest.raises(DataError, match=rf"'train' has no usable samples: all skipped \(skipped 2 samples.*{f}:1"):
        datasets.read_split(cfg, "train")
    with pytest.raises(DataError, match=r"'test' has no usable samples: no annotations found"):
        datasets.read_split(cfg, "test")
    assert datasets.read_split(cfg, "test", allow_empty=True) == []


def test_training_images_all_unreadable_is_an_error(tmp_path: Path) -> None:
    """Under on_error: skip a split of only unreadable images must not train on nothing."""
    from lhp_tf.config import load_recipe
    from lhp_tf.data.pipeline import crop_cache

    lines = []
    for i in range(3):
        (tmp_path / "WFLW_images" / "a").mkdir(parents=True, exist_ok=True)
        (tmp_path / "WFLW_images" / "a" / f"{i}.jpg").write_bytes(b"not a jpeg")
        lines.append(_wflw_line(f"a/{i}.jpg"))
    _wflw_root(tmp_path, lines)
    repo = Path(__file__).resolve().parents[1]
    recipe = load_recipe(repo / "recipes" / "synthetic-wflw.yaml", [f"data.root={tmp_path}", "data.on_error=skip"])
    samples = datasets.read_split(recipe.data, "train")
    assert len(samples) == 3
    with pytest.raises(DataError, match=r"none of the 3 images could be read \(first: .*:1: unreadable image"):
        crop_cache(recipe, samples)
