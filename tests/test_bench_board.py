"""The board install: numpy<2 + tflite-runtime 2.14 + lhp-tf --no-deps, no TensorFlow.

Runs ``python -m lhp_tf.bench --json`` on the same models and bundle under the main
environment (LiteRT) and under ``.venv-board`` (tflite-runtime) and checks they agree.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _bench(python: Path, model: Path, bundle: Path, cwd: Path, *extra: str) -> dict:
    # cwd outside the repository: the board env must use its installed copy of lhp_tf
    proc = subprocess.run([str(python), "-m", "lhp_tf.bench", str(model), "--data", str(bundle),
                           "--runs", "5", "--warmup", "1", "--json", *extra],
                          capture_output=True, text=True, timeout=300, cwd=cwd)
    assert proc.returncode == 0, f"{python}: {proc.stderr[-3000:]}"
    return json.loads(proc.stdout)


def test_board_env_has_no_tensorflow(board_python, tmp_path):
    code = ("import importlib.util as u, lhp_tf, numpy; "
            "print(numpy.__version__, lhp_tf.__file__, "
            "[m for m in ('tensorflow', 'keras', 'ai_edge_litert') if u.find_spec(m)])")
    out = subprocess.run([str(board_python), "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, check=True).stdout.split()
    assert out[0].startswith("1.")
    assert "site-packages" in out[1]
    assert out[2] == "[]"


@pytest.mark.parametrize("quant", ["float", "int8"])
def test_same_nme_under_litert_and_tflite_runtime(board_python, blob_models, tmp_path, quant):
    ref = ("--reference", str(blob_models["float"]))
    main = _bench(Path(sys.executable), blob_models[quant], blob_models["bundle"], tmp_path, *ref)
    board = _bench(board_python, blob_models[quant], blob_models["bundle"], tmp_path, *ref)
    assert main["runtime"] == "ai_edge_litert"
    assert board["runtime"] == "tflite_runtime"
    assert board["nme"] == pytest.approx(main["nme"], abs=0.01)
    assert board["reference_nme"] == pytest.approx(main["reference_nme"], abs=0.01)
    for name, subset in main["subsets"].items():
        assert board["subsets"][name]["nme"] == pytest.approx(subset["nme"], abs=0.01)
    assert board["nme"] < 1.0  # and both are right, not just equal
    assert board["ops"]["total"] == main["ops"]["total"] == 2
    assert set(board["latency_ms"]) == {"mean", "p50", "p90", "p99"}
