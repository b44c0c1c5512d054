"""Training: resume after an interruption, determinism, mirrored strategy, recipe -> eval.

The runs are tiny (a one-stage lhp-small variant at 64x64 on ~40 synthetic faces): these
tests check the training machinery, not the architecture, and the full lhp-small graph
alone takes about a minute to trace on a CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TINY_MODEL = {"arch": "lhp-small", "input_size": [64, 64], "modules": [1], "blocks": [1],
              "channels": [8, 16], "stem_channels": 8}


def tiny_recipe(folder: Path, cache: Path, **train: object) -> Path:
    """A recipe file for a 2-epoch run on 42 training / 9 validation synthetic faces."""
    doc = {
        "base": str(REPO / "recipes" / "synthetic-300w.yaml"),
        "name": "tiny",
        "data": {"cache_dir": str(cache), "synthetic": {"num": 60, "seed": 0, "image_size": 128},
                 "cache_size": 112},
        "model": TINY_MODEL,
        "train": {"epochs": 2, "batch_size": 8, "lr_steps": [1], "log_every": 1, **train},
        # 'lhp train' ends by learning the int8 ranges (export.calibration: learned): a few steps
        "export": {"learned_steps": 2, "calib_samples": 8},
    }
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory: pytest.TempPathFactory, cache: Path) -> tuple[Path, Path, dict]:
    """One uninterrupted 2-epoch run, shared by the tests that need a trained checkpoint."""
    from lhp_tf.config import load_recipe
    from lhp_tf.train import train

    folder = tmp_path_factory.mktemp("straight")
    recipe_path = tiny_recipe(folder, cache)
    result = train(load_recipe(recipe_path), folder / "run", log=lambda _: None,
                   stream=open(os.devnull, "w"))  # noqa: SIM115
    return recipe_path, folder / "run", result


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_run_folder_holds_recipe_checkpoints_metrics_and_tensorboard(straight_run) -> None:
    _, run, result = straight_run
    for name in ("recipe.yaml", "state.npz", "last.keras", "best.keras", "metrics.jsonl"):
        assert (run / name).is_file(), name
    assert any((run / "tb").iterdir())
    rows = _rows(run)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert [r["step"] for r in rows] == [5, 10]  # 42 faces, batch 8, full batches only
    assert [r["lr"] for r in rows] == pytest.approx([0.002, 0.0002])
    assert all(np.isfinite(r["loss"]) and np.isfinite(r["val_nme"]) for r in rows)
    assert result["best_nme"] == pytest.approx(min(r["val_nme"] for r in rows))
    assert not [p for p in run.iterdir() if p.name.startswith(".")]  # no temp files left


@pytest.mark.slow
def test_interrupted_run_resumes_to_the_same_result(straight_run, tmp_path: Path, cache: Path) -> None:
    """Stop after epoch 1, leave a half-written checkpoint behind, resume: the run must
    continue at epoch 2 with the optimizer's step count and end exactly where the
    uninterrupted run ended (same seed, same machine: same metrics)."""
    from lhp_tf.checkpoint import load_state
    from lhp_tf.config import load_recipe
    from lhp_tf.train import train

    quiet = {"log": lambda _: None, "stream": open(os.devnull, "w")}  # noqa: SIM115
    recipe = load_recipe(tiny_recipe(tmp_path, cache))
    run = tmp_path / "run"
    train(recipe, run, max_epochs=1, **quiet)
    state = load_state(run / "state.npz")
    assert state.epoch == 1 and [r["step"] for r in state.history] == [5]
    (run / ".last.crash.keras").write_bytes(b"half a zip")  # a kill during a checkpoint write
    (run / "last.keras").write_bytes(b"torn")  # derived view: must be rebuilt from the state

    logs: list[str] = []
    result = train(recipe, run, resume=True, log=logs.append, stream=quiet["stream"])
    assert any("1 epoch(s) done, optimizer step 5" in line for line in logs), logs
    assert result["epoch"] == 2
    resumed, straight = _rows(run), _rows(straight_run[1])
    assert [r["step"] for r in resumed] == [5, 10]
    for a, b in zip(resumed, straight, strict=True):
        assert a["loss"] == b["loss"] and a["val_nme"] == b["val_nme"]

    from lhp_tf.model.network import load_model

    load_model(run / "last.keras")  # rebuilt, loadable


def test_existing_run_is_not_overwritten_without_resume(tmp_path: Path) -> None:
    from lhp_tf.config import load_recipe
    from lhp_tf.errors import LhpError
    from lhp_tf.train import train

    run = tmp_path / "run"
    run.mkdir()
    (run / "state.npz").write_bytes(b"")
    with pytest.raises(LhpError, match="--resume"):
        train(load_recipe(tiny_recipe(tmp_path, tmp_path / "cache")), run)


def test_step_decay_schedule() -> None:
    from lhp_tf.config import load_recipe
    from lhp_tf.train import learning_rate

    recipe = load_recipe(REPO / "recipes" / "base.yaml")
    lrs = [learning_rate(recipe, e) for e in (0, 169, 170, 199, 200, 209)]
    assert lrs == pytest.approx([0.002, 0.002, 0.0002, 0.0002, 0.00002, 0.00002])


@pytest.mark.slow
def test_mirrored_strategy_trains_on_two_logical_cpus(tmp_path: Path, cache: Path) -> None:
    recipe = tiny_recipe(tmp_path, cache, distribute="mirrored", steps_per_epoch=2, epochs=1)
    script = textwrap.dedent(f"""
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from lhp_tf.config import load_recipe
        from lhp_tf.train import train
        logs = []
        result = train(load_recipe({str(recipe)!r}), {str(tmp_path / "run")!r}, log=logs.append)
        print("REPLICAS", [l for l in logs if "replica" in l])
        print("RESULT", result["last"]["step"], result["last"]["loss"])
    """)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "2 replica(s)" in out.stdout, out.stdout
    step, loss = out.stdout.split("RESULT")[1].split()
    assert int(step) == 2 and np.isfinite(float(loss))
    assert (tmp_path / "run" / "best.keras").is_file()


@pytest.mark.slow
def test_lhp_eval_json_on_the_best_checkpoint(straight_run, tmp_path: Path) -> None:
    recipe, run, _ = straight_run
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run([sys.executable, "-m", "lhp_tf.cli", "eval", str(recipe), "--checkpoint",
                          str(run / "best.keras"), "--json", "--out", str(tmp_path / "eval")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert list(result["splits"]) == ["common", "challenging", "full", "test"]
    for row in result["splits"].values():
        assert set(row) >= {"nme", "fr", "auc", "mean_shape_nme"}
        assert row["nme"] > 0 and 0 <= row["fr"] <= 100 and 0 <= row["auc"] <= 100
        assert 0 < row["mean_shape_nme"] < 100
    assert result["params"] > 0 and result["mflops"] > 0
    assert result["splits"]["full"]["nme"] == pytest.approx(_rows(run)[-1]["val_nme"])
    for name in ("ced.png", "sample_00.png", "eval.json"):
        assert (tmp_path / "eval" / name).is_file(), name


def test_eval_refuses_a_missing_checkpoint(tmp_path: Path) -> None:
    from lhp_tf.errors import LhpError
    from lhp_tf.evaluate import main

    recipe = tiny_recipe(tmp_path, tmp_path / "cache")
    with pytest.raises(LhpError, match="not found"):
        main([str(recipe), "--checkpoint", str(tmp_path / "nope.keras")])


@pytest.mark.slow
def test_kill_9_mid_run_then_resume_loses_at_most_one_epoch(tmp_path: Path, cache: Path) -> None:
    """A real SIGKILL at an arbitrary moment (the poll lands anywhere in an epoch or a
    checkpoint write); the resumed run continues from the last committed epoch with the
    optimizer step count that epoch ended with."""
    import signal
    import time

    recipe = tiny_recipe(tmp_path, cache, epochs=20, val_every=5)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "lhp_tf.train", str(recipe), "--workdir", str(run)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 240
        while not (run / "state.npz").exists() and time.monotonic() < deadline:
            assert proc.poll() is None, "training exited before its first checkpoint"
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    from lhp_tf.checkpoint import load_state

    done = load_state(run / "state.npz").epoch
    assert 1 <= done < 20
    out = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, env=env, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"{done} epoch(s) done, optimizer step {5 * done}" in out.stdout, out.stdout
    rows = _rows(run)
    assert [r["epoch"] for r in rows] == list(range(1, 21))
    assert [r["step"] for r in rows] == [5 * e for e in range(1, 21)]


@pytest.mark.slow
def test_lhp_train_ends_with_the_learned_int8_ranges_of_best_keras(tmp_path: Path, cache: Path, capsys) -> None:
    """``export.calibration: learned`` (the default): ``lhp train`` saves best.keras's ranges,
    under the key ``lhp convert`` will look for; ``--no-ranges`` skips them."""
    from lhp_tf.converters.deploy import DEFAULT_TARGET
    from lhp_tf.quantize import learned_ranges as lr

    from lhp_tf.config import load_recipe
    from lhp_tf.train import main

    recipe = tiny_recipe(tmp_path, cache, epochs=1, lr_steps=[])
    rec = load_recipe(recipe)
    assert rec.export.calibration == "learned"
    assert main([str(recipe), "--workdir", str(tmp_path / "run")]) == 0
    ckpt = tmp_path / "run" / "best.keras"
    key = lr.Key.of(ckpt, DEFAULT_TARGET, rec.export.calib_samples, rec.export.learned_steps)
    saved, why = lr.saved_for(ckpt, key)
    assert saved is not None, why
    assert f"wrote {lr.ranges_path(ckpt)}" in capsys.readouterr().out
    assert main([str(recipe), "--workdir", str(tmp_path / "bare"), "--no-ranges"]) == 0
    assert not lr.ranges_path(tmp_path / "bare" / "best.keras").exists()
