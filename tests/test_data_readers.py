"""Readers, bad-input reporting, flip tables and ``lhp data check`` (no TensorFlow)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from lhp_tf.config import DataConfig, SynthConfig
from lhp_tf.data import datasets, synth, w300, wflw
from lhp_tf.data.check import check_root
from lhp_tf.data.cli import main as data_main
from lhp_tf.data.flip import flip_landmarks, flip_permutation
from lhp_tf.data.images import decode
from lhp_tf.data.sample import DataError, ProblemLog, Sample


@pytest.fixture(scope="module")
def w300_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("w300") / "300W"
    synth.generate("300w", root, 24, seed=5, image_size=128, workers=1)
    return root


@pytest.fixture(scope="module")
def wflw_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("wflw") / "WFLW"
    synth.generate("wflw", root, 28, seed=6, image_size=128, workers=1)
    return root


# ----------------------------------------------------------------------------- flip tables


@pytest.mark.parametrize("k", [68, 98])
def test_flip_permutation_is_an_involution(k):
    p = flip_permutation(k)
    assert sorted(p.tolist()) == list(range(k))
    np.testing.assert_array_equal(p[p], np.arange(k))
    lm = np.random.default_rng(0).uniform(0, 100, (k, 2)).astype(np.float32)
    np.testing.assert_allclose(flip_landmarks(flip_landmarks(lm, 128), 128), lm, atol=1e-5)


def test_flip_permutation_known_pairs():
    p68, p98 = flip_permutation(68), flip_permutation(98)
    assert (p68[0], p68[36], p68[39], p68[48], p68[62], p68[8]) == (16, 45, 42, 54, 62, 8)
    assert (p98[0], p98[60], p98[64], p98[96], p98[33], p98[38], p98[16]) == (32, 72, 68, 97, 46, 50, 16)
    with pytest.raises(Exception, match="no horizontal-flip table for 5"):
        flip_permutation(5)


# ----------------------------------------------------------------------------- synthetic round trip


def test_300w_synthetic_round_trip(w300_root):
    jobs = synth.plan("300w", w300_root, 24, seed=5, image_size=128)
    drawn = {str(j.image): synth.render(j.params)[1] for j in jobs}
    counts = {s: datasets.read_samples("300w", w300_root, s, ProblemLog()) for s in w300.SPLITS}
    assert all(len(v) > 0 for v in counts.values()), {k: len(v) for k, v in counts.items()}
    assert len(counts["full"]) == len(counts["common"]) + len(counts["challenging"])
    total = sum(len(counts[s]) for s in ("train", "full", "test"))
    assert total == 24
    for split in ("train", "full", "test"):
        for s in counts[split]:
            np.testing.assert_allclose(s.landmarks, drawn[s.image_path], atol=1e-3)
            np.testing.assert_allclose(s.box, [*s.landmarks.min(0), *s.landmarks.max(0)])
            assert s.source.endswith(".pts:1")


def test_wflw_synthetic_round_trip(wflw_root):
    jobs = synth.plan("wflw", wflw_root, 28, seed=6, image_size=128)
    drawn = {str(j.image): (synth.render(j.params)[2], j.params.attributes) for j in jobs}
    log = ProblemLog()
    train = wflw.read_split(wflw_root, "train", log)
    test = wflw.read_split(wflw_root, "test", log)
    assert len(train) + len(test) == 28 and len(test) >= 6
    for s in train + test:
        lm, attrs = drawn[s.image_path]
        np.testing.assert_allclose(s.landmarks, lm, atol=1e-4)
        assert s.attributes == attrs
        assert (s.box[:2] <= lm.min(0) + 1).all() and (s.box[2:] >= lm.max(0) - 1).all()
    for a in wflw.ATTRIBUTES:
        sub = wflw.read_split(wflw_root, a, log)
        assert sub and all(s.attributes[a] == 1 for s in sub), a
    assert not log.problems


def test_absent_split_is_empty_not_an_error(tmp_path):
    assert datasets.read_samples("300w", tmp_path, "test", ProblemLog()) == []
    assert datasets.read_samples("wflw", tmp_path, "largepose", ProblemLog()) == []
    report = check_root("wflw", tmp_path)
    assert report["splits"]["train"] == {"samples": 0, "problems": []}


# ----------------------------------------------------------------------------- bad input


def _wflw_tree(tmp_path: Path, lines: list[str]) -> Path:
    f = wflw.annotation_file(tmp_path, "train")
    f.parent.mkdir(parents=True)
    f.write_text("\n".join(lines) + "\n")
    img = tmp_path / wflw.IMAGES / "a" / "x.jpg"
    img.parent.mkdir(parents=True)
    cv2.imwrite(str(img), np.zeros((32, 32, 3), np.uint8))
    return f


def _good_line(path: str = "a/x.jpg") -> list[str]:
    return ["1.5"] * 196 + ["0", "0", "20", "20"] + ["0"] * 6 + [path]


@pytest.mark.parametrize("mutate, message", [
    (lambda f: f[:-2] + f[-1:], "wrong number of fields: expected 207"),
    (lambda f: f[:5] + ["1.2.3"] + f[6:], "bad number"),
    (lambda f: f[:7] + ["nan"] + f[8:], "NaN"),
    (lambda f: f[:-1] + ["a/missing.jpg"], "missing image"),
    (lambda f: f[:200] + ["2"] + f[201:], "bad attribute"),
])
def test_wflw_bad_line_names_file_and_line(tmp_path, mutate, message):
    f = _wflw_tree(tmp_path, [" ".join(_good_line()), " ".join(mutate(_good_line()))])
    with pytest.raises(DataError, match=message) as exc:
        wflw.read_split(tmp_path, "train", ProblemLog("stop"))
    assert f"{f}:2:" in str(exc.value)
    log = ProblemLog("skip")
    samples = wflw.read_split(tmp_path, "train", log)
    assert len(samples) == 1 and samples[0].source == f"{f}:1"
    assert log.summary().startswith("skipped 1 samples: 1 x ")


def _pts(tmp_path: Path, rows: list[str], n_points: str = "68") -> Path:
    d = tmp_path / "ibug"
    d.mkdir(parents=True, exist_ok=True)
    p = d / "face.pts"
    p.write_text(f"version: 1\nn_points:  {n_points}\n{{\n" + "\n".join(rows) + "\n}\n")
    cv2.imwrite(str(d / "face.jpg"), np.zeros((16, 16, 3), np.uint8))
    return p


@pytest.mark.parametrize("rows, n_points, line, message", [
    (["1 2"] * 67, "67", 2, "wrong point count: n_points is '67'"),
    (["1 2"] * 67, "68", 71, "wrong point count: 67 points"),
    (["1 2"] * 10 + ["1 abc"] + ["1 2"] * 57, "68", 14, "bad number"),
    (["1 2"] * 20 + ["nan 2"] + ["1 2"] * 47, "68", 24, "NaN"),
    (["1 2"] * 3 + ["1 2 3"] + ["1 2"] * 64, "68", 7, "bad point"),
])
def test_pts_bad_file_names_file_and_line(tmp_path, rows, n_points, line, message):
    p = _pts(tmp_path, rows, n_points)
    with pytest.raises(DataError, match=message) as exc:
        w300.read_split(tmp_path, "challenging", ProblemLog("stop"))
    assert f"{p}:{line}:" in str(exc.value)
    log = ProblemLog("skip")
    assert w300.read_split(tmp_path, "challenging", log) == []
    assert len(log.problems) == 1 and log.problems[0].line == line


def test_pts_values_are_shifted_to_zero_based(tmp_path):
    _pts(tmp_path, [f"{i + 1} {2 * i + 1}" for i in range(68)])
    (s,) = w300.read_split(tmp_path, "challenging", ProblemLog())
    np.testing.assert_allclose(s.landmarks[:, 0], np.arange(68))
    np.testing.assert_allclose(s.landmarks[:, 1], 2 * np.arange(68))


def test_pts_missing_image_names_the_annotation(tmp_path):
    p = _pts(tmp_path, [f"{i + 1} {i % 7 + 1}" for i in range(68)])
    (tmp_path / "ibug" / "face.jpg").unlink()
    with pytest.raises(DataError, match="missing image") as exc:
        w300.read_split(tmp_path, "challenging", ProblemLog("stop"))
    assert str(p) in str(exc.value)


def test_unreadable_image_names_annotation_line(tmp_path):
    f = _wflw_tree(tmp_path, [" ".join(_good_line())])
    (tmp_path / wflw.IMAGES / "a" / "x.jpg").write_bytes(b"not a jpeg")
    (s,) = wflw.read_split(tmp_path, "train", ProblemLog())
    with pytest.raises(DataError, match="unreadable image") as exc:
        decode(s, ProblemLog("stop"))
    assert f"{f}:1:" in str(exc.value)
    report = check_root("wflw", tmp_path)
    (problem,) = report["splits"]["train"]["problems"]
    assert problem["file"] == str(f) and problem["line"] == 1 and "unreadable image" in problem["error"]
    assert report["splits"]["train"]["samples"] == 0


def test_hrnet_csv_reader(tmp_path, w300_root):
    samples = w300.read_split(w300_root, "challenging", ProblemLog())
    header = "image_name,scale,center_w,center_h," + ",".join(f"original_{i}_x,original_{i}_y" for i in range(68))
    rows = [header]
    for s in samples:
        lm = s.landmarks + 1
        rel = Path(s.image_path).relative_to(w300_root)
        rows.append(",".join([str(rel), "1.0", "50", "50", *[f"{v:.4f}" for v in lm.ravel()]]))
    rows.append("ibug/bad.jpg,1.0,50")
    f = tmp_path / w300.CSV_FILES["challenging"]
    f.write_text("\n".join(rows) + "\n")
    log = ProblemLog("skip")
    got = w300.read_csv(tmp_path, w300_root, "challenging", log)
    assert [s.image_path for s in got] == [s.image_path for s in samples]
    np.testing.assert_allclose(got[0].landmarks, samples[0].landmarks, atol=1e-3)
    (problem,) = log.problems
    assert problem.file == str(f) and problem.line == len(rows) and "wrong number of fields" in problem.error


def test_wflw_subset_list_disagreement_is_a_problem(tmp_path, wflw_root):
    import shutil

    root = tmp_path / "WFLW"
    shutil.copytree(wflw_root, root)
    listed = wflw.annotation_file(root, "blur")
    lines = listed.read_text().splitlines()
    listed.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(DataError, match="subset disagreement") as exc:
        wflw.read_split(root, "blur", ProblemLog("stop"))
    assert str(listed) in str(exc.value)
    report = check_root("wflw", root)
    assert report["splits"]["blur"]["problems"] and not report["splits"]["makeup"]["problems"]


def test_read_split_skip_mode_reports_counts(tmp_path, capsys):
    f = _wflw_tree(tmp_path, [" ".join(_good_line()), "1 2 3", " ".join(_good_line("a/nope.jpg"))])
    cfg = DataConfig(format="wflw", root=str(tmp_path), on_error="skip")
    samples = datasets.read_split(cfg, "train")
    assert len(samples) == 1
    err = capsys.readouterr().err
    assert "skipped 2 samples" in err and f"{f}:2" in err and f"{f}:3" in err
    with pytest.raises(DataError, match=f"{f}:2"):
        datasets.read_split(DataConfig(format="wflw", root=str(tmp_path)), "train")


# ----------------------------------------------------------------------------- CLI and cache


def test_check_cli_json(w300_root, capsys):
    rc = data_main(["check", "--format", "300w", "--root", str(w300_root), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert set(out["splits"]) == set(w300.SPLITS)
    assert out["splits"]["full"]["samples"] > 0 and out["splits"]["full"]["problems"] == []


def test_dataset_root_generates_once_deterministically(tmp_path):
    cfg = DataConfig(format="wflw", synthetic=SynthConfig(num=8, seed=2, image_size=96), cache_dir=str(tmp_path / "a"))
    root = datasets.dataset_root(cfg)
    assert root.name == "synth-wflw-8-2-96"
    ann = wflw.annotation_file(root, "train")
    stamp = ann.stat().st_mtime_ns
    assert datasets.dataset_root(cfg) == root and ann.stat().st_mtime_ns == stamp
    assert not [p for p in root.parent.iterdir() if p.name.startswith(".tmp")]
    cfg2 = DataConfig(format="wflw", synthetic=SynthConfig(num=8, seed=2, image_size=96), cache_dir=str(tmp_path / "b"))
    assert wflw.annotation_file(datasets.dataset_root(cfg2), "train").read_text() == ann.read_text()


def test_sample_normalises_arrays():
    s = Sample("x.jpg", [[1, 2], [3, 4]], [0, 0, 5, 5])
    assert s.landmarks.dtype == np.float32 and s.landmarks.shape == (2, 2) and s.box.shape == (4,)


def test_stale_synthetic_cache_is_redrawn(tmp_path):
    cfg = DataConfig(format="300w", synthetic=SynthConfig(num=8, seed=1, image_size=64), cache_dir=str(tmp_path))
    root = datasets.dataset_root(cfg)
    (root / ".synth-version").write_text("0\n")
    (root / "stale.txt").write_text("old")
    assert datasets.dataset_root(cfg) == root
    assert not (root / "stale.txt").exists() and synth.is_current(root)
    assert sorted(p.name for p in tmp_path.iterdir()) == [root.name]
