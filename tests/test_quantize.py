"""lhp quantize: drift report, selective int8, QAT (tfmot in a tf_keras child process)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="module")
def run(export_run: Path) -> Path:
    return export_run


@pytest.fixture(scope="module")
def bundle(run: Path) -> Path:
    from lhp_tf.converters.run_folder import find_recipe

    from lhp_tf.data.bundle import build_bundle, write_bundle

    rec = find_recipe(run)
    path = run.parent / "eval.npz"
    write_bundle(path, build_bundle(rec, rec.data.val_split))
    return path


def test_tolerance_is_the_larger_of_points_and_percent() -> None:
    from lhp_tf.quantize.drift import tolerance

    assert tolerance(3.0) == pytest.approx(0.1)
    assert tolerance(10.0) == pytest.approx(0.2)


def test_qat_rate_defaults_to_where_the_schedule_ended() -> None:
    from lhp_tf.quantize.qat import final_lr

    from lhp_tf.config import load_recipe

    recipes = Path(__file__).resolve().parents[1] / "recipes"
    assert final_lr(load_recipe(recipes / "300w.yaml")) == pytest.approx(2e-5)  # 2e-3, x0.1 at 170 and 200
    assert final_lr(load_recipe(recipes / "synthetic-300w.yaml")) == pytest.approx(2e-4)  # x0.1 at 9 of 10
    assert final_lr(load_recipe(recipes / "synthetic-300w.yaml", ["train.lr_steps=[10]"])) == pytest.approx(2e-3)


def test_tensor_names_map_back_to_keras_layers() -> None:
    from lhp_tf.quantize.layer_error import keras_layer_of

    layers = ["stem_conv1_conv", "stem_conv1_relu", "ccw_s0m0b0_crw_split"]
    fused = "lhp_small_1/stem_conv1_relu_1/Relu;lhp_small_1/stem_conv1_conv_1/convolution"
    assert keras_layer_of(fused, layers) == "stem_conv1_conv"
    assert keras_layer_of("lhp_small_1/ccw_s0m0b0_crw_split_1/Slice_2", layers) == "ccw_s0m0b0_crw_split"
    assert keras_layer_of("tfl.quantize", layers) == ""


@pytest.mark.slow
def test_drift_report_with_one_layer_kept_float(run: Path, bundle: Path, tmp_path: Path) -> None:
    from lhp_tf.quantize.drift import drift_report, format_drift

    from lhp_tf.runtime import TFLiteModel, op_delegation
    from lhp_tf.tflite_metadata import read_metadata

    r = drift_report(run, bundle, keep_float=1, debug_samples=2, top=5, save_dir=tmp_path)
    assert r["float_nme"] > 0 and r["int8_nme"] > 0
    assert r["drift_points"] == pytest.approx(r["int8_nme"] - r["float_nme"])
    errors = [e["rmse_over_scale"] for e in r["worst_layers"]]
    assert len(errors) == 5 and errors == sorted(errors, reverse=True)
    assert len(r["float_layers"]) == 1 and r["float_layers"][0] in {e["layer"] for e in r["worst_layers"]}
    selective = tmp_path / "int8_selective.tflite"
    assert read_metadata(selective)["float_layers"] == r["float_layers"]
    model = TFLiteModel(selective)
    assert model.input_dtype == np.int8 and model.output_dtype == np.int8
    ops = op_delegation(selective)
    assert ops["delegated"] == ops["total"]
    assert "worst quantised tensors" in format_drift(r)


@pytest.mark.slow
def test_qat_runs_one_step_and_exports_int8(run: Path, tmp_path: Path) -> None:
    from lhp_tf.cli import main
    from lhp_tf.runtime import TFLiteModel, op_delegation
    from lhp_tf.tflite_metadata import read_metadata

    out = tmp_path / "qat.tflite"
    assert main(["quantize", "qat", str(run), "--epochs", "1", "--steps-per-epoch", "1",
                 "--max-samples", "8", "--calib-samples", "4", "-o", str(out)]) == 0
    meta = read_metadata(out)
    assert meta["quant"] == "int8" and meta["qat_epochs"] == 1
    model = TFLiteModel(out)
    assert model.input_dtype == np.int8 and model.output_dtype == np.int8
    assert tuple(model._in["shape"]) == (1, 64, 64, 3)
    ops = op_delegation(out)
    assert ops["delegated"] == ops["total"], ops
    heatmaps = model.predict(np.full((1, 64, 64, 3), 128, np.uint8))
    assert heatmaps.shape == (1, 16, 16, 68) and 0.0 <= heatmaps.min() and heatmaps.max() <= 1.0
