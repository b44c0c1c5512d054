"""Bounded, seeded fuzzing of the parsers that read user files: only LhpError may come out.

Each parser gets valid input mutated the ways damaged or hostile files look (bit flips,
truncation, inserted or deleted bytes, huge and non-finite numbers, very long names, bad
UTF-8, deep nesting). A parser may accept the mutant or raise the project's own error type
naming the file; any other exception (UnicodeDecodeError, OSError, RecursionError, ...) is a
traceback a user would see. The seeds are fixed, so a failure reproduces; the whole file
runs in a few seconds.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from lhp_tf.config import Recipe, load_recipe
from lhp_tf.data import w300, wflw
from lhp_tf.data.sample import ProblemLog
from lhp_tf.errors import LhpError
from lhp_tf.tflite_metadata import read_metadata

TOKENS = [b"1e39", b"-1e39", b"1e400", b"nan", b"inf", b"-0", b"99999999999999999999999", b"\xff\xfe",
          b"\xc3", b"\x00", b"x" * 5000, b"/" + b"a" * 300, b"\n", b"{", b"}", b"[" * 400, b"[" * 600, b": ", b"- ",
          b"&a", b"*a", b"!!python/object:os.system", b"\t", b"\r", b'"', b"'", b"0x10", b"1_000"]


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One to three random edits of ``data``."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(7)
        pos = rng.randrange(len(out) + 1)
        if op == 0 and out:  # bit flip
            i = min(pos, len(out) - 1)
            out[i] ^= 1 << rng.randrange(8)
        elif op == 1:  # truncation
            del out[pos:]
        elif op == 2:  # random bytes inserted
            out[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 3:  # a special token inserted
            out[pos:pos] = rng.choice(TOKENS)
        elif op == 4 and out:  # a whitespace-separated token replaced
            words = bytes(out).split(b" ")
            words[rng.randrange(len(words))] = rng.choice(TOKENS)
            out = bytearray(b" ".join(words))
        elif op == 5:  # a chunk deleted
            del out[pos:pos + rng.randint(1, 16)]
        else:  # a chunk duplicated
            end = min(len(out), pos + rng.randint(1, 64))
            out[pos:pos] = out[pos:end]
    return bytes(out)


def fuzz(valid: bytes, check: Callable[[bytes], None], seed: int, rounds: int) -> int:
    """Run ``check`` on ``rounds`` mutants; returns how many were accepted."""
    rng = random.Random(seed)
    accepted = 0
    for i in range(rounds):
        mutant = mutate(valid, rng)
        try:
            check(mutant)
            accepted += 1
        except LhpError:
            pass
        except Exception as exc:  # noqa: BLE001 - the point of the test
            pytest.fail(f"round {i} (seed {seed}): {type(exc).__name__}: {exc}\nmutant: {mutant[:400]!r}")
    return accepted


def _points(k: int) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, k, endpoint=False)
    return np.stack([64 + 30 * np.cos(t), 64 + 40 * np.sin(t)], 1)


def test_pts_reader(tmp_path: Path) -> None:
    rows = "\n".join(f"{x:.3f} {y:.3f}" for x, y in _points(68))
    valid = f"version: 1\nn_points:  68\n{{\n{rows}\n}}\n".encode()
    path = tmp_path / "face.pts"

    def check(data: bytes) -> None:
        path.write_bytes(data)
        lm = w300.parse_pts(path, ProblemLog("stop"))
        assert lm is not None and lm.shape == (68, 2) and lm.dtype == np.float32
        assert np.isfinite(lm).all()

    path.write_bytes(valid)
    check(valid)
    assert fuzz(valid, check, seed=11, rounds=1200) > 0


def test_wflw_reader(tmp_path: Path) -> None:
    images = tmp_path / "WFLW_images"
    (images / "a").mkdir(parents=True)
    cv2.imwrite(str(images / "a" / "face.jpg"), np.zeros((8, 8, 3), np.uint8))
    fields = [f"{v:.3f}" for v in _points(98).ravel()] + ["20", "20", "108", "108", "1", "0", "0", "0", "0", "1",
                                                           "a/face.jpg"]
    valid = (" ".join(fields) + "\n").encode() * 2
    file = tmp_path / "list.txt"

    def check(data: bytes) -> None:
        file.write_bytes(data)
        for s in wflw.read_lines(file, images, ProblemLog("stop")):
            assert s.landmarks.shape == (98, 2) and np.isfinite(s.landmarks).all()
            assert np.isfinite(s.box).all() and s.box[2] > s.box[0] and s.box[3] > s.box[1]

    check(valid)
    assert fuzz(valid, check, seed=12, rounds=1200) > 0


RECIPE = b"""name: fuzz
data:
  format: 300w
  synthetic: {num: 60, seed: 0, image_size: 128}
  heatmap_sigma: 1.5
  augment:
    rotation: 30.0
    scale: [0.75, 1.25]
model:
  arch: lhp-small
  input_size: [64, 64]
  channels: [8, 16, 32, 64]
train:
  epochs: 2
  batch_size: 8
  lr: 0.002
  lr_steps: [1]
  loss: mse
eval:
  decoder: dark
"""


def test_recipe_loader(tmp_path: Path) -> None:
    path = tmp_path / "recipe.yaml"

    def check(data: bytes) -> None:
        path.write_bytes(data)
        assert isinstance(load_recipe(path), Recipe)

    check(RECIPE)
    assert fuzz(RECIPE, check, seed=13, rounds=600) > 0


def _tflite_with_metadata(meta: bytes) -> bytes:
    """A minimal TFLite flatbuffer: Model {version, buffers, metadata} (schema slots 0, 4, 6)."""
    import flatbuffers

    b = flatbuffers.Builder(256)
    payload = b.CreateByteVector(meta)
    b.StartObject(3)  # Buffer {data, offset, size}
    b.PrependUOffsetTRelativeSlot(0, payload, 0)
    with_data = b.EndObject()
    b.StartObject(3)
    empty = b.EndObject()
    buffers = []
    for t in (empty, with_data):
        buffers.append(t)
    b.StartVector(4, len(buffers), 4)
    for t in reversed(buffers):
        b.PrependUOffsetTRelative(t)
    buffers_vec = b.EndVector()
    entries = []
    for name, index in (("min_runtime_version", 0), ("lhp_tf", 1)):
        s = b.CreateString(name)
        b.StartObject(2)  # Metadata {name, buffer}
        b.PrependUOffsetTRelativeSlot(0, s, 0)
        b.PrependUint32Slot(1, index, 0)
        entries.append(b.EndObject())
    b.StartVector(4, len(entries), 4)
    for t in reversed(entries):
        b.PrependUOffsetTRelative(t)
    meta_vec = b.EndVector()
    b.StartObject(7)
    b.PrependUint32Slot(0, 3, 0)
    b.PrependUOffsetTRelativeSlot(4, buffers_vec, 0)
    b.PrependUOffsetTRelativeSlot(6, meta_vec, 0)
    model = b.EndObject()
    b.Finish(model, file_identifier=b"TFL3")
    return bytes(b.Output())


def test_tflite_metadata_reader() -> None:
    meta = b'{"num_landmarks": 68, "input_size": [96, 96], "quant": "int8", "flip_permutation": [1, 0]}'
    valid = _tflite_with_metadata(meta)
    assert read_metadata(valid)["num_landmarks"] == 68

    def check(data: bytes) -> None:
        assert isinstance(read_metadata(data), dict)

    assert fuzz(valid, check, seed=14, rounds=4000) > 0
