"""Recipes: inheritance, overrides and errors that name the key, the file and the line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lhp_tf.config import RecipeError, dump_recipe, from_dict, load_recipe

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").rglob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_recipe_loads_and_round_trips(path: Path) -> None:
    recipe = load_recipe(path)
    again = from_dict(yaml.safe_load(dump_recipe(recipe)))
    assert again.to_dict() == recipe.to_dict()
    assert again.hash() == recipe.hash()


def test_inheritance_and_variants() -> None:
    small = load_recipe(ROOT / "recipes/300w-small.yaml")
    large = load_recipe(ROOT / "recipes/300w.yaml")
    assert small.model.arch == "lhp-small" and large.model.arch == "lhp-large"
    assert small.data == large.data and small.train == large.train
    assert large.train.lr == 0.002 and large.train.lr_steps == (170, 200)
    assert large.num_landmarks == 68
    assert load_recipe(ROOT / "recipes/wflw.yaml").num_landmarks == 98
    ablation = load_recipe(ROOT / "recipes/ablations/wflw-fusion-pointwise.yaml")
    assert ablation.model.fusion == "pointwise" and ablation.data.format == "wflw"


def test_overrides_are_typed() -> None:
    r = load_recipe(ROOT / "recipes/300w.yaml", ["model.head=mr", "train.lr_steps=[5, 8]",
                                                  "data.augment.rotation=30"])
    assert r.model.head == "mr"
    assert r.train.lr_steps == (5, 8)
    assert r.data.augment.rotation == 30.0


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_unknown_key_names_file_line_and_key(tmp_path: Path) -> None:
    p = _write(tmp_path, "r.yaml", "name: x\nmodel:\n  arch: lhp-small\n  fusoin: scaf\n")
    with pytest.raises(RecipeError) as exc:
        load_recipe(p)
    msg = str(exc.value)
    assert f"{p.resolve()}:4" in msg and "model.fusoin" in msg


def test_wrong_type_names_file_line_and_key(tmp_path: Path) -> None:
    p = _write(tmp_path, "r.yaml", "train:\n  epochs: ten\n")
    with pytest.raises(RecipeError, match=r"r\.yaml:2: train\.epochs: expected an integer"):
        load_recipe(p)


def test_wrong_type_in_base_points_at_base(tmp_path: Path) -> None:
    _write(tmp_path, "base.yaml", "data:\n  format: 300w\n  augment:\n    flip: maybe\n")
    p = _write(tmp_path, "child.yaml", "base: base.yaml\nname: child\n")
    with pytest.raises(RecipeError, match=r"base\.yaml:4: data\.augment\.flip: expected true or false"):
        load_recipe(p)


def test_missing_base_and_missing_recipe(tmp_path: Path) -> None:
    p = _write(tmp_path, "child.yaml", "base: nowhere.yaml\n")
    with pytest.raises(RecipeError, match=r"child\.yaml:1: base: file not found: .*nowhere\.yaml"):
        load_recipe(p)
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "absent.yaml")


def test_inheritance_cycle(tmp_path: Path) -> None:
    _write(tmp_path, "a.yaml", "base: b.yaml\n")
    _write(tmp_path, "b.yaml", "base: a.yaml\n")
    with pytest.raises(RecipeError, match="inherits from itself"):
        load_recipe(tmp_path / "a.yaml")


def test_bad_override_names_the_flag(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"--set model\.hed=mr: unknown key 'model\.hed'"):
        load_recipe(ROOT / "recipes/300w.yaml", ["model.hed=mr"])
    with pytest.raises(RecipeError, match="expected KEY=VALUE"):
        load_recipe(ROOT / "recipes/300w.yaml", ["model.head"])
    with pytest.raises(RecipeError, match="expected one of 'v1', 'v2', 'mr'"):
        load_recipe(ROOT / "recipes/300w.yaml", ["model.head=v3"])


def test_invalid_yaml_names_line(tmp_path: Path) -> None:
    p = _write(tmp_path, "r.yaml", "name: x\nmodel: [unclosed\n")
    with pytest.raises(RecipeError, match=r"r\.yaml:\d+: not valid YAML"):
        load_recipe(p)


def test_input_size_must_fit_the_network(tmp_path: Path) -> None:
    p = _write(tmp_path, "r.yaml", "model:\n  input_size: [100, 96]\n")
    with pytest.raises(RecipeError, match=r"r\.yaml:2: model\.input_size: .*multiples of 32"):
        load_recipe(p)
