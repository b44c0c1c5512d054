"""A run folder has one owner, a failed command leaves it as it was, and orphans are cleaned.

Also: ``data.on_error: skip`` covers evaluation (training's validation and ``lhp eval``), and
a truncated checkpoint is reported as corrupt. The training here is the tiny one of
tests/test_train.py (one epoch, MSE), run once for the module.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml
from test_train import tiny_recipe

from lhp_tf.checkpoint import LOCK_FILE, CheckpointError, RunLock, atomic_write, clean_stale_temps
from lhp_tf.errors import LhpError, run_main

QUIET = {"log": lambda _: None, "stream": open(os.devnull, "w")}  # noqa: SIM115


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def skip_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(recipe, run folder, the broken validation image) of a 1-epoch MSE run with
    ``on_error: skip`` whose validation split holds one unreadable image."""
    from lhp_tf.config import load_recipe
    from lhp_tf.data.datasets import dataset_root
    from lhp_tf.train import train

    folder = tmp_path_factory.mktemp("skiprun")
    path = tiny_recipe(folder, folder / "cache", epochs=1, loss="mse")
    doc = yaml.safe_load(path.read_text())
    doc["data"]["on_error"] = "skip"
    path.write_text(yaml.safe_dump(doc))
    recipe = load_recipe(path)
    root = dataset_root(recipe.data)
    broken = sorted((root / "ibug").glob("*.jpg"))[0]  # ibug: validation ("full") only
    broken.write_bytes(b"not a jpeg any more")
    train(recipe, folder / "run", **QUIET)
    return path, folder / "run", broken


@pytest.mark.slow
def test_unreadable_validation_image_is_skipped_and_counted(skip_run) -> None:
    _, run, _ = skip_run
    (row,) = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert row["val_skipped"] == 1 and np.isfinite(row["val_nme"])
    assert not (run / LOCK_FILE).exists()


@pytest.mark.slow
def test_lhp_eval_skips_the_unreadable_image(skip_run, tmp_path: Path, capsys) -> None:
    from lhp_tf.evaluate import main

    recipe, run, _ = skip_run
    assert main([str(recipe), "--checkpoint", str(run / "best.keras"), "--json", "--out", str(tmp_path)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["splits"]["full"]["skipped"] == 1 and result["splits"]["challenging"]["skipped"] == 1
    assert result["splits"]["common"]["skipped"] == 0
    assert np.isfinite(result["splits"]["full"]["nme"])


@pytest.mark.slow
def test_truncated_state_resume_is_one_line_and_changes_nothing(skip_run, tmp_path: Path, capsys) -> None:
    from lhp_tf.train import main

    recipe, run, _ = skip_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    state = copy / "state.npz"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    (copy / "recipe.yaml").write_text("evidence: the recipe of the run that wrote this state\n")
    before = _snapshot(copy)
    rc = run_main(main, [str(recipe), "--workdir", str(copy), "--resume"], prog="lhp train")
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith(f"lhp train: error: {state}: run state is unreadable (BadZipFile")
    assert _snapshot(copy) == before


@pytest.mark.slow
def test_resume_with_another_model_changes_nothing(skip_run, tmp_path: Path) -> None:
    """A state that reads but does not fit the recipe's model is refused before any write."""
    from lhp_tf.config import load_recipe
    from lhp_tf.train import train

    recipe, run, _ = skip_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    before = _snapshot(copy)
    other = load_recipe(recipe, ["model.channels=[8,24]"])
    with pytest.raises(CheckpointError, match="state.npz: saved model weights"):
        train(other, copy, resume=True, **QUIET)
    assert _snapshot(copy) == before


def _holder(folder: Path) -> subprocess.Popen:
    """Another process that owns ``folder`` (prints 'locked' once it does)."""
    code = textwrap.dedent(f"""
        import time
        from lhp_tf.checkpoint import RunLock
        RunLock({str(folder)!r}).acquire()
        print("locked", flush=True)
        time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_training_into_a_busy_folder_is_refused(tmp_path: Path) -> None:
    from lhp_tf.config import load_recipe
    from lhp_tf.train import train

    run = tmp_path / "run"
    proc = _holder(run)
    try:
        recipe = load_recipe(tiny_recipe(tmp_path, tmp_path / "cache"))
        for resume in (False, True):
            with pytest.raises(LhpError, match=rf"{run}: run folder is in use by another training "
                                               rf"\(pid {proc.pid} on "):
                train(recipe, run, resume=resume, **QUIET)
        assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE]
    finally:
        proc.kill()
        proc.wait()


def test_two_lhp_train_commands_into_one_workdir(tmp_path: Path) -> None:
    """End to end: the second ``lhp train`` exits 2 with one line naming the first's pid."""
    import time

    recipe = tiny_recipe(tmp_path, tmp_path / "cache")
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "lhp_tf.train", str(recipe), "--workdir", str(run)]
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (run / LOCK_FILE).is_file() or not (run / LOCK_FILE).read_text():
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    finally:
        first.kill()
        first.wait()
    assert second.returncode == 2
    assert second.stderr.strip() == (f"lhp train: error: {run}: run folder is in use by another training "
                                     f"(pid {first.pid} on {os.uname().nodename}, since "
                                     f"{second.stderr.split(', since ')[1].split(')')[0]}); wait for it to "
                                     f"end or choose another --workdir")


def test_lock_of_a_killed_run_does_not_block(tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = _holder(run)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert json.loads((run / LOCK_FILE).read_text())["pid"] == proc.pid  # left behind
    with RunLock(run) as lock:
        assert json.loads((run / LOCK_FILE).read_text())["pid"] == os.getpid()
        with pytest.raises(LhpError, match=f"pid {os.getpid()}"):
            RunLock(run).acquire()  # one owner, even within a process
        assert lock.fd is not None
    assert not (run / LOCK_FILE).exists()


def test_orphans_of_killed_writes_are_removed_live_writers_kept(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    # a real kill -9 in the middle of an atomic write
    code = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from lhp_tf.checkpoint import atomic_write
        def write(tmp):
            Path(tmp).write_bytes(b"half a state")
            os.kill(os.getpid(), signal.SIGKILL)
        atomic_write({str(run / "state.npz")!r}, write)
    """)
    assert subprocess.run([sys.executable, "-c", code]).returncode == -signal.SIGKILL
    (orphan,) = [p for p in run.iterdir() if p.name.startswith(".state.")]
    legacy = run / ".last.ab12cd34.keras"  # an older lhp_tf's temp name, from before the lock
    legacy.write_bytes(b"")
    os.utime(legacy, (1e9, 1e9))
    names: list[str] = []
    atomic_write(run / "metrics.jsonl", lambda tmp: names.append(Path(tmp).name))
    live = run / names[0]  # this process's tag: a live writer
    live.write_bytes(b"")
    mine = run / ".notes.txt"
    mine.write_text("not ours")
    with RunLock(run) as lock:
        assert sorted(p.name for p in lock.removed) == sorted([orphan.name, legacy.name])
    assert live.exists() and mine.exists() and not orphan.exists() and not legacy.exists()
    assert clean_stale_temps(run) == []


def test_truncated_keras_checkpoint_is_reported_as_corrupt(export_run: Path, tmp_path: Path, capsys) -> None:
    from lhp_tf.converters.cli import main
    from lhp_tf.converters.inference_model import load_checkpoint

    cut = tmp_path / "cut.keras"
    data = export_run.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(LhpError, match=r"cut\.keras: corrupt \.keras file, truncated or not a zip") as exc:
        load_checkpoint(cut)
    assert "not found" not in str(exc.value)
    shutil.copy(export_run.parent / "recipe.yaml", tmp_path / "recipe.yaml")
    out = tmp_path / "m.tflite"
    rc = run_main(main, [str(cut), "-o", str(out), "--quant", "float"], prog="lhp convert")
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "corrupt .keras file" in err[0], err
    assert not out.exists()
