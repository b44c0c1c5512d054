"""Recipe values that validate by type but would waste a run are refused before TensorFlow starts."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from lhp_tf.config import CHECKED_ELSEWHERE, RANGES, RecipeError, load_recipe, numeric_keys

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "recipes" / "synthetic-300w.yaml"


def test_every_numeric_key_has_a_decided_range() -> None:
    keys = set(numeric_keys())
    assert keys - set(RANGES) - set(CHECKED_ELSEWHERE) == set()
    assert set(RANGES) - keys == set()


@pytest.mark.parametrize(("section", "key", "value", "message"), [
    ("train", "val_every", "0", r"train\.val_every: must be >= 1, got 0"),
    ("train", "steps_per_epoch", "-1", r"train\.steps_per_epoch: must be >= 1, got -1"),
    ("data", "heatmap_sigma", "0", r"data\.heatmap_sigma: must be > 0"),
    ("data", "box_scale", "-1.25", r"data\.box_scale: must be > 0"),
    ("train", "lr_factor", "0", r"train\.lr_factor: must be > 0 and <= 1"),
    ("train", "lr", ".nan", r"train\.lr: must be > 0 and <= 10, got nan"),
    ("train", "batch_size", "0", r"train\.batch_size: must be >= 1"),
    ("train", "epochs", "0", r"train\.epochs: must be >= 1"),
    ("train", "log_every", "0", r"train\.log_every: must be >= 1"),
    ("train", "val_samples", "0", r"train\.val_samples: must be >= 1"),
    ("train", "seed", "-3", r"train\.seed: must be >= 0"),
    ("eval", "fr_threshold", "0", r"eval\.fr_threshold: must be > 0 and <= 1"),
    ("export", "calib_samples", "0", r"export\.calib_samples: must be >= 1"),
    ("model", "channels", "[16, 32, 64, 0]", r"model\.channels: widths must be positive and even"),
])
def test_out_of_range_value_names_file_line_and_key(tmp_path: Path, section: str, key: str, value: str,
                                                    message: str) -> None:
    p = tmp_path / "r.yaml"
    p.write_text(f"base: {BASE}\nname: x\n{section}:\n  {key}: {value}\n")
    with pytest.raises(RecipeError, match=rf"r\.yaml:4: {message}"):
        load_recipe(p)


@pytest.mark.parametrize(("item", "message"), [
    ("data.augment.scale=[1.2,0.8]", r"data\.augment\.scale: \[low, high\] with low <= high"),
    ("data.augment.occlusion=1.5", r"data\.augment\.occlusion: must be >= 0 and <= 1, got 1\.5"),
    ("data.augment.rotation=-5", r"data\.augment\.rotation: must be >= 0 and <= 180"),
    ("data.num_parallel_calls=0", r"data\.num_parallel_calls: must be -1 \(autotune\) or >= 1"),
    ("data.synthetic.num=0", r"data\.synthetic\.num: must be >= 1"),
    ("data.cache_margin=0.5", r"data\.cache_margin: must be >= 1"),
])
def test_override_out_of_range_names_the_flag(item: str, message: str) -> None:
    with pytest.raises(RecipeError, match=re.escape(f"--set {item}: ") + message):
        load_recipe(BASE, [item])


def test_num_landmarks_must_match_the_format(tmp_path: Path) -> None:
    p = tmp_path / "r.yaml"
    p.write_text(f"base: {BASE}\nmodel:\n  num_landmarks: 98\n")
    with pytest.raises(RecipeError, match=r"r\.yaml:3: model\.num_landmarks: 300w faces have 68 landmarks"):
        load_recipe(p)
    assert load_recipe(BASE, ["model.num_landmarks=68"]).num_landmarks == 68
    assert load_recipe(BASE, ["data.format=wflw", "data.val_split=test", "data.eval_splits=[test]",
                             "model.num_landmarks=98"]).num_landmarks == 98


def test_exponent_without_dot_is_a_number() -> None:
    """YAML 1.1 reads 1e-3 as a string; a float key takes it as the number it means."""
    assert load_recipe(BASE, ["train.lr=1e-3"]).train.lr == pytest.approx(1e-3)
    assert load_recipe(BASE, ["data.heatmap_sigma=2"]).data.heatmap_sigma == 2.0
    with pytest.raises(RecipeError, match=r"train\.lr: expected a number, got str 'fast'"):
        load_recipe(BASE, ["train.lr=fast"])
    with pytest.raises(RecipeError, match=r"train\.epochs: expected an integer"):
        load_recipe(BASE, ["train.epochs=1e3"])


def test_non_utf8_recipe_is_one_line_naming_file_and_line(tmp_path: Path) -> None:
    p = tmp_path / "latin1.yaml"
    p.write_bytes("name: x\n# caf\u00e9\n".encode("latin-1"))
    with pytest.raises(RecipeError, match=r"latin1\.yaml:2: recipe is not UTF-8 text \(byte 0xe9"):
        load_recipe(p)


def test_bad_recipe_fails_before_tensorflow_and_writes_nothing(tmp_path: Path) -> None:
    p = tmp_path / "r.yaml"
    p.write_text(f"base: {BASE}\ntrain:\n  val_every: 0\n")
    run = tmp_path / "run"
    code = ("import sys\nfrom lhp_tf.errors import run_main\nfrom lhp_tf.train import main\n"
            f"rc = run_main(main, [{str(p)!r}, '--workdir', {str(run)!r}], prog='lhp train')\n"
            "assert 'tensorflow' not in sys.modules\nsys.exit(rc)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "r.yaml:3: train.val_every: must be >= 1, got 0" in lines[0], proc.stderr
    assert not run.exists()


def test_split_names_are_checked_against_the_format(tmp_path: Path) -> None:
    p = tmp_path / "r.yaml"
    p.write_text(f"base: {BASE}\ndata:\n  eval_splits: [full, tset]\n")
    with pytest.raises(RecipeError, match=r"r\.yaml:3: data\.eval_splits: 300w has no split 'tset' \(known: train, "):
        load_recipe(p)
    with pytest.raises(RecipeError, match=r"data\.val_split: wflw has no split 'full'"):
        load_recipe(BASE, ["data.format=wflw"])
