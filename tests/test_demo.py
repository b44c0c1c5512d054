"""``lhp demo``: planning checks (fast) and the whole quick demo end to end (slow).

The end-to-end test runs what CI users and the README's first command run, then checks that
every figure in the report equals the JSON output it came from, and that the trained int8
model finds the face in a real photo and puts 68 points on it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from lhp_tf.config import load_recipe
from lhp_tf.demo import main as demo
from lhp_tf.demo import plan
from lhp_tf.errors import LhpError

PHOTO = Path(__file__).resolve().parents[1] / "lhp_tf" / "assets" / "astronaut.jpg"


def test_plan_scales_the_schedule_and_keeps_data_in_the_report_folder(tmp_path: Path) -> None:
    p = plan(tmp_path, quick=True)
    r = load_recipe(p.recipe_path, p.overrides)
    assert r.train.epochs == 2 and list(r.train.lr_steps) == [1]
    assert r.data.synthetic is not None and r.data.synthetic.num == 240
    assert Path(r.data.cache_dir) == (tmp_path / "data").resolve()
    q = plan(tmp_path, epochs=42)
    base, full = load_recipe(q.recipe_path), load_recipe(q.recipe_path, q.overrides)
    assert full.train.epochs == 42
    assert list(full.train.lr_steps) == [round(s * 42 / base.train.epochs) for s in base.train.lr_steps]


def test_plan_for_a_real_root_uses_the_small_recipe_and_its_schedule(tmp_path: Path) -> None:
    root = tmp_path / "WFLW"
    root.mkdir()
    p = plan(tmp_path / "out", data_root=str(root), fmt="wflw")
    r = load_recipe(p.recipe_path, p.overrides)
    assert p.recipe_path.name == "wflw-small.yaml"
    assert r.data.root == str(root.resolve()) and r.data.synthetic is None
    assert r.train.epochs == 210  # the paper's schedule unless --epochs says otherwise


def test_bad_options_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(LhpError, match="no such folder"):
        plan(tmp_path, data_root=str(tmp_path / "nope"))
    with pytest.raises(LhpError, match="recipe not found"):
        plan(tmp_path, recipe=str(tmp_path / "missing.yaml"))
    with pytest.raises(LhpError, match="--epochs"):
        plan(tmp_path, epochs=0)
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "report.json").write_text("{}")
    with pytest.raises(LhpError, match="already holds a demo run"):
        demo(["--out", str(tmp_path / "used")])


def _cells(report: str, label: str) -> list[str]:
    row = next(line for line in report.splitlines() if line.startswith(f"| {label}"))
    return [c.strip() for c in row.strip("|").split("|")]


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    assert demo(["--quick", "--out", str(out)]) == 0
    assert f"report: {out / 'README.md'}" in capsys.readouterr().out
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

    # the demo's own photo step (the repository's test portrait) and its report entry
    assert summary["photo"] == {"source": str(PHOTO), "faces": 1}
    assert (out / "photo.png").is_file() and "![photo](photo.png)" in report

    # the trained int8 model on a real photo: face found, 68 points inside the face box
    import cv2

    from lhp_tf.inference import LandmarkDetector

    faces = LandmarkDetector.from_path(out / summary["files"]["int8"])(cv2.imread(str(PHOTO)))
    assert len(faces) == 1
    pts, (x0, y0, x1, y1) = faces[0].landmarks, faces[0].box
    assert pts.shape == (68, 2) and np.isfinite(pts).all()
    pad = 0.125 * max(x1 - x0, y1 - y0)
    assert (pts[:, 0] > x0 - pad).all() and (pts[:, 0] < x1 + pad).all()
    assert (pts[:, 1] > y0 - pad).all() and (pts[:, 1] < y1 + pad).all()
