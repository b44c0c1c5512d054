"""lhp_tf metadata: pure-Python reading, embedding with TensorFlow, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lhp_tf.errors import LhpError
from lhp_tf.tflite_metadata import embed_metadata, metadata_names, read_metadata

pytestmark = pytest.mark.slow  # builds a model with TensorFlow


@pytest.fixture(scope="module")
def plain_tflite() -> bytes:
    from tflite_toys import blob_keras_model, convert

    return convert(blob_keras_model(k=2, input_size=16), "float")


def test_embed_then_read_round_trip(plain_tflite, tmp_path):
    meta = {"num_landmarks": 2, "input_size": [16, 16], "flip_permutation": [1, 0], "quant": "float"}
    with_meta = embed_metadata(plain_tflite, meta)
    assert read_metadata(with_meta) == meta
    path = tmp_path / "m.tflite"
    path.write_bytes(with_meta)
    assert read_metadata(path) == meta
    assert read_metadata(str(path)) == meta
    # the converter's own entries survive next to ours
    assert "min_runtime_version" in metadata_names(path) and "lhp_tf" in metadata_names(path)


def test_embedding_again_replaces_the_entry(plain_tflite):
    once = embed_metadata(plain_tflite, {"a": 1, "long": "x" * 100})
    twice = embed_metadata(once, {"a": 2})
    assert read_metadata(twice) == {"a": 2}
    assert metadata_names(twice).count("lhp_tf") == 1
    assert len(twice) < len(once)


def test_embedded_model_still_runs(plain_tflite, tmp_path):
    from lhp_tf.runtime import TFLiteModel

    a, b = tmp_path / "a.tflite", tmp_path / "b.tflite"
    a.write_bytes(plain_tflite)
    b.write_bytes(embed_metadata(plain_tflite, {"heatmap_stride": 4}))
    images = np.random.default_rng(0).integers(0, 256, size=(2, 16, 16, 3), dtype=np.uint8)
    np.testing.assert_array_equal(TFLiteModel(a).predict(images), TFLiteModel(b).predict(images))


def test_reads_buffers_stored_after_the_flatbuffer(plain_tflite):
    """Models over 2 GB keep buffer data outside the flatbuffer (Buffer.offset/size)."""
    from ai_edge_litert import schema_py_generated as schema_fb
    from ai_edge_litert.tools import flatbuffer_utils

    payload = json.dumps({"where": "outside"}).encode()
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(plain_tflite))
    buffer = schema_fb.BufferT()
    buffer.offset, buffer.size = 2 ** 40, len(payload)  # placeholder of the final width
    model.buffers.append(buffer)
    entry = schema_fb.MetadataT()
    entry.name, entry.buffer = "lhp_tf", len(model.buffers) - 1
    model.metadata.append(entry)
    size = len(flatbuffer_utils.convert_object_to_bytearray(model))
    buffer.offset = size + 3  # not aligned on purpose
    body = flatbuffer_utils.convert_object_to_bytearray(model)
    assert len(body) == size
    assert read_metadata(body + b"\0" * 3 + payload) == {"where": "outside"}


def test_errors_name_the_file(plain_tflite, tmp_path):
    not_tflite = tmp_path / "photo.tflite"
    not_tflite.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(LhpError, match=r"photo\.tflite: not a TFLite model"):
        read_metadata(not_tflite)
    bare = tmp_path / "bare.tflite"
    bare.write_bytes(plain_tflite)
    with pytest.raises(LhpError, match=r"bare\.tflite: no 'lhp_tf' metadata.*min_runtime_version"):
        read_metadata(bare)
    truncated = tmp_path / "cut.tflite"
    truncated.write_bytes(embed_metadata(plain_tflite, {"a": 1})[:64])
    with pytest.raises(LhpError, match=r"cut\.tflite: corrupt TFLite flatbuffer"):
        read_metadata(truncated)
    with pytest.raises(LhpError, match=r"missing\.tflite: cannot read"):
        read_metadata(tmp_path / "missing.tflite")


def test_non_object_json_is_rejected(plain_tflite):
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(embed_metadata(plain_tflite, {})))
    entry = next(m for m in model.metadata if m.name in ("lhp_tf", b"lhp_tf"))
    model.buffers[entry.buffer].data = np.frombuffer(b"[1, 2]", dtype=np.uint8)
    with pytest.raises(LhpError, match="JSON list, expected an object"):
        read_metadata(flatbuffer_utils.convert_object_to_bytearray(model))
