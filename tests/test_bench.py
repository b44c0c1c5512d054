"""lhp bench: known-answer accuracy, drift, latency, delegation and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from lhp_tf.bench import benchmark, load_bundle, main
from lhp_tf.errors import LhpError, run_main

pytestmark = pytest.mark.slow  # builds models with TensorFlow


def test_float_blob_model_finds_the_landmarks(blob_models):
    r = benchmark(blob_models["float"], blob_models["bundle"], runs=5, warmup=1)
    # the blob model is exact up to uint8 rounding and DARK: well under 1 % of the norm
    assert r["nme"] < 0.5 and r["fr"] == 0.0 and r["auc"] > 95.0
    assert set(r["subsets"]) == {"first_half", "second_half"}
    assert r["subsets"]["first_half"]["count"] == 6
    assert r["runtime"] == "ai_edge_litert" and r["quant"] == "float"
    assert (r["ops"]["total"], r["ops"]["delegated"]) == (2, 2)
    lat = r["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] and lat["mean"] > 0
    assert r["drift"] is None and r["reference_nme"] is None


def test_argmax_decoder_is_worse_than_dark(blob_models):
    dark = benchmark(blob_models["float"], blob_models["bundle"], runs=1, warmup=0)
    argmax = benchmark(blob_models["float"], blob_models["bundle"], runs=1, warmup=0, decoder="argmax")
    assert dark["nme"] < argmax["nme"] < 3.0


def test_int8_drift_against_float_reference_in_json(blob_models, capsys):
    rc = main([str(blob_models["int8"]), "--data", str(blob_models["bundle"]), "--reference",
               str(blob_models["float"]), "--runs", "3", "--warmup", "1", "--json"])
    assert rc == 0
    r = json.loads(capsys.readouterr().out)
    assert r["quant"] == "int8"
    assert r["nme"] < 1.0 and r["reference_nme"] < 0.5
    assert r["drift"]["nme_points"] == pytest.approx(r["nme"] - r["reference_nme"])
    assert r["drift"]["relative"] == pytest.approx(r["drift"]["nme_points"] / r["reference_nme"])
    assert 0 < r["drift"]["prediction_nme"] < 1.0
    assert set(r["latency_ms"]) == {"mean", "p50", "p90", "p99"}
    assert r["ops"]["not_delegated"] == {"AVERAGE_POOL_2D": 1}


def test_flip_test_and_text_report(blob_models, capsys):
    assert main([str(blob_models["float"]), "--data", str(blob_models["bundle"]), "--runs", "2", "--flip"]) == 0
    out = capsys.readouterr().out
    assert "NME %" in out and "first_half" in out and "XNNPACK  2 of 2 nodes delegated" in out


def _error(argv, capsys) -> str:
    assert run_main(main, argv, prog="lhp bench") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def test_errors_are_one_line_naming_the_file(blob_models, tmp_path, capsys):
    from tflite_toys import make_bundle

    bundle = str(blob_models["bundle"])
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\0" * 64)
    assert "junk.tflite: not a TFLite model" in _error([str(junk), "--data", bundle], capsys)

    small = tmp_path / "small.npz"
    make_bundle(small, n=2, input_size=32)
    err = _error([str(blob_models["float"]), "--data", str(small)], capsys)
    assert "blob_float.tflite: model input is 64x64" in err and "small.npz holds 32x32" in err

    five = tmp_path / "five.npz"
    make_bundle(five, n=2, k=5)
    err = _error([str(blob_models["float"]), "--data", str(five)], capsys)
    assert "predicts 3 landmarks" in err and "five.npz has 5" in err

    partial = tmp_path / "partial.npz"
    make_bundle(partial, n=2, drop=("norm", "crop2img"))
    err = _error([str(blob_models["float"]), "--data", str(partial)], capsys)
    assert "partial.npz: evaluation bundle is missing crop2img, norm" in err

    notnpz = tmp_path / "notnpz.npz"
    notnpz.write_text("hello")
    assert "notnpz.npz: not a readable .npz" in _error([str(blob_models["float"]), "--data", str(notnpz)], capsys)
    assert "absent.npz: evaluation bundle not found" in _error(
        [str(blob_models["float"]), "--data", str(tmp_path / "absent.npz")], capsys)


def test_missing_interpreter_is_one_line(blob_models, monkeypatch, capsys):
    for mod in ("ai_edge_litert", "ai_edge_litert.interpreter", "tflite_runtime", "tflite_runtime.interpreter"):
        monkeypatch.setitem(sys.modules, mod, None)
    err = _error([str(blob_models["float"]), "--data", str(blob_models["bundle"])], capsys)
    assert "no TFLite interpreter found" in err and "pip install" in err


def test_bundle_shape_checks(tmp_path):
    from tflite_toys import make_bundle

    arrays = make_bundle(tmp_path / "ok.npz", n=3)
    bad = dict(arrays, images=arrays["images"].astype(np.float32))
    np.savez(tmp_path / "float_images.npz", **bad)
    with pytest.raises(LhpError, match=r"float_images\.npz: images must be \(N, H, W, 3\) uint8"):
        load_bundle(tmp_path / "float_images.npz")
    bad = dict(arrays, norm=np.zeros(3, np.float32))
    np.savez(tmp_path / "zero_norm.npz", **bad)
    with pytest.raises(LhpError, match=r"zero_norm\.npz: norm has non-positive"):
        load_bundle(tmp_path / "zero_norm.npz")
    assert load_bundle(tmp_path / "ok.npz")["format"] == "300w"


def test_python_dash_m_entry_point(blob_models):
    proc = subprocess.run([sys.executable, "-m", "lhp_tf.bench", str(blob_models["float"]), "--data",
                           str(blob_models["bundle"]), "--runs", "2", "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["nme"] < 0.5
    proc = subprocess.run([sys.executable, "-m", "lhp_tf.bench", "nowhere.tflite", "--data", "nowhere.npz"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip() == "lhp bench: error: nowhere.npz: evaluation bundle not found"


def test_chunked_prediction_matches_one_pass(blob_models):
    from lhp_tf.bench import predict_landmarks
    from lhp_tf.runtime import TFLiteModel

    bundle = load_bundle(blob_models["bundle"])
    model = TFLiteModel(blob_models["float"])
    np.testing.assert_array_equal(predict_landmarks(model, bundle, chunk=5), predict_landmarks(model, bundle))
