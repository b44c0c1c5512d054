"""QAT on the deploy graph (``lhp quantize qat``, its default ``--graph deploy``, ``lhp_tf.quantize.deploy_qat``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="module")
def trained(export_run: Path) -> tuple:
    """The tiny run's network with BatchNorm statistics far from identity (so folding matters)
    and augmented training faces."""
    from lhp_tf.converters.inference_model import load_checkpoint
    from lhp_tf.converters.run_folder import find_recipe
    from lhp_tf.quantize.calibration import probe_images

    from lhp_tf.model.kbackend import keras

    rec = find_recipe(export_run)
    model, _ = load_checkpoint(export_run, rec)
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if type(layer) is keras.layers.BatchNormalization:
            c = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 2.0, c).astype(np.float32))
            layer.beta.assign(rng.normal(0.0, 0.3, c).astype(np.float32))
            layer.moving_mean.assign(rng.normal(0.0, 0.3, c).astype(np.float32))
            layer.moving_variance.assign(rng.uniform(0.3, 3.0, c).astype(np.float32))
    return model, rec, probe_images(rec, 8)


def _grid_distance(values: np.ndarray, lo: float, hi: float) -> float:
    """Largest distance of ``values`` from the 8-bit grid TensorFlow's fake-quant puts on
    [lo, hi] (nudged so that zero is a grid point), in steps."""
    scale = (hi - lo) / 255.0
    zero = np.clip(np.round(-lo / scale), 0, 255)
    steps = values / scale + zero
    return float(np.abs(steps - np.round(steps)).max())


def test_simulation_rounds_every_int8_tensor(trained: tuple) -> None:
    from lhp_tf.quantize.deploy_qat import SIGMOID_RANGE, calibrate, simulation

    from lhp_tf.model.kbackend import keras

    model, _, images = trained
    sim = simulation(model)
    reference = np.asarray(model(images, training=False))
    # observing: nothing rounded, the deploy graph's float function
    sim.rounding(False)
    # float32 sums in another order (folded BatchNorm, the deploy forms): error grows with the
    # magnitude of the redrawn weights' outputs (up to ~30 here), 1.1e-4 seen on AVX-512 CPUs
    np.testing.assert_allclose(np.asarray(sim.model([images], training=False)), reference, rtol=1e-4,
                               atol=1e-5 * float(np.abs(reference).max()))
    sim.rounding(True)
    calibrate(sim, [images[:4], images[4:]])
    rounded = np.asarray(sim.model([images], training=False))
    error = np.sqrt(np.mean((rounded - reference) ** 2)) / np.sqrt(np.mean(reference ** 2))
    assert 0.0 < error < 0.1, error
    assert sim.trained_variables == []  # without trains_weights: only the ranges are meant to move
    fixed = [fq for fq in sim.fake_quants if fq.fixed is not None]
    assert fixed and all(fq.fixed == SIGMOID_RANGE for fq in fixed)  # the attention sigmoids
    # every fake-quant output lies on its grid, sigmoids' on 1/256 steps
    probe = keras.Model(sim.model.inputs, [fq.output for fq in sim.fake_quants])
    for fq, out in zip(sim.fake_quants, probe([images], training=False), strict=True):
        lo, hi = float(fq.lo.numpy()), float(fq.hi.numpy())
        assert _grid_distance(np.asarray(out), lo, hi) < 1e-2, fq.name
    # a conv output read only by its ReLU is not rounded before it (the converter fuses them)
    nodes = [n for ns in sim.model._nodes_by_depth.values() for n in ns]
    relu_inputs = {id(t) for n in nodes if type(n.operation) is keras.layers.ReLU for t in n.input_tensors}
    fq_inputs = {id(t) for n in nodes if n.operation in sim.fake_quants for t in n.input_tensors}
    assert relu_inputs and fq_inputs and not relu_inputs & fq_inputs


def test_simulation_trains_the_checkpoints_own_variables(trained: tuple) -> None:
    """With ``trains_weights`` every conv is computed from the checkpoint's conv and BatchNorm
    variables: all of them train, and after a step the checkpoint (inference mode) still
    computes what the simulation's float graph does, with no write-back."""
    import tensorflow as tf
    from lhp_tf.converters.deploy import folded_convs
    from lhp_tf.quantize.deploy_qat import calibrate, simulation

    from lhp_tf.model.kbackend import keras

    model, _, images = trained
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    sim = simulation(clone, trains_weights=True)
    assert [v.path for v in sim.trained_variables] == [v.path for v in clone.trainable_variables]
    assert sum(fq.trained is not None and fq.trained[1] is not None for fq in sim.fake_quant_convs) == len(
        folded_convs(clone))
    calibrate(sim, [images])
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(sim.model([images], training=False)))
    grads = tape.gradient(loss, sim.trained_variables)
    assert all(g is not None for g in grads)
    bn = next(iter(folded_convs(clone).values()))
    moved = {id(bn.gamma), id(bn.beta)}
    assert all(float(tf.reduce_max(tf.abs(g))) > 0 for g, v in zip(grads, sim.trained_variables, strict=True)
               if id(v) in moved)
    for g, v in zip(grads, sim.trained_variables, strict=True):  # a step of plain gradient descent
        v.assign_sub(0.5 * g / (tf.reduce_max(tf.abs(g)) + 1e-12) * (tf.reduce_max(tf.abs(v)) + 1e-3) * 0.1)
    expected = np.asarray(clone(images, training=False))
    assert not np.allclose(expected, np.asarray(model(images, training=False)), atol=1e-3)
    sim.rounding(False)
    np.testing.assert_allclose(np.asarray(sim.model([images], training=False)), expected, rtol=1e-4,
                               atol=1e-5 * float(np.abs(expected).max()))


def test_a_deploy_conv_that_is_not_the_checkpoints_is_refused(trained: tuple) -> None:
    """Training the checkpoint's variables through a deploy copy whose channels were reordered
    would move the wrong weights: the simulation refuses to build."""
    from lhp_tf.converters.deploy import deploy_model, folded_convs
    from lhp_tf.quantize.deploy_qat import _checkpoint_convs

    from lhp_tf.errors import LhpError

    model, _, _ = trained
    graph = deploy_model(model, "xnnpack", "int8", batch_size=None, layout_rewrites=False)
    assert set(folded_convs(model)) <= set(_checkpoint_convs(model, graph))
    copy = graph.get_layer(next(iter(folded_convs(model))))
    kernel, bias = copy.get_weights()
    copy.set_weights([kernel[..., ::-1], bias[::-1]])
    with pytest.raises(LhpError, match=f"{copy.name} is not the checkpoint's conv"):
        _checkpoint_convs(model, graph)


def test_resumed_optimizer_continues_the_runs_state(export_run: Path, tmp_path: Path, capsys) -> None:
    """QAT on the deploy graph takes the run's Adam moments, step and epoch over as ``lhp train
    --resume`` does; without a state file it starts fresh at epoch 0."""
    import shutil

    from lhp_tf.converters.inference_model import load_checkpoint
    from lhp_tf.converters.run_folder import find_recipe
    from lhp_tf.quantize.deploy_qat import resumed_optimizer

    from lhp_tf.checkpoint import RunState, save_state
    from lhp_tf.train import make_optimizer

    rec = find_recipe(export_run)
    model, _ = load_checkpoint(export_run, rec)
    ckpt = tmp_path / "best.keras"
    shutil.copy2(export_run, ckpt)
    optimizer, first = resumed_optimizer(model, rec, ckpt)
    assert first == 0 and int(optimizer.iterations.numpy()) == 0
    assert "a fresh" in capsys.readouterr().out
    saved = make_optimizer(rec)
    saved.build(model.trainable_variables)
    rng = np.random.default_rng(3)
    values = [rng.normal(size=v.shape).astype(v.dtype) for v in saved.variables]
    values[0] = np.asarray(37, values[0].dtype)  # the step counter
    save_state(tmp_path / "state.npz", RunState(epoch=4, weights=model.get_weights(), optimizer=values,
                                                recipe_hash=rec.hash()))
    optimizer, first = resumed_optimizer(model, rec, ckpt)
    assert first == 4 and int(optimizer.iterations.numpy()) == 37
    for var, value in zip(optimizer.variables[2:], values[2:], strict=True):
        np.testing.assert_array_equal(var.numpy(), value)
    out = capsys.readouterr().out
    assert "continues" in out and "not its last weights" not in out
    optimizer, first = resumed_optimizer(model, rec, ckpt, moments=False)
    assert first == 4 and int(optimizer.iterations.numpy()) == 0


def _layer_scales(model: Path, layers: dict) -> dict[str, float]:
    """The int8 scale of the tensor each of ``layers`` writes last in the .tflite ``model``."""
    from lhp_tf.converters.quantizer import FloatGraph

    from lhp_tf.runtime import load_interpreter

    names = FloatGraph.read(model.read_bytes()).tensors_by_layer(layers)
    details = {d["name"]: d for d in load_interpreter(model)[0].get_tensor_details()}
    return {layer: float(details[name]["quantization"][0]) for layer, name in names.items()
            if name in details and details[name]["dtype"] == np.int8}


def test_dropped_elements_stay_unrounded() -> None:
    """QDrop: ``drop`` of the elements pass unrounded, drawn afresh per call; the rest on the grid."""
    import tensorflow as tf
    from lhp_tf.quantize.deploy_qat import fake_quant_classes

    from lhp_tf.errors import LhpError

    FakeQuant, _ = fake_quant_classes()
    fq = FakeQuant((-1.0, 1.0))
    x = tf.constant(np.random.default_rng(0).uniform(-1, 1, (4, 16, 16, 8)).astype(np.float32))
    rounded = np.asarray(fq(x))
    assert _grid_distance(rounded, -1.0, 1.0) < 1e-3 and not np.array_equal(rounded, x.numpy())
    fq.drop = 0.5
    first, second = np.asarray(fq(x)), np.asarray(fq(x))
    for out in (first, second):
        kept = out == x.numpy()
        assert 0.45 < kept.mean() < 0.55
        np.testing.assert_array_equal(out[~kept], rounded[~kept])
    assert not np.array_equal(first, second)
    from lhp_tf.quantize.deploy_qat import check_drop

    with pytest.raises(LhpError, match="--drop 1.0"):
        check_drop(1.0)


@pytest.mark.slow
def test_qat_on_the_deploy_graph_trains_and_exports_int8(export_run: Path, tmp_path: Path, capsys) -> None:
    """QAT trains under the checkpoint's learned ranges (learned and saved beside it first) and
    exports with them: they become the tuned checkpoint's ranges file, with which it converts
    again to the same int8 model."""
    import shutil

    from lhp_tf.quantize.deploy_qat import DROP
    from lhp_tf.quantize.learned_ranges import load, ranges_path

    from lhp_tf.cli import main
    from lhp_tf.runtime import TFLiteModel, op_delegation
    from lhp_tf.tflite_metadata import read_metadata

    run = tmp_path / "run"
    run.mkdir()
    for name in ("best.keras", "recipe.yaml"):
        shutil.copy2(export_run.parent / name, run / name)
    out = tmp_path / "qat.tflite"
    tuned = tmp_path / "tuned" / "qat.keras"
    learned = ["--set", "export.calibration=learned", "--set", "export.learned_steps=2"]
    assert main(["quantize", "qat", str(run / "best.keras"), "--graph", "deploy", "--epochs", "1", "--steps-per-epoch",
                 "2", "--lr", "0.01", "--max-samples", "8", "--calib-samples", "4", *learned, "-o", str(out),
                 "--save-checkpoint", str(tuned)]) == 0
    printed = capsys.readouterr().out
    assert "trains under the ranges of" in printed and "(learned now)" in printed, printed
    start, kept = load(ranges_path(run / "best.keras")), load(ranges_path(tuned))
    assert kept.ranges.keys() == start.ranges.keys() and kept.stats["source"] == "qat"
    meta = read_metadata(out)
    assert meta["quant"] == "int8" and meta["qat_graph"] == "deploy" and meta["qat_epochs"] == 1
    assert meta["qat_drop"] == DROP and kept.stats["qat_drop"] == DROP
    assert meta["calibration"] == "learned" and meta["calibration_learned"]["source"] == "qat"
    ops = op_delegation(out)
    assert ops["delegated"] == ops["total"], ops
    model = TFLiteModel(out)
    image = np.random.default_rng(0).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    heatmaps = model.predict(image)
    ptq = tmp_path / "ptq.tflite"
    assert main(["convert", str(run / "best.keras"), "--quant", "int8", "--calib-samples", "4", *learned,
                 "-o", str(ptq)]) == 0
    assert not np.array_equal(TFLiteModel(ptq).predict(image), heatmaps)  # the weights were fine-tuned
    # QAT trained under the ranges that conversion quantised each layer's tensor with
    scales = _layer_scales(ptq, kept.ranges)
    assert len(scales) > len(kept.ranges) // 2
    for layer, scale in scales.items():
        lo, hi = kept.ranges[layer]
        assert scale == pytest.approx((hi - lo) / 255.0, rel=1e-4), layer
    again = tmp_path / "again.tflite"
    capsys.readouterr()
    assert main(["convert", str(tuned), "--quant", "int8", "--calib-samples", "4", "-o", str(again)]) == 0
    assert "learning int8 ranges" not in capsys.readouterr().err  # the saved file is the checkpoint's
    np.testing.assert_array_equal(TFLiteModel(again).predict(image), heatmaps)


def test_deploy_graph_qat_refuses_fake_quant_ranges(export_run: Path, tmp_path: Path, capsys) -> None:
    from lhp_tf.cli import main

    code = main(["quantize", "qat", str(export_run), "--graph", "deploy", "--ranges", "fake-quant", "--epochs", "1",
                 "-o", str(tmp_path / "x.tflite")])
    assert code != 0
    assert "need --graph training" in capsys.readouterr().err
    assert not (tmp_path / "x.tflite").exists()


def test_drop_is_a_deploy_graph_option(export_run: Path, tmp_path: Path, capsys) -> None:
    from lhp_tf.cli import main

    code = main(["quantize", "qat", str(export_run), "--graph", "training", "--drop", "0.3", "--epochs", "1",
                 "-o", str(tmp_path / "x.tflite")])
    assert code != 0
    assert "--drop 0.3" in capsys.readouterr().err
    assert main(["quantize", "qat", str(export_run), "--drop", "1", "--epochs", "1",
                 "-o", str(tmp_path / "x.tflite")]) != 0
    assert "[0, 1)" in capsys.readouterr().err
    assert not (tmp_path / "x.tflite").exists()
