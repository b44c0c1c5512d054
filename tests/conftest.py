"""Shared fixtures. Keep them generic: several test files use them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

sys.path.insert(0, str(REPO / "tools"))
from arm_board import PACKAGE_SOURCES, RUNTIMES  # noqa: E402  (one list for x86 and ARM boards)

#: what a typical ARM board image carries: tflite-runtime 2.14 only imports with numpy < 2
BOARD_REQUIREMENTS = RUNTIMES["tflite-runtime"]


def _pip(python: Path, *args: str) -> None:
    cmd = [str(python), "-m", "pip", "--disable-pip-version-check", "-q", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")




@pytest.fixture(scope="session")
def board_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Python of ``.venv-board``: numpy<2 + tflite-runtime 2.14 + lhp-tf installed ``--no-deps``.

    This is the board install of the README, without TensorFlow, Keras or LiteRT. The venv is
    created on first use (packages from the registry) and kept at the repo root (gitignored);
    the package itself is reinstalled every session so it is the working tree's code.
    """
    if sys.version_info[:2] > (3, 11):
        pytest.skip("tflite-runtime 2.14 has wheels up to Python 3.11 only")
    venv = REPO / ".venv-board"
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import numpy, tflite_runtime.interpreter, setuptools"]
    if not python.exists() or subprocess.run(probe, capture_output=True).returncode != 0:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, timeout=300)
        # setuptools/wheel only to build lhp-tf offline below (--no-build-isolation).
        _pip(python, "install", *BOARD_REQUIREMENTS, "setuptools>=68", "wheel")
    # Build from a copy: pip builds in-tree, and build/ in the shared tree would keep stale files.
    src = tmp_path_factory.mktemp("lhp_tf_src")
    for name in PACKAGE_SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif (REPO / name).exists():
            shutil.copy2(REPO / name, src / name)
    _pip(python, "install", "--no-deps", "--no-build-isolation", "--force-reinstall", str(src))
    return python


@pytest.fixture(scope="session")
def export_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny trained-looking run folder (``export_fixtures.make_run``) the converter and
    quantisation tests share: its checkpoint path; tests write their outputs beside it."""
    sys.path.insert(0, str(Path(__file__).parent))
    from export_fixtures import make_run

    root = tmp_path_factory.mktemp("export_run")
    return make_run(root / "run", root / "cache")


@pytest.fixture(scope="session")
def blob_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Known-answer float and int8 .tflite (with lhp_tf metadata) and their bundle.

    See tests/tflite_toys.py; building them imports TensorFlow (a few seconds).
    """
    from tflite_toys import write_blob_models

    return write_blob_models(tmp_path_factory.mktemp("blob"))
