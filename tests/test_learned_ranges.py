"""Learned int8 ranges (``export.calibration: learned``, ``lhp_tf.quantize.learned_ranges``)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

STEPS = "export.learned_steps=3"


def _graph(ops: list[tuple[str, list[int], list[int]]], names: list[str]):
    from lhp_tf.converters.quantizer import FloatGraph

    return FloatGraph(ops=ops, names=names, constants={}, inputs=[0], outputs=[len(names) - 1])


def _table(ranges: dict[str, tuple[float, float]]):
    from lhp_tf.converters.quantizer import RangeTable

    return RangeTable({n: {"min": np.array([lo]), "max": np.array([hi])} for n, (lo, hi) in ranges.items()})


def test_tensors_by_layer_takes_a_layers_last_call_and_keeps_real_suffixes() -> None:
    graph = _graph([("CONV_2D", [0], [1]), ("CONV_2D", [1], [2]), ("ADD", [2, 2], [3]), ("LOGISTIC", [3], [4])],
                   ["image", "conv/Conv2D;conv/BiasAdd", "conv_1/Conv2D", "relu_0/Relu;add/Add", "head_2/Sigmoid"])
    assert graph.tensors_by_layer({"conv", "relu_0", "head", "absent"}) == {
        "conv": "conv_1/Conv2D", "relu_0": "relu_0/Relu;add/Add", "head": "head_2/Sigmoid"}
    # a layer really named conv_1 is itself, not conv's second call
    assert graph.tensors_by_layer({"conv", "conv_1"}) == {"conv": "conv/Conv2D;conv/BiasAdd",
                                                          "conv_1": "conv_1/Conv2D"}


def test_copies_follow_what_free_ops_write_into_their_group() -> None:
    from lhp_tf.converters.quantizer import share_ranges

    names = ["image", "a", "b", "c"]
    graph = _graph([("CONV_2D", [0], [1]), ("RESHAPE", [1], [2]), ("CONV_2D", [2], [3])], names)
    stale = {"image": (0.0, 1.0), "a": (-1.0, 2.0), "b": (-5.0, 5.0), "c": (-3.0, 3.0)}
    table = _table(stale)
    share_ranges(table, graph)
    assert table.range("a") == table.range("b") == (-5.0, 5.0)  # the union, the copy's stale range in it
    table = _table(stale)
    share_ranges(table, graph, copies_follow=True)
    assert table.range("a") == table.range("b") == (-1.0, 2.0)
    assert table.range("c") == (-3.0, 3.0)


def test_tensors_int8_holds_at_one_scale_train_one_range() -> None:
    import types

    import tensorflow as tf
    from lhp_tf.quantize.learned_ranges import TrainableRanges, tied_rows

    names = ["image", "a", "b", "c", "d", "e"]
    graph = _graph([("CONV_2D", [0], [1]), ("RESHAPE", [1], [2]), ("CONV_2D", [2], [3]), ("LOGISTIC", [3], [4]),
                    ("RESHAPE", [4], [5])], names)
    table = _table({n: (-1.0, 1.0) for n in names})
    # a and its copy b share a row; c is alone; e copies a LOGISTIC's fixed range: its own row
    assert tied_rows(table, graph, ["a", "c", "b", "e"]) == [0, 1, 0, 2]
    fqs = [types.SimpleNamespace(lo=tf.constant(lo), hi=tf.constant(hi), source=source)
           for source, lo, hi in (("a", -1.0, 2.0), ("c", -0.5, 0.5), ("b", -3.0, 1.0))]
    trainable = TrainableRanges(fqs, 0.1, [0, 1, 0])
    assert trainable.ranges() == {"a": [-3.0, 2.0], "c": [-0.5, 0.5], "b": [-3.0, 2.0]}  # tied: the union
    x = tf.constant([5.0, -0.3])
    np.testing.assert_allclose(fqs[0].call(x), fqs[2].call(x))
    np.testing.assert_allclose(fqs[0].call(x)[0], 2.0)
    trainable.step(tf.constant([[1.0, 1.0], [0.0, 0.0]]))
    ranges = trainable.ranges()
    assert ranges["a"] == ranges["b"] and ranges["a"] != [-3.0, 2.0] and ranges["c"] == [-0.5, 0.5]
    assert len(TrainableRanges(fqs, 0.1).ranges()) == 3 and TrainableRanges(fqs, 0.1).bounds.shape[0] == 3


def test_saved_file_round_trips_and_bad_files_are_one_clear_error(tmp_path: Path) -> None:
    from lhp_tf.quantize import learned_ranges as lr

    from lhp_tf.errors import LhpError

    ckpt = tmp_path / "best.keras"
    ckpt.write_bytes(b"weights")
    key = lr.Key.of(ckpt, "xnnpack", 8, 3)
    learned = lr.LearnedRanges({"conv": [-1.0, 2.5]}, key, {"loss_first": 1.0})
    path = lr.save(lr.ranges_path(ckpt), learned)
    assert path == tmp_path / "best.ranges.json"
    back = lr.load(path)
    assert back.ranges == learned.ranges and back.key == key and back.stats == learned.stats
    assert lr.saved_for(ckpt, key)[0] is not None
    assert lr.ranges_path(ckpt, "npu") == tmp_path / "best.npu.ranges.json"  # one file per target
    found, why = lr.saved_for(ckpt, lr.Key.of(ckpt, "xnnpack", 16, 3))
    assert found is None and "calib_samples" in why
    lr.save(path, lr.LearnedRanges(learned.ranges, lr.Key(key.checkpoint_sha256, "xnnpack", 8, 3)))
    found, why = lr.saved_for(ckpt, key)  # a file saved before ranges were tied is stale
    assert found is None and "ties" in why
    lr.save(path, learned)
    ckpt.write_bytes(b"other weights")
    found, why = lr.saved_for(ckpt, lr.Key.of(ckpt, "xnnpack", 8, 3))
    assert found is None and "checkpoint_sha256" in why
    for broken, message in (({"ranges": {"conv": [1.0, 2.0]}}, r"ranges\.conv: expected \[lo, hi\]"),
                            ({"ranges": {"conv": [-1.0]}}, r"ranges\.conv: expected \[lo, hi\]"),
                            ({"format": "x"}, "'format' is not"),
                            ({"key": {"target": "xnnpack"}}, "bad 'key'")):
        doc = json.loads(learned.to_json())
        doc.update(broken)
        path.write_text(json.dumps(doc))
        with pytest.raises(LhpError, match=rf"{path}: {message}"):
            lr.load(path)
    path.write_text("{not json")
    with pytest.raises(LhpError, match=rf"{path}: not a learned-ranges file"):
        lr.load(path)


@pytest.fixture(scope="module")
def run(export_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny run folder with its ranges learned (3 steps) by ``lhp quantize ranges``."""
    from lhp_tf.cli import main

    folder = tmp_path_factory.mktemp("learned") / "run"
    folder.mkdir()
    for name in ("best.keras", "recipe.yaml"):
        shutil.copy2(export_run.parent / name, folder / name)
    assert main(["quantize", "ranges", str(folder / "best.keras"), "--set", STEPS]) == 0
    return folder / "best.keras"


@pytest.mark.slow
def test_ranges_are_learned_once_and_convert_quantises_with_them(run: Path, tmp_path: Path, capsys) -> None:
    from lhp_tf.converters.quantizer import FloatGraph, int8_params
    from lhp_tf.quantize import learned_ranges as lr

    from lhp_tf.cli import main
    from lhp_tf.runtime import op_delegation
    from lhp_tf.tflite_metadata import read_metadata

    saved = lr.load(lr.ranges_path(run))
    assert saved.key.steps == 3 and saved.key.target == "xnnpack" and saved.stats["trained"] > 50
    capsys.readouterr()
    assert main(["quantize", "ranges", str(run), "--set", STEPS]) == 0
    assert capsys.readouterr().out.startswith("up to date:")

    learned, plain = tmp_path / "learned.tflite", tmp_path / "mse.tflite"
    assert main(["convert", str(run), "--quant", "int8", "--set", "export.calibration=learned", "--set", STEPS,
                 "-o", str(learned)]) == 0
    assert "learning int8 ranges" not in capsys.readouterr().err  # the saved file was used
    assert main(["convert", str(run), "--quant", "int8", "--set", "export.calibration=mse", "-o", str(plain)]) == 0
    meta = read_metadata(learned)
    assert meta["calibration"] == "learned" and meta["calibration_learned"]["steps"] == 3
    ops = op_delegation(learned)
    assert ops["delegated"] == ops["total"]
    assert learned.read_bytes() != plain.read_bytes()
    # the int8 model holds the learned ranges (bar the few a same-scale group or a limit widened)
    by_layer = FloatGraph.read(learned.read_bytes()).tensors_by_layer(saved.ranges)
    from ai_edge_litert.interpreter import Interpreter

    scale = {d["name"]: d["quantization"][0] for d in Interpreter(model_path=str(learned)).get_tensor_details()}
    same = [np.isclose(scale[by_layer[layer]], int8_params(lo, hi)[0], rtol=1e-5)
            for layer, (lo, hi) in saved.ranges.items() if layer in by_layer]
    assert len(same) > 0.9 * len(saved.ranges) and np.mean(same) > 0.8, np.mean(same)


@pytest.mark.slow
def test_convert_learns_itself_when_the_saved_ranges_do_not_fit(run: Path, tmp_path: Path, capsys) -> None:
    from lhp_tf.quantize import learned_ranges as lr

    from lhp_tf.cli import main
    from lhp_tf.tflite_metadata import read_metadata

    out = tmp_path / "x.tflite"  # the NPU form: another graph (and a fixed batch in its simulation)
    assert main(["convert", str(run), "--quant", "int8", "--set", "export.calibration=learned", "--set", STEPS,
                 "--target", "npu", "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "learning int8 ranges (no best.npu.ranges.json" in err and "--target npu' saves them" in err, err
    meta = read_metadata(out)
    assert meta["target"] == "npu" and meta["calibration_learned"]["steps"] == 3
    # a saved file naming layers this model lacks belongs to another model: refused, nothing written
    path = lr.ranges_path(run)
    keep = path.read_text()
    try:
        doc = json.loads(keep)
        doc["ranges"]["not_a_layer"] = [-1.0, 1.0]
        path.write_text(json.dumps(doc))
        bad = tmp_path / "bad.tflite"
        code = main(["convert", str(run), "--quant", "int8", "--set", "export.calibration=learned", "--set", STEPS,
                     "-o", str(bad)])
        assert code != 0 and not bad.exists()
        assert "'not_a_layer'" in capsys.readouterr().err
    finally:
        path.write_text(keep)


@pytest.mark.slow
def test_benchmark_scores_the_learned_ranges_against_the_others(run: Path) -> None:
    """``benchmarks/learned_ranges.py`` end to end on the tiny run (3 steps, the saved ranges
    reused): one line per calibration, each int8 file fully delegated."""
    import re
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "learned_ranges.py"
    proc = subprocess.run([sys.executable, str(script), str(run.parent), "--steps", "3", "--against", "mse"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("up to date:"), proc.stdout
    for calibration in ("learned", "mse"):
        line = re.search(rf"^ *{calibration}: NME float [\d.]+ %  int8 [\d.]+ % .*; (\d+) of (\d+) nodes on XNNPACK$",
                         proc.stdout, re.M)
        assert line and line.group(1) == line.group(2), proc.stdout
