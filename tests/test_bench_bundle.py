"""A bundle whose numbers would make the benchmark's report up is refused before any timing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tflite_toys import make_bundle

from lhp_tf.bench import load_bundle
from lhp_tf.bench import main as bench_main
from lhp_tf.errors import LhpError, run_main


def _broken(tmp_path: Path, name: str, key: str, edit) -> Path:
    arrays = make_bundle(tmp_path / "ok.npz", n=6)
    value = arrays[key].astype(np.float32 if key != "images" else arrays[key].dtype).copy()
    edit(value)
    path = tmp_path / f"{name}.npz"
    np.savez(path, **dict(arrays, **{key: value}))
    return path


def _set(index, v):
    def edit(a: np.ndarray) -> None:
        a[index] = v
    return edit


@pytest.mark.parametrize(("name", "key", "edit", "message"), [
    ("nan_landmark", "landmarks", _set((2, 1, 0), np.nan), r"landmarks are NaN or infinite \(image 2\)"),
    ("inf_landmark", "landmarks", _set((4, 0, 1), np.inf), r"landmarks are NaN or infinite \(image 4\)"),
    ("inf_norm", "norm", _set(3, np.inf), r"norm has non-positive or non-finite .*\(image 3, inf\)"),
    ("nan_norm", "norm", _set(slice(1, 3), np.nan), r"norm has non-positive or non-finite .*\(image 1 and 1 more"),
    ("negative_norm", "norm", _set(0, -2.0), r"norm has non-positive or non-finite .*\(image 0, -2\.0\)"),
    ("nan_crop2img", "crop2img", _set((5, 0, 2), np.nan), r"crop2img must be a finite, invertible affine .*image 5"),
    ("singular_crop2img", "crop2img", _set((1, slice(None), slice(0, 2)), 0.0),
     r"crop2img must be a finite, invertible affine .*image 1"),
])
def test_bundle_with_made_up_numbers_is_refused(tmp_path: Path, name: str, key: str, edit, message: str) -> None:
    path = _broken(tmp_path, name, key, edit)
    with pytest.raises(LhpError, match=rf"{name}\.npz: {message}"):
        load_bundle(path)


def test_bench_command_stops_before_timing(tmp_path: Path, capsys) -> None:
    path = _broken(tmp_path, "nan", "landmarks", _set((0, 0, 0), np.nan))
    rc = run_main(bench_main, ["no_model_needed.tflite", "--data", str(path)], prog="lhp bench")
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "nan.npz: landmarks are NaN or infinite (image 0)" in err[0]
