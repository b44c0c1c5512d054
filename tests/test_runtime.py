"""TFLite runtime wrapper: interpreter choice, quantisation, XNNPACK delegation, errors."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from lhp_tf.errors import LhpError
from lhp_tf.runtime import TFLiteModel, load_interpreter, op_delegation, runtime_name

pytestmark = pytest.mark.slow  # builds models with TensorFlow


def test_prefers_litert(blob_models):
    interpreter, name = load_interpreter(blob_models["float"], num_threads=2)
    assert name == runtime_name() == "ai_edge_litert"
    assert interpreter.get_input_details()[0]["shape"].tolist() == [1, 64, 64, 3]


def test_missing_interpreter_says_how_to_install(blob_models, monkeypatch):
    for mod in ("ai_edge_litert", "ai_edge_litert.interpreter", "tflite_runtime", "tflite_runtime.interpreter"):
        monkeypatch.setitem(sys.modules, mod, None)
    with pytest.raises(LhpError, match="pip install ai-edge-litert"):
        load_interpreter(blob_models["float"])


def test_corrupt_files_are_named(tmp_path, blob_models):
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(LhpError, match=r"junk\.tflite: not a TFLite model"):
        load_interpreter(junk)
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(blob_models["float"].read_bytes()[:200])
    with pytest.raises(LhpError, match=r"cut\.tflite: "):
        TFLiteModel(cut)


def test_op_delegation_counts_what_xnnpack_took(tmp_path, blob_models):
    from tflite_toys import write_resize_model

    # conv -> RESIZE_NEAREST_NEIGHBOR -> conv: XNNPACK takes both convs in two partitions
    assert op_delegation(write_resize_model(tmp_path / "resize.tflite")) == {
        "total": 3, "delegated": 2, "partitions": 2, "not_delegated": {"RESIZE_NEAREST_NEIGHBOR": 1}}
    # average pool + 1x1 conv: all of it
    assert op_delegation(blob_models["float"]) == {"total": 2, "delegated": 2, "partitions": 1, "not_delegated": {}}
    # int8: LiteRT's XNNPACK takes the conv, not this average pool
    assert op_delegation(blob_models["int8"]) == {
        "total": 2, "delegated": 1, "partitions": 1, "not_delegated": {"AVERAGE_POOL_2D": 1}}


def test_model_reads_metadata_and_shapes(blob_models):
    model = TFLiteModel(blob_models["float"])
    assert model.metadata["quant"] == "float"
    assert (model.input_size, model.heatmap_size, model.num_landmarks, model.codec.stride) == ((64, 64), (16, 16), 3, 4)
    assert model.spec is not None and model.spec.arch.name == "toy"


def test_int8_model_matches_float_after_quantisation(blob_models):
    images = np.load(blob_models["bundle"])["images"][:4]
    f32, i8 = TFLiteModel(blob_models["float"]), TFLiteModel(blob_models["int8"])
    assert i8.input_dtype == np.int8 and i8.output_dtype == np.int8
    hf, hq = f32.predict(images), i8.predict(images)
    assert hq.dtype == np.float32 and hq.shape == hf.shape == (4, 16, 16, 3)
    # outputs span [0, ~1]: one int8 step is ~1/255; allow a few
    assert np.abs(hq - hf).max() < 0.02
    # the float blob model is an average pool: check it against numpy
    expected = images.astype(np.float32).reshape(4, 16, 4, 16, 4, 3).mean(axis=(2, 4)) / 255
    np.testing.assert_allclose(hf, expected, atol=1e-5)


def test_predict_rejects_wrong_image_size(blob_models):
    model = TFLiteModel(blob_models["float"])
    with pytest.raises(LhpError, match=r"blob_float\.tflite: the model takes 64x64x3 images"):
        model.predict(np.zeros((1, 32, 32, 3), np.uint8))
