"""QAT on the deploy graph (``lhp quantize qat --graph deploy``, ``lhp_tf.quantize.deploy_qat``)."""

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


def test_simulation_rounds_every_int8_tensor_and_trains_the_folded_convs(trained: tuple) -> None:
    from lhp_tf.converters.deploy import folded_convs
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
    assert sim.folded == set(folded_convs(model)) and sim.folded
    assert all(sim.layers[name].trainable for name in sim.folded)
    trainable = {id(v) for v in sim.model.trainable_variables}
    assert all(id(sim.layers[name].kernel) in trainable for name in sim.folded)
    assert not any(id(v) in trainable for fq in sim.fake_quants for v in fq.weights)
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


def test_write_back_folds_to_the_same_deploy_graph(trained: tuple) -> None:
    """After fine-tuning, the checkpoint's conv + BatchNorm pairs hold the folded convs as an
    identity BatchNorm: the checkpoint computes what the trained simulation's float graph does."""
    from lhp_tf.quantize.deploy_qat import simulation, write_back

    from lhp_tf.model.kbackend import keras

    model, _, images = trained
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    sim = simulation(clone)
    rng = np.random.default_rng(2)
    for name in sim.folded:  # stand-in for training: move every folded conv
        kernel, bias = sim.layers[name].get_weights()
        sim.layers[name].set_weights([kernel * rng.uniform(0.8, 1.2, kernel.shape).astype(np.float32),
                                      bias + rng.normal(0.0, 0.1, bias.shape).astype(np.float32)])
    sim.rounding(False)  # the float deploy graph
    expected = np.asarray(sim.model([images], training=False))
    assert not np.allclose(expected, np.asarray(model(images, training=False)), atol=1e-3)
    assert write_back(sim, clone) == len(sim.folded)
    np.testing.assert_allclose(np.asarray(clone(images, training=False)), expected, rtol=1e-4,
                               atol=1e-5 * float(np.abs(expected).max()))


@pytest.mark.slow
def test_qat_on_the_deploy_graph_trains_and_exports_int8(export_run: Path, tmp_path: Path) -> None:
    from lhp_tf.cli import main
    from lhp_tf.runtime import TFLiteModel, op_delegation
    from lhp_tf.tflite_metadata import read_metadata

    out = tmp_path / "qat.tflite"
    tuned = tmp_path / "tuned" / "qat.keras"
    assert main(["quantize", "qat", str(export_run), "--graph", "deploy", "--epochs", "1", "--steps-per-epoch", "2",
                 "--lr", "0.01", "--max-samples", "8", "--calib-samples", "4", "-o", str(out),
                 "--save-checkpoint", str(tuned)]) == 0
    meta = read_metadata(out)
    assert meta["quant"] == "int8" and meta["qat_graph"] == "deploy" and meta["qat_epochs"] == 1
    ops = op_delegation(out)
    assert ops["delegated"] == ops["total"], ops
    model = TFLiteModel(out)
    image = np.random.default_rng(0).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    heatmaps = model.predict(image)
    ptq = tmp_path / "ptq.tflite"
    assert main(["convert", str(export_run), "--quant", "int8", "--calib-samples", "4", "--set",
                 f"export.calibration={meta['calibration_chosen']}", "-o", str(ptq)]) == 0
    assert not np.array_equal(TFLiteModel(ptq).predict(image), heatmaps)  # the weights were fine-tuned
    again = tmp_path / "again.tflite"
    assert main(["convert", str(tuned), "--quant", "int8", "--calib-samples", "4", "-o", str(again)]) == 0
    np.testing.assert_array_equal(TFLiteModel(again).predict(image), heatmaps)


def test_deploy_graph_qat_refuses_fake_quant_ranges(export_run: Path, tmp_path: Path, capsys) -> None:
    from lhp_tf.cli import main

    code = main(["quantize", "qat", str(export_run), "--graph", "deploy", "--ranges", "fake-quant", "--epochs", "1",
                 "-o", str(tmp_path / "x.tflite")])
    assert code != 0
    assert "--graph deploy" in capsys.readouterr().err
    assert not (tmp_path / "x.tflite").exists()
