"""lhp quantize: drift report, mixed int8/int16, QAT (tfmot in a tf_keras child process)."""

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


def test_auto_choice_is_the_shortest_prefix_within_budget() -> None:
    """0, 1, 2, 4, ... ops until one passes, then bisection to the smallest count that passes."""
    from lhp_tf.quantize.mixed import choose

    ranked = [f"op{i}" for i in range(20)]
    tried: list[int] = []

    def drift(names: list[str]) -> tuple[float, float]:
        tried.append(len(names))
        return 0.5 - 0.1 * len(names), 1.0 - 0.1 * len(names)  # upper bound within 0.35 from 7 ops on

    ops, trials = choose(ranked, drift, 0.35)
    assert ops == ranked[:7]  # decided on the upper bound: the mean is within budget from 2 ops on
    assert tried == [0, 1, 2, 4, 8, 6, 7]
    assert [t.count for t in trials] == tried
    assert trials[-1].drift == pytest.approx(-0.2) and trials[-1].upper == pytest.approx(0.3)
    assert choose(ranked, lambda names: (0.0, 0.0), 0.1)[0] == []
    ops, trials = choose([], lambda names: (1.0, 1.0), 0.1)  # nothing helps: pure int8, one trial
    assert ops == [] and [t.count for t in trials] == [0]
    # never within budget: the best prefix tried, not a silent pure int8
    ops, _ = choose(ranked, lambda names: (0.9, 1.0 - 0.01 * len(names)), 0.1)
    assert ops == ranked


def test_paired_drift_upper_bound() -> None:
    """The bound is the mean paired difference plus z standard errors of a difference of two means
    over as many faces (sqrt(2) x one mean's)."""
    from lhp_tf.quantize.mixed import CONFIDENCE_Z, paired_drift

    float_faces = np.array([3.0, 4.0, 5.0, 6.0])
    mean, upper = paired_drift(float_faces + [0.1, 0.3, 0.1, 0.3], float_faces)
    assert mean == pytest.approx(0.2)
    assert upper == pytest.approx(0.2 + CONFIDENCE_Z * np.sqrt(2) * np.std([0.1, 0.3, 0.1, 0.3], ddof=1) / 2)
    assert paired_drift(float_faces + 0.2, float_faces) == pytest.approx((0.2, 0.2))  # same drift on every face


def test_auto_holds_the_held_out_gap_times_the_bound_against_the_budget() -> None:
    """Training faces drift less than held-out ones: auto's bound is the prediction bound scaled
    by the measured gap, the mean stays what the training faces measured."""
    from lhp_tf.quantize.mixed import HELD_OUT_GAP, held_out_drift, paired_drift

    float_faces = np.array([3.0, 4.0, 5.0, 6.0])
    int8_faces = float_faces + [0.01, 0.05, 0.02, 0.04]
    mean, bound = held_out_drift(int8_faces, float_faces)
    assert HELD_OUT_GAP > 1.0
    assert mean == pytest.approx(paired_drift(int8_faces, float_faces)[0])
    assert bound == pytest.approx(HELD_OUT_GAP * paired_drift(int8_faces, float_faces)[1])


@pytest.mark.slow
def test_drift_report_with_the_sigmoids_in_int16(run: Path, bundle: Path, tmp_path: Path) -> None:
    """--int16 LOGISTIC: every sigmoid computes in int16, nothing in float; metadata says which;
    XNNPACK leaves the int16 ops to the reference kernels (it has no int16 kernels)."""
    from lhp_tf.quantize.drift import drift_report, format_drift

    from lhp_tf.runtime import TFLiteModel, op_delegation
    from lhp_tf.tflite_graph import read_graph
    from lhp_tf.tflite_metadata import read_metadata

    r = drift_report(run, bundle, int16=["LOGISTIC"], debug_samples=2, top=5, save_dir=tmp_path)
    assert r["float_nme"] > 0 and r["int8_nme"] > 0
    assert r["drift_points"] == pytest.approx(r["int8_nme"] - r["float_nme"])
    noise = [e["noise_to_signal"] for e in r["worst_ops"]]
    assert len(noise) == 5 and noise == sorted(noise, reverse=True)
    mixed = tmp_path / "int8_mixed.tflite"
    meta = read_metadata(mixed)
    graph = read_graph(mixed)
    sigmoids = [graph.tensors[op.outputs[0]] for op in graph.operators if op.op == "LOGISTIC"]
    assert sigmoids and all(t.dtype == "int16" for t in sigmoids)
    assert sorted(meta["int16_ops"]) == sorted(t.name for t in sigmoids) == sorted(r["int16_ops"])
    assert meta["int16_selection"] == ["LOGISTIC"]
    assert not [t for t in graph.tensors if t.dtype == "float32"]
    model = TFLiteModel(mixed)
    out_name = graph.tensors[graph.outputs[0]].name  # the heatmap sigmoid (BCE) is a LOGISTIC too
    assert model.input_dtype == np.int8
    assert model.output_dtype == (np.int16 if out_name in meta["int16_ops"] else np.int8)
    assert model.predict(np.full((1, 64, 64, 3), 128, np.uint8)).dtype == np.float32
    ops = op_delegation(mixed)
    assert ops["not_delegated"].get("LOGISTIC") == len(sigmoids)
    assert "int16 ops" in format_drift(r) and "noise-to-signal" in format_drift(r)


@pytest.mark.slow
@pytest.mark.parametrize("ranges", ["calibrated", "fake-quant"])
def test_qat_runs_one_step_and_exports_int8(run: Path, tmp_path: Path, ranges: str) -> None:
    """Both exports: int8 in and out, fully delegated; ``calibrated`` converts the fine-tuned
    weights like ``lhp convert`` (the recipe's calibration) and differs from the checkpoint's PTQ."""
    from lhp_tf.cli import main
    from lhp_tf.runtime import TFLiteModel, op_delegation
    from lhp_tf.tflite_metadata import read_metadata

    out = tmp_path / "qat.tflite"
    keep = ["--save-checkpoint", str(tmp_path / "tuned" / "qat.keras")] if ranges == "calibrated" else []
    assert main(["quantize", "qat", str(run), "--graph", "training", "--epochs", "1", "--steps-per-epoch", "1",
                 "--lr", "0.01", "--max-samples", "8", "--calib-samples", "4", "--ranges", ranges, "-o", str(out),
                 *keep]) == 0
    meta = read_metadata(out)
    assert meta["quant"] == "int8" and meta["qat_epochs"] == 1
    assert meta["calibration"] == ("qat" if ranges == "fake-quant" else "auto")
    assert ("calibration_chosen" in meta) == (ranges == "calibrated")
    model = TFLiteModel(out)
    assert model.input_dtype == np.int8 and model.output_dtype == np.int8
    assert tuple(model._in["shape"]) == (1, 64, 64, 3)
    ops = op_delegation(out)
    assert ops["delegated"] == ops["total"], ops
    image = np.random.default_rng(0).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    heatmaps = model.predict(image)
    assert heatmaps.shape == (1, 16, 16, 68) and 0.0 <= heatmaps.min() and heatmaps.max() <= 1.0
    if ranges == "calibrated":
        assert meta["qat_ranges"] == "calibrated" and meta["target"] == "xnnpack"
        ptq = tmp_path / "ptq.tflite"
        assert main(["convert", str(run), "--quant", "int8", "--calib-samples", "4", "--set",
                     f"export.calibration={meta['calibration_chosen']}", "-o", str(ptq)]) == 0
        assert not np.array_equal(TFLiteModel(ptq).predict(image), heatmaps)  # the weights were fine-tuned
        # the fine-tuned float model, kept with its recipe, converts to the same int8 model
        again = tmp_path / "again.tflite"
        assert (tmp_path / "tuned" / "recipe.yaml").is_file()
        assert main(["convert", str(tmp_path / "tuned" / "qat.keras"), "--quant", "int8", "--calib-samples", "4",
                     "-o", str(again)]) == 0
        np.testing.assert_array_equal(TFLiteModel(again).predict(image), heatmaps)


_RANGE_CHILD = """
import json, sys
import numpy as np
from lhp_tf.config import load_recipe
from lhp_tf.model.network import build_from_spec
from lhp_tf.model.weights import assign_layer_weights, load_layer_weights
from lhp_tf.quantize.calibration import probe_images
from lhp_tf.converters.inference_model import xnnpack_friendly
from lhp_tf.quantize.qat_model import build_qat_model, output_ranges, start_ranges
from lhp_tf.model.kbackend import keras
from lhp_tf.spec import ModelSpec
recipe, weights = sys.argv[1:3]
rec = load_recipe(recipe)
spec = ModelSpec.from_recipe(rec)
images = probe_images(rec, 8)
plain = build_from_spec(spec.arch, batch_size=None)
assign_layer_weights(plain, load_layer_weights(weights), weights)
reference = plain(images, training=False).numpy()
out = {}
# built once (tfmot's build is most of this test's time): as tfmot starts it, then started as
# build_qat_model(..., range_images=images, range_batch=4) starts it
qat = build_qat_model(spec, weights, batch_size=None)
for name in ("default", "started"):
    if name == "started":
        start_ranges(qat, output_ranges(xnnpack_friendly(plain), images, 4), (min(float(images.min()), 0.0), max(float(images.max()), 0.0)))
    ranges = [float(v.numpy().max()) for v in qat.weights if v.name.split("/")[-1].startswith(("output_max", "post_activation_max"))]
    error = float(np.abs(qat(images, training=False).numpy() - reference).mean())
    out[name] = {"error": error, "ranges": len(ranges), "at_six": sum(r == 6.0 for r in ranges)}
kernels = [v for v in qat.weights if v.name.split("/")[-1].startswith(("kernel_min", "kernel_max"))]
started = [v.numpy() for v in kernels]
qat(images, training=True)  # where tfmot's quantizers set the weight ranges themselves
out["kernel_ranges"] = {"count": len(kernels), "moved": max(float(np.abs(v.numpy() - s).max()) for v, s in zip(kernels, started))}
sigmoids = [layer for layer in qat.layers if layer.name.endswith("_sigmoid")]
probe = keras.Model(qat.inputs, [layer.output for layer in sigmoids])
levels = np.concatenate([np.ravel(v) for v in probe(images, training=False)]) * 256.0
out["sigmoids"] = {"count": len(sigmoids), "off_grid": float(np.abs(levels - np.round(levels)).max()),
                   "top": float(levels.max())}
print(json.dumps(out))
"""


@pytest.mark.slow
def test_qat_activation_ranges_start_where_the_float_outputs_lie(run: Path, tmp_path: Path) -> None:
    """tfmot starts every activation range at [-6, 6]; started from the float network's outputs
    on training faces, the fake-quant network computes close to float from its first step; its
    sigmoids are quantised as int8 LOGISTIC is (tfmot's default leaves them in float); its weight
    ranges are where tfmot's first training step would set them."""
    import json
    import subprocess
    import sys

    from lhp_tf.converters.inference_model import load_checkpoint
    from lhp_tf.converters.run_folder import find_recipe

    from lhp_tf.model.weights import save_layer_weights

    trained, _ = load_checkpoint(run, find_recipe(run))
    weights = tmp_path / "weights.npz"
    save_layer_weights(trained, weights)
    proc = subprocess.run([sys.executable, "-c", _RANGE_CHILD, str(run.parent / "recipe.yaml"), str(weights)],
                          env={**os.environ, "TF_USE_LEGACY_KERAS": "1"}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["default"]["ranges"] == out["started"]["ranges"] > 50
    assert out["default"]["at_six"] == out["default"]["ranges"] and out["started"]["at_six"] == 0
    assert out["started"]["error"] < out["default"]["error"] / 3, out
    # the weight ranges are started where tfmot's first training step puts them (not [-6, 6])
    assert out["kernel_ranges"]["count"] > 20 and out["kernel_ranges"]["moved"] < 1e-6, out
    # every attention sigmoid is fake-quantised on int8 LOGISTIC's fixed grid (k / 256, k <= 255)
    assert out["sigmoids"]["count"] > 10 and out["sigmoids"]["off_grid"] < 1e-3 and out["sigmoids"]["top"] <= 255.001


_OPTIMIZER_CHILD = """
import json
import sys
import tensorflow as tf
from lhp_tf.config import load_recipe
from lhp_tf.quantize.qat import final_lr, resume_optimizer
from lhp_tf.quantize.qat_model import build_qat_model, float_weights
from lhp_tf.model.weights import trainable_keys
from lhp_tf.spec import ModelSpec
recipe, weights, state, out = sys.argv[1:5]
rec = load_recipe(recipe)
spec = ModelSpec.from_recipe(rec)
qat = build_qat_model(spec, weights, batch_size=None)
optimizer, variables, first = resume_optimizer(rec, qat, final_lr(rec), state)
keys = trainable_keys(qat)
optimizer.apply_gradients([(tf.zeros_like(v), v) for v in variables])
float_weights(qat, spec, out)
print(json.dumps(sorted(keys[id(v)] for v in variables)))
print(first)
"""


@pytest.mark.slow
def test_qat_continues_the_runs_optimizer(run: Path, tmp_path: Path) -> None:
    """QAT takes over the run's optimizer state as ``lhp train --resume`` (the float control)
    does: one step with zero gradients (moments alone move the weights) gives the same weights
    in the tf_keras QAT child as in Keras 3; the pools' fixed averaging kernels are not trained."""
    import json
    import shutil
    import subprocess
    import sys

    from lhp_tf.converters.inference_model import load_checkpoint
    from lhp_tf.converters.run_folder import find_recipe
    from lhp_tf.quantize.qat import final_lr, save_optimizer_state

    from lhp_tf.checkpoint import RunState, save_state
    from lhp_tf.model.weights import (
        layer_weights,
        load_layer_weights,
        save_layer_weights,
        trainable_keys,
    )
    from lhp_tf.train import make_optimizer

    folder = tmp_path / "run"
    folder.mkdir()
    for name in ("best.keras", "recipe.yaml"):
        shutil.copy2(run.parent / name, folder / name)
    rec = find_recipe(folder / "best.keras")
    trained, spec = load_checkpoint(folder / "best.keras", rec)
    optimizer = make_optimizer(rec)
    optimizer.build(trained.trainable_variables)
    rng = np.random.default_rng(0)
    values = [np.asarray(123, np.int64), np.asarray(rec.train.lr, np.float32)]
    for var in trained.trainable_variables:  # (momentum, velocity) per variable, as Keras 3 lists them
        values += [rng.normal(0, 1e-3, var.shape).astype(np.float32),
                   rng.uniform(1e-8, 1e-6, var.shape).astype(np.float32)]
    save_state(folder / "state.npz", RunState(epoch=7, weights=[], optimizer=values))
    fresh = tmp_path / "fresh.npz"  # --optimizer fresh: only where the data order continues
    assert save_optimizer_state(folder / "best.keras", rec, spec, fresh, moments=False)
    with np.load(fresh) as z:
        assert z.files == ["epoch"] and int(z["epoch"]) == 7
    moments = tmp_path / "optimizer.npz"
    assert save_optimizer_state(folder / "best.keras", rec, spec, moments)
    weights = tmp_path / "weights.npz"
    save_layer_weights(trained, weights)
    stepped = tmp_path / "stepped.npz"
    proc = subprocess.run([sys.executable, "-c", _OPTIMIZER_CHILD, str(folder / "recipe.yaml"), str(weights),
                           str(moments), str(stepped)],
                          env={**os.environ, "TF_USE_LEGACY_KERAS": "1"}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[-1] == "7"  # the data order continues at the run's epoch
    # exactly the float network's trainable weights: not the pools' fixed kernels (as depthwise convs)
    assert json.loads(lines[-2]) == sorted(trainable_keys(trained).values())

    for var, value in zip(optimizer.variables, values, strict=True):
        var.assign(value)
    optimizer.learning_rate.assign(final_lr(rec))
    before = layer_weights(trained)
    optimizer.apply_gradients([(np.zeros(v.shape, np.float32), v) for v in trained.trainable_variables])
    expected, got = layer_weights(trained), load_layer_weights(stepped)
    assert sorted(expected) == sorted(got)
    moved = max(float(np.abs(e - b).max()) for n in expected for e, b in zip(expected[n], before[n], strict=True))
    assert moved > 1e-4
    for name, arrays in expected.items():
        for e, g in zip(arrays, got[name], strict=True):
            np.testing.assert_allclose(g, e, atol=1e-6, err_msg=name)


@pytest.mark.slow
def test_qat_is_reproducible(run: Path, tmp_path: Path) -> None:
    """The QAT child seeds as the recipe's training does: the same fine-tuning twice gives the
    same weights, so QAT minus its float control measures quantisation, not run-to-run noise."""
    import json
    import subprocess
    import sys

    from lhp_tf.converters.inference_model import load_checkpoint
    from lhp_tf.converters.run_folder import find_recipe

    from lhp_tf.model.weights import load_layer_weights, save_layer_weights

    trained, spec = load_checkpoint(run, find_recipe(run))
    weights, spec_file = tmp_path / "weights.npz", tmp_path / "spec.json"
    save_layer_weights(trained, weights)
    spec_file.write_text(json.dumps(spec.to_dict()))
    tuned = [tmp_path / f"tuned{i}.npz" for i in range(2)]
    # side by side: most of a child's time is tfmot's single-threaded model build and tracing
    procs = [subprocess.Popen([sys.executable, "-m", "lhp_tf.quantize.qat", str(run.parent / "recipe.yaml"),
                               "--spec", str(spec_file), "--weights", str(weights), "--epochs", "1",
                               "--steps-per-epoch", "3", "--max-samples", "12", "--lr", "0.01",
                               "--weights-out", str(out)],
                              env={**os.environ, "TF_USE_LEGACY_KERAS": "1"}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for out in tuned]
    for proc in procs:
        _, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err[-2000:]
    first, second, start = (load_layer_weights(p) for p in (*tuned, weights))
    assert sorted(first) == sorted(second)
    assert any(not np.array_equal(a, b) for n in first for a, b in zip(first[n], start[n], strict=True))
    for name in first:
        for a, b in zip(first[name], second[name], strict=True):
            np.testing.assert_array_equal(a, b, err_msg=name)


def test_op_groups_follow_the_network_modules() -> None:
    from lhp_tf.quantize.mixed import op_groups

    names = ["image", "lhp_large_1/stem_conv1_relu_1/Relu;lhp_large_1/stem_conv1_conv_1/convolution",
             "lhp_large_1/ccw_s1m0b0_shuffle0_1/Reshape", "lhp_large_1/ccw_s1m0b1_dw_1/depthwise",
             "lhp_large_1/fusion_s2m1_3from2_fc2_sigmoid_1/Sigmoid", "lhp_large_1/transition1_conv_1/Relu",
             "lhp_large_1/head_final_1/BiasAdd", "Identity"]
    assert op_groups(names) == {
        "other": ["image", "Identity"], "stem": [names[1]], "ccw_s1m0": names[2:4],
        "fusion_s2m1": [names[4]], "transition1": [names[5]], "head": [names[6]]}
    # Keras 3 exports trace with constant weights: names start at the layer
    bare = [n.replace("lhp_large_1/", "") for n in names]
    assert op_groups(bare) == {
        "other": ["image", "Identity"], "stem": [bare[1]], "ccw_s1m0": bare[2:4],
        "fusion_s2m1": [bare[4]], "transition1": [bare[5]], "head": [bare[6]]}


@pytest.mark.slow
def test_convert_int16_auto_records_its_choice(run: Path, tmp_path: Path) -> None:
    """``lhp convert --int16 auto``: the metadata says what was tried and chosen, and the graph
    computes in int16 exactly where the metadata says."""
    from lhp_tf.quantize.mixed import HELD_OUT_GAP

    from lhp_tf.cli import main
    from lhp_tf.tflite_graph import read_graph
    from lhp_tf.tflite_metadata import read_metadata

    out = tmp_path / "auto.tflite"
    assert main(["convert", str(run), "--quant", "int8", "--int16", "auto", "--calib-samples", "8", "-o", str(out)]) == 0
    meta = read_metadata(out)
    auto = meta["int16_auto"]
    assert meta["int16_selection"] == ["auto"]
    assert auto["trials"][0]["int16_groups"] == 0
    chosen = [t for t in auto["trials"] if t["int16_groups"] == len(auto["groups"])]
    assert chosen and chosen[-1]["drift_points"] == auto["drift_points"]
    assert chosen[-1]["drift_upper_points"] == auto["drift_upper_points"] >= auto["drift_points"]
    assert auto["within_budget"] == (auto["drift_upper_points"] <= auto["budget_points"])
    assert auto["held_out_gap"] == HELD_OUT_GAP  # the bound above is scaled by it
    graph = read_graph(out)
    int16 = sorted(graph.tensors[op.outputs[0]].name for op in graph.operators
                   if op.op != "QUANTIZE" and graph.tensors[op.outputs[0]].dtype == "int16")
    assert sorted(meta["int16_ops"]) == int16
    assert bool(int16) == bool(auto["groups"])
    assert not [t for t in graph.tensors if t.dtype == "float32"]


def test_augmented_bundle_holds_faces_inside_their_crops(run: Path) -> None:
    """``--int16 auto``'s faces: augmented training crops, landmarks in crop pixels, all inside,
    each normalised by its own inter-ocular distance; a bundle the board's scorer takes."""
    from lhp_tf.converters.run_folder import find_recipe
    from lhp_tf.quantize.calibration import augmented_bundle

    from lhp_tf.data.images import inter_ocular

    rec = find_recipe(run)
    b = augmented_bundle(rec, 12)
    n, (h, w) = len(b["images"]), rec.model.input_size
    assert 0 < n <= 12 and b["images"].dtype == np.uint8 and b["images"].shape[1:] == (h, w, 3)
    pts = b["landmarks"]
    assert pts.shape == (n, 68, 2) and (pts >= -0.5).all() and (pts[..., 0] <= w - 0.5).all() and (pts[..., 1] <= h - 0.5).all()
    np.testing.assert_array_equal(b["crop2img"], np.tile([[1, 0, 0], [0, 1, 0]], (n, 1, 1)))
    np.testing.assert_allclose(b["norm"], inter_ocular(pts))
    again = augmented_bundle(rec, 12)  # seeded: the same faces every time
    np.testing.assert_array_equal(again["images"], b["images"])


def test_one_conversion_reads_its_training_split_once(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Inside ``one_split_read`` (``lhp convert``) the calibration images and the probe faces
    come from one read of the split; outside it every call reads again (edits are seen)."""
    from lhp_tf.converters.run_folder import find_recipe
    from lhp_tf.quantize import calibration

    from lhp_tf.data import datasets

    reads = []
    real = datasets.read_split
    monkeypatch.setattr(datasets, "read_split", lambda *a, **k: reads.append(a[1:]) or real(*a, **k))
    rec = find_recipe(run)
    with calibration.one_split_read():
        inside = calibration.calibration_images(rec, 4), calibration.probe_images(rec, 4)
    assert reads == [(rec.data.train_split,)]
    outside = calibration.calibration_images(rec, 4), calibration.probe_images(rec, 4)
    assert len(reads) == 3
    for a, b in zip(inside, outside, strict=True):
        np.testing.assert_array_equal(a, b)
