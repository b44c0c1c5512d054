"""``lhp demo``: planning checks. The whole quick demo runs end to end from an installed
wheel in tests/test_wheel_install.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from lhp_tf.config import load_recipe
from lhp_tf.demo import main as demo
from lhp_tf.demo import plan
from lhp_tf.errors import LhpError


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
    with pytest.raises(LhpError, match="recipe file not found"):
        plan(tmp_path, recipe=str(tmp_path / "missing.yaml"))
    with pytest.raises(LhpError, match="--epochs"):
        plan(tmp_path, epochs=0)
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "report.json").write_text("{}")
    with pytest.raises(LhpError, match="already holds a demo run"):
        demo(["--out", str(tmp_path / "used")])
