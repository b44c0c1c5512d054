"""A non-editable install of the built wheel, used from an empty folder: recipes by name, the
packaged demo photo, and the whole quick demo (what the README's first command runs).

The wheel is built from a copy of the package sources and installed into a fresh virtual
environment. Its third-party dependencies are borrowed from the test environment through a
``.pth`` file (installing TensorFlow again would add minutes and test pip, not us); pip still
resolves them against the wheel's metadata (``--no-index``: nothing is downloaded), and
``lhp_tf`` itself is imported from the new environment, never from the checkout.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from conftest import PACKAGE_SOURCES, REPO

pytestmark = pytest.mark.slow


def _run(venv: Path, cmd: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.run([str(venv / "bin" / cmd[0]), *cmd[1:]], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fresh venv with the built lhp-tf wheel installed (not editable)."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    for name in PACKAGE_SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(root / "dist"), str(src)], check=True,
                   capture_output=True, timeout=600)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    site = next((venv / "lib").glob("python*/site-packages"))
    (site / "_lhp_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    wheel = next((root / "dist").glob("lhp_tf-*.whl"))
    _run(venv, ["python", "-m", "pip", "--disable-pip-version-check", "-q", "install", "--no-index",
                str(wheel)], root)
    return venv


def test_package_comes_from_the_wheel_with_recipes_and_assets(installed: Path, tmp_path: Path) -> None:
    where = _run(installed, ["python", "-c", "import lhp_tf, lhp_tf.recipes as r; print(lhp_tf.__file__); "
                             "print(r.folder())"], tmp_path).stdout.split()
    assert all(Path(p).is_relative_to(installed) for p in where), where
    assert "synthetic-300w" in _run(installed, ["lhp", "recipes"], tmp_path).stdout
    assert "lhp-large" in _run(installed, ["lhp", "flops", "wflw"], tmp_path).stdout
    assert (Path(where[0]).parent / "assets" / "astronaut.jpg").is_file()


def test_train_starts_by_recipe_name(installed: Path, tmp_path: Path) -> None:
    proc = _run(installed, ["lhp", "train", "synthetic-300w", "--set", "train.epochs=1",
                            "--set", "data.synthetic.num=40", "--set", "train.steps_per_epoch=2",
                            "--set", "train.batch_size=4", "--set", "train.val_samples=8",
                            # one block per stage at 64x64: the recipe by name is what is tested
                            "--set", "model.modules=[1,1,1]", "--set", "model.blocks=[1,1,1]",
                            "--set", "model.input_size=[64,64]"], tmp_path)
    assert "done: 1 epoch(s)" in proc.stdout
    assert (tmp_path / "runs" / "synthetic-300w" / "best.keras").is_file()
    assert "cuInit" not in proc.stderr and "oneDNN" not in proc.stderr  # quiet by default


def _cells(report: str, label: str) -> list[str]:
    row = next(line for line in report.splitlines() if line.startswith(f"| {label}"))
    return [c.strip() for c in row.strip("|").split("|")]


@pytest.mark.slow
def test_quick_demo_from_the_wheel(installed: Path, tmp_path: Path) -> None:
    """What the README's first command runs, from an empty folder: every figure in the report
    equals the JSON it came from, and the trained int8 model puts 68 points on the packaged
    photo."""
    work = tmp_path / "empty"
    work.mkdir()
    proc = _run(installed, ["lhp", "demo", "--quick"], work, timeout=1500)
    out = work / "lhp_demo"
    assert "report: lhp_demo/README.md" in proc.stdout
    report = (out / "README.md").read_text()
    summary = json.loads((out / "report.json").read_text())
    ev = json.loads((out / "eval" / "eval.json").read_text())
    bf = json.loads((out / "bench" / "float.json").read_text())
    bi = json.loads((out / "bench" / "int8.json").read_text())
    for rel in ("eval/ced.png", "predictions.png", "run/best.keras", "eval_bundle.npz",
                summary["files"]["float"], summary["files"]["int8"]):
        assert (out / rel).is_file(), rel
        assert f"]({rel})" in report or f"`{rel}`" in report, rel
    assert bf["quant"] == "float" and bi["quant"] == "int8"

    # accuracy table: every figure is the JSON's, rounded
    split = bf["split"]
    keras = ev["splits"][split]
    assert _cells(report, "Keras checkpoint")[1:] == [str(keras["n"]), *(f"{keras[k]:.2f}" for k in ("nme", "fr", "auc"))]
    for label, b in (("TFLite float", bf), ("TFLite int8", bi)):
        assert _cells(report, label)[1:] == [str(b["images"]), *(f"{b[k]:.2f}" for k in ("nme", "fr", "auc"))]
    drift = re.search(r"int8 drift against float: ([+-][\d.]+) NME points; .* are ([\d.]+) % NME apart", report)
    assert drift and drift.group(1) == f"{bi['drift']['nme_points']:+.2f}"
    assert drift.group(2) == f"{bi['drift']['prediction_nme']:.2f}"
    assert bi["reference_nme"] == pytest.approx(bf["nme"])
    # cost table
    for label, b in (("float", bf), ("int8", bi)):
        cells = _cells(report, label)
        assert cells[1:6] == [str(ev["params"]), f"{ev['mflops']:.2f}",
                              *(f"{b['latency_ms'][k]:.3f}" for k in ("mean", "p50", "p90"))]
    assert 0.1e6 < ev["params"] < 1e6 and 1 < ev["mflops"] < 30  # lhp-small

    # the demo's own photo step (the packaged portrait, from the installed package) and its entry
    assert summary["photo"]["faces"] == 1
    assert Path(summary["photo"]["source"]).is_relative_to(installed)
    assert (out / "photo.png").is_file() and "![photo](photo.png)" in report

    # the trained int8 model on a real photo: face found, 68 points inside the face box
    import cv2

    from lhp_tf.inference import LandmarkDetector

    faces = LandmarkDetector.from_path(out / summary["files"]["int8"])(cv2.imread(summary["photo"]["source"]))
    assert len(faces) == 1
    pts, (x0, y0, x1, y1) = faces[0].landmarks, faces[0].box
    assert pts.shape == (68, 2) and np.isfinite(pts).all()
    pad = 0.125 * max(x1 - x0, y1 - y0)
    assert (pts[:, 0] > x0 - pad).all() and (pts[:, 0] < x1 + pad).all()
    assert (pts[:, 1] > y0 - pad).all() and (pts[:, 1] < y1 + pad).all()
