"""lhp convert: checkpoint -> TFLite float/int8/int16x8, ONNX; metadata, batch 1, XNNPACK, atomicity."""

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
def converted(run: Path) -> dict[str, Path]:
    """float, int8 and int16x8 models converted through the ``lhp convert`` entry point."""
    from lhp_tf.cli import main

    out = {}
    for quant in ("float", "int8", "int16x8"):
        path = run.parent / f"model_{quant}.tflite"
        assert main(["convert", str(run), "--quant", quant, "-o", str(path)]) == 0
        out[quant] = path
    return out


@pytest.fixture(scope="module")
def images(run: Path) -> np.ndarray:
    """Evaluation-preprocessed crops (uint8, like a bundle) from the tiny run's data."""
    from lhp_tf.converters.run_folder import find_recipe
    from lhp_tf.quantize.calibration import calibration_images

    rec = find_recipe(run)
    return np.round(calibration_images(rec, 6, seed=1) * 255).astype(np.uint8)


def _keras_heatmaps(run: Path, images: np.ndarray) -> np.ndarray:
    from lhp_tf.converters.inference_model import inference_model, load_checkpoint

    model = inference_model(*load_checkpoint(run))
    return np.concatenate([model(images[i:i + 1].astype(np.float32) / 255.0).numpy() for i in range(len(images))])


@pytest.mark.slow
def test_metadata_round_trip(run: Path, converted: dict[str, Path]) -> None:
    from lhp_tf.converters.run_folder import find_recipe

    from lhp_tf.data.flip import flip_permutation
    from lhp_tf.spec import ModelSpec
    from lhp_tf.tflite_metadata import read_metadata

    rec = find_recipe(run)
    for quant, path in converted.items():
        meta = read_metadata(path)
        assert meta["quant"] == quant and meta["target"] == "xnnpack"
        assert meta["recipe_hash"] == rec.hash()
        spec = ModelSpec.from_dict(meta["spec"])
        assert spec == ModelSpec.from_recipe(rec)
        assert spec.input_size == (64, 64) and spec.num_landmarks == 68
        assert spec.codec.stride == 4 and spec.codec.sigma == rec.data.heatmap_sigma
        assert spec.codec.activation == "sigmoid"
        assert list(spec.flip_permutation) == flip_permutation(68).tolist()
        assert meta["input_scale"] == pytest.approx(1 / 255)
        assert spec.dataset_format == "300w" and spec.arch.name == "lhp-small"
        assert meta.get("calibration") == ("auto" if quant != "float" else None)  # the fixture pins auto
        # auto: the candidate that moved the landmarks least on augmented training faces
        if quant != "float":
            errors = meta["calibration_errors"]
            assert set(errors) == {"minmax", "mse"}
            assert meta["calibration_chosen"] == min(errors, key=errors.__getitem__)
        assert meta.get("int16_ops") == ([] if quant == "int8" else None)  # pure int8 by default


@pytest.mark.slow
def test_batch_one_dtypes_and_full_xnnpack_delegation(converted: dict[str, Path]) -> None:
    from lhp_tf.runtime import TFLiteModel, op_delegation

    for quant, dtype in (("float", np.float32), ("int8", np.int8)):
        model = TFLiteModel(converted[quant])
        assert tuple(model._in["shape"]) == (1, 64, 64, 3)
        assert tuple(model._out["shape"]) == (1, 16, 16, 68)
        assert model.input_dtype == dtype and model.output_dtype == dtype
        ops = op_delegation(converted[quant])
        assert ops["delegated"] == ops["total"], (quant, ops)
    assert _float_ops(converted["int8"]) == [], "int8 must be full-integer inside too"


def _interpreter(model: Path | bytes) -> object:
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_content=model) if isinstance(model, bytes) else Interpreter(model_path=str(model))


def _float_ops(path: Path | bytes) -> list[str]:
    """Ops of a .tflite that compute in float or convert to/from it (DEQUANTIZE, float QUANTIZE)."""
    interpreter = _interpreter(path)
    dtypes = {t["index"]: t["dtype"] for t in interpreter.get_tensor_details()}
    return [op["op_name"] for op in interpreter._get_ops_details()
            if any(dtypes.get(t) == np.float32 for t in (*op["inputs"], *op["outputs"]) if t >= 0)]


@pytest.mark.slow
def test_tflite_outputs_match_keras(run: Path, converted: dict[str, Path], images: np.ndarray) -> None:
    from lhp_tf.runtime import TFLiteModel

    reference = _keras_heatmaps(run, images)
    assert reference.std() > 0.05  # a model whose heatmaps vary, or the comparisons below are empty
    np.testing.assert_allclose(TFLiteModel(converted["float"]).predict(images), reference, atol=1e-4)
    for quant, tol in (("int16x8", 0.02), ("int8", 0.1)):
        got = TFLiteModel(converted[quant]).predict(images)
        assert np.abs(got - reference).mean() < tol / 4, quant
        assert np.corrcoef(got.ravel(), reference.ravel())[0, 1] > 0.95, quant


@pytest.mark.slow
def test_onnx_export_runs_in_onnxruntime_and_matches_keras(run: Path, images: np.ndarray) -> None:
    import onnx
    import onnxruntime as ort
    from lhp_tf.converters.export import export_checkpoint

    path = export_checkpoint(run, run.parent / "model.onnx", to="onnx")
    assert min(o.version for o in onnx.load(path).opset_import if o.domain in ("", "ai.onnx")) >= 13
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    got = np.concatenate([session.run(None, {"image": images[i:i + 1].astype(np.float32) / 255.0})[0]
                          for i in range(len(images))])
    np.testing.assert_allclose(got, _keras_heatmaps(run, images), atol=1e-4)


def test_mse_ranges_clip_outliers_but_keep_uniform_ranges() -> None:
    from lhp_tf.converters.quantizer import best_scale

    rng = np.random.default_rng(0)
    # a million well-behaved values and two outliers that set min/max: levels belong to the bulk
    heavy = np.concatenate([rng.normal(0.0, 1.0, 1_000_000), [40.0, -40.0]])
    assert best_scale(heavy, -40.0, 40.0) < 0.5
    uniform = rng.uniform(0.0, 6.0, 20000)  # a ReLU-like tensor whose every level is used
    assert best_scale(uniform, 0.0, float(uniform.max())) == 1.0


def test_failed_write_leaves_old_file_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lhp_tf.converters.tflite import write_bytes

    import lhp_tf.checkpoint

    target = tmp_path / "model.tflite"
    target.write_bytes(b"previous model")

    def crash(fd: int) -> None:  # the data is written, the commit never happens
        raise OSError("disk gone")

    monkeypatch.setattr(lhp_tf.checkpoint.os, "fsync", crash)
    with pytest.raises(OSError, match="disk gone"):
        write_bytes(target, b"TFL3" * 1000)
    assert target.read_bytes() == b"previous model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.tflite"]


@pytest.mark.slow
def test_failed_conversion_writes_nothing(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lhp_tf.converters.export as export

    def broken(*args: object, **kwargs: object) -> bytes:
        raise RuntimeError("converter crashed")

    monkeypatch.setattr(export, "convert_tflite", broken)
    out = run.parent / "never.tflite"
    with pytest.raises(RuntimeError):
        export.export_checkpoint(run, out, quant="float")
    assert not out.exists()
    assert not [p for p in run.parent.iterdir() if p.name.startswith(".never")]


def test_recipe_found_in_run_folder_or_given(tmp_path: Path) -> None:
    from lhp_tf.converters.run_folder import find_recipe

    from lhp_tf.config import dump_recipe, load_recipe
    from lhp_tf.errors import LhpError

    repo = Path(__file__).resolve().parents[1]
    rec = load_recipe(repo / "recipes" / "synthetic-300w.yaml", ["model.input_size=[64,64]"])
    run = tmp_path / "run"
    run.mkdir()
    ckpt = run / "best.keras"
    ckpt.write_bytes(b"placeholder")
    with pytest.raises(LhpError, match="--recipe"):
        find_recipe(ckpt)
    (run / "recipe.yaml").write_text(dump_recipe(rec))
    assert find_recipe(ckpt).hash() == rec.hash()
    assert find_recipe(ckpt).model.input_size == (64, 64)
    given = find_recipe(ckpt, repo / "recipes" / "synthetic-300w.yaml")
    assert given.model.input_size == (96, 96)
    with pytest.raises(LhpError, match="not found"):
        find_recipe(tmp_path / "missing.keras")


def test_bad_quant_and_format_are_clear_errors(tmp_path: Path) -> None:
    from lhp_tf.converters.export import export_checkpoint

    from lhp_tf.errors import LhpError

    with pytest.raises(LhpError, match="--to"):
        export_checkpoint(tmp_path / "x.keras", tmp_path / "x.bin", to="coreml")
    with pytest.raises(LhpError, match="--int16: mixed precision is for --to tflite --quant int8"):
        export_checkpoint(tmp_path / "x.keras", tmp_path / "x.bin", quant="float", int16=["LOGISTIC"])
    lone = tmp_path / "lone" / "best.keras"  # no recipe.yaml beside it
    lone.parent.mkdir()
    lone.write_bytes(b"not loaded: the options are checked first")
    with pytest.raises(LhpError, match="give 'auto' alone"):
        export_checkpoint(lone, tmp_path / "x.tflite", quant="int8", int16=["auto", "LOGISTIC"])
    with pytest.raises(LhpError, match="--int16 auto scores its trials on the recipe's training faces"):
        export_checkpoint(lone, tmp_path / "x.tflite", quant="int8", int16=["auto"])


@pytest.mark.slow
def test_saved_model_export_serves_heatmaps(run: Path, images: np.ndarray) -> None:
    import tensorflow as tf
    from lhp_tf.converters.export import export_checkpoint

    folder = export_checkpoint(run, run.parent / "saved_model", to="saved_model")
    loaded = tf.saved_model.load(str(folder))  # keep a reference: it owns the variables
    served = loaded.serve(images[:1].astype(np.float32) / 255.0)
    np.testing.assert_allclose(np.asarray(served), _keras_heatmaps(run, images[:1]), atol=1e-5)
    assert not [p for p in run.parent.iterdir() if p.name.startswith(".saved_model")]
