"""``lhp quantize qat``: fine-tune a trained checkpoint with fake quantisation, export int8.

Two simulations (``--graph``, :data:`~lhp_tf.kinds.QAT_GRAPHS`):

* ``deploy`` (the default, :mod:`lhp_tf.quantize.deploy_qat`): the int8 deploy graph that
  ships, in this process (Keras 3), every conv computed from the checkpoint's own conv and
  BatchNorm variables, under the checkpoint's learned int8 ranges as the conversion quantises
  with them, held fixed, half of each tensor's elements left unrounded per step (QDrop,
  ``--drop``), continuing the run's optimizer as its float control does; the export converts
  with those same ranges. Within budget against a float control on all four synthetic
  checkpoints (that module's table, 3 epochs: QAT - control +0.085 / -0.034 on lhp-small 10 /
  20 epochs, -0.045 / +0.024 on lhp-large, budget 0.1-0.11; the training graph gave
  +0.083 / - / +0.101 / +0.260).
* ``training``: tensorflow-model-optimization's fake-quant network on the training graph, in
  a child process; the rest of this docstring is about it.

tensorflow-model-optimization 0.8.1 only wraps tf_keras models, and a process picks its Keras
at first import, so the fine-tuning runs in a child process started with
``TF_USE_LEGACY_KERAS=1`` (``python -m lhp_tf.quantize.qat``). The parent (Keras 3) loads the
checkpoint and hands over its weights by layer name in an ``.npz`` and the resolved recipe;
the child rebuilds the SAME architecture from the same model code (``lhp_tf.model.kbackend``
switches to tf_keras), annotates it (``qat_model``), trains N epochs on the recipe's training
pipeline with the recipe's heatmap loss on logits, then traces the trained QAT model at batch
1 (building it again at batch 1 would cost as long as the first build), appends the heatmap
activation and converts it to full-integer int8 with the same converter code and metadata as
``lhp convert``. The sigmoid after the last fake-quant needs no range of
its own: int8 LOGISTIC has a fixed output scale (1/256).

Two ways to export (``--ranges``):

* ``calibrated`` (the default): the child hands the fine-tuned FLOAT weights back by layer
  name, and the parent converts them as ``lhp convert --quant int8`` converts a checkpoint:
  the deploy graph of ``--target``, ai-edge-quantizer, ``--int16`` if asked. QAT then changes
  only the weights (trained to tolerate int8 noise), and its graph is the one PTQ ships, with
  its speed and NPU placement. The ranges are chosen by ``auto`` calibration
  (:data:`QAT_CALIBRATION`, whatever the recipe says): QAT trained under tfmot's moving
  min/max ranges, but which ranges its weights then tolerate best differs by model (synthetic
  checkpoints, 1 epoch, held-out drift of the QAT weights: lhp-large +0.000 with min/max
  ranges, +0.328 with MSE ones; lhp-small +0.189 and +0.014), and ``auto`` picked the better
  one for both.
* ``fake-quant``: the child converts the QAT model itself with TensorFlow's converter, the
  ranges taken from the fake-quant nodes (tfmot's moving min/max); the graph is the network
  without the deploy rewrites.

What the fake-quant network simulates (:mod:`lhp_tf.quantize.qat_model`): activation ranges
that start where the float network's outputs lie (tfmot starts them at [-6, 6] and moves them
0.1 % a step), sigmoids on int8 LOGISTIC's 1/256 grid (tfmot leaves them in float), depthwise
kernels per channel (tfmot: one range per kernel). Measured one at a time, 1 QAT epoch, int8
NME minus a float control trained the same epoch (``benchmarks/int8_drift.py``'s), held-out
faces: synthetic lhp-small (10 epochs; control 4.262) +0.100 with tfmot's defaults, +0.074
with started ranges, +0.027 with the sigmoid grid too, +0.025 with per-channel depthwise too
(QAT float 4.264, int8 4.287; the same command again: 4.263 and 4.338, +0.076: QAT's int8 NME
moves by ~0.05 between runs); synthetic lhp-large (20 epochs; control 3.629) not run with
tfmot's defaults, then +0.402, +0.398, +0.344 (QAT float 3.787, int8 3.973: one QAT epoch
leaves lhp-large's float NME above the checkpoint's 3.693, and its int8 drift, +0.186, near
post-training int8's +0.215).

QAT fine-tunes as its float control trains (``lhp train --resume``): seeded by the recipe
(``configure_tf``; before, QAT's int8 NME moved ~0.05 between runs of one command, now two runs
give the same weights), its data continuing at the epoch the run finished, the run's Adam
moments taken over (``--optimizer continue``, the default; ``fresh`` starts them at zero), and
the average pools' fixed kernels left alone (tfmot lists the kernel it fake-quantises as
trainable even on a frozen layer). QAT minus control, 1 epoch, held-out faces, fresh /
continue: lhp-small 10 epochs +0.119 / +0.160 (budget 0.100), 20 epochs +0.062 / +0.065;
lhp-large 10 epochs +0.221 / +0.179 (budget 0.113), 20 epochs +0.302 / +0.230. ``continue``
is the default: the method the control uses, and better on both lhp-large schedules.
Three epochs, retrained checkpoints of another CPU (``benchmarks/int8_drift.py RUN --qat-epochs
3``, which also converts the QAT weights with ``--int16 auto``): mixed int16 brings QAT's int8
within 0.06 of QAT's own float, but that float trails a control trained the same epochs by
0.018-0.164 (QAT + int16 - control: lhp-small +0.108 / +0.038, lhp-large +0.151 / +0.185), and
on the 20-epoch lhp-large three QAT epochs leave its float worse than the checkpoint's (3.406 ->
3.579) and its shipped int8 worse than post-training int8 of the checkpoint (3.739 vs 3.687):
the fake-quant network is built on the training graph, not on the deploy graph whose tensors
the shipped int8 rounds: hence ``--graph deploy``, now the default.
The README's drift table has the rest, with its commands.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lhp_tf.config import Recipe
from lhp_tf.errors import LhpError, run_main
from lhp_tf.kinds import LEARNED, QAT_GRAPHS, QAT_OPTIMIZER, QAT_RANGES, loss_for

#: ``export.calibration`` for ``--ranges calibrated`` (see the module docstring)
QAT_CALIBRATION = "auto"
#: training batches (augmented, as QAT trains on) the activation ranges start from
RANGE_BATCHES = 8
#: optimizers whose state the child takes over: Keras 3 lists (moment, second moment) per
#: trainable variable after its step counter and rate; tf_keras names them ``m/<var>``, ``v/<var>``
MOMENT_OPTIMIZERS = ("adam", "adamw")


def quantization_aware_training(checkpoint: str | os.PathLike[str], output: str | os.PathLike[str], epochs: int,
                                recipe: str | os.PathLike[str] | None = None, overrides: Sequence[str] = (),
                                lr: float | None = None, steps_per_epoch: int | None = None,
                                max_samples: int | None = None, calib_samples: int | None = None,
                                ranges: str = QAT_RANGES[0], target: str | None = None,
                                int16: Sequence[str] = (), save_checkpoint: str | os.PathLike[str] | None = None,
                                optimizer: str = QAT_OPTIMIZER[0], graph: str = QAT_GRAPHS[0],
                                drop: float | None = None) -> Path:
    """Parent side: export weights + recipe, run the tf_keras child, return the written .tflite
    (``target`` and ``int16`` as in ``lhp convert``, for ``calibrated`` ranges;
    ``save_checkpoint``: also keep the fine-tuned float model there, a .keras that ``lhp
    convert`` and ``lhp quantize`` take like any checkpoint; the recipe, with QAT's
    calibration, is written beside it unless a recipe.yaml is there already; ``optimizer``: see
    :func:`save_optimizer_state`; ``graph``: ``training`` fake-quantises the training graph in a
    tfmot child, ``deploy`` the int8 deploy graph in this process, :mod:`.deploy_qat`; ``drop``:
    the share of its fake-quant elements left unrounded per step, default
    :data:`~.deploy_qat.DROP`)."""
    import json

    from lhp_tf.converters.deploy import DEFAULT_TARGET
    from lhp_tf.converters.export import export_checkpoint
    from lhp_tf.converters.inference_model import load_checkpoint
    from lhp_tf.converters.run_folder import find_recipe
    from lhp_tf.converters.tflite import check_int16

    from lhp_tf.config import dump_recipe
    from lhp_tf.model.weights import assign_layer_weights, load_layer_weights, save_layer_weights

    if epochs <= 0:
        raise LhpError(f"--epochs {epochs}: must be > 0")
    if ranges not in QAT_RANGES:
        raise LhpError(f"--ranges {ranges!r}: expected one of {', '.join(QAT_RANGES)}")
    if optimizer not in QAT_OPTIMIZER:
        raise LhpError(f"--optimizer {optimizer!r}: expected one of {', '.join(QAT_OPTIMIZER)}")
    if graph not in QAT_GRAPHS:
        raise LhpError(f"--graph {graph!r}: expected one of {', '.join(QAT_GRAPHS)}")
    if drop is not None and graph != "deploy":
        raise LhpError(f"--drop {drop}: leaving elements unrounded is a deploy-graph simulation option (--graph deploy)")
    if graph == "deploy":
        from .deploy_qat import DROP, check_drop

        drop = DROP if drop is None else drop
        check_drop(drop)
    if graph == "deploy" and ranges != "calibrated":
        raise LhpError(f"--ranges {ranges}: the ranges of tfmot's fake-quant nodes need --graph training "
                       "(--graph deploy converts with the ranges it trained under)")
    if ranges == "fake-quant" and (int16 or target not in (None, DEFAULT_TARGET) or save_checkpoint):
        raise LhpError("--ranges fake-quant: the child converts the QAT model itself, without --int16, "
                       "a deploy --target or --save-checkpoint; use --ranges calibrated")
    if save_checkpoint is not None and Path(save_checkpoint).suffix != ".keras":
        raise LhpError(f"--save-checkpoint {save_checkpoint}: expected a .keras path")
    rec = find_recipe(checkpoint, recipe, overrides)
    check_int16(int16, rec)
    trained, spec = load_checkpoint(checkpoint, rec)
    # fine-tune on the targets and loss the checkpoint was trained with, whatever the recipe says
    rec = dataclasses.replace(rec, data=dataclasses.replace(rec.data, heatmap_sigma=spec.codec.sigma),
                              train=dataclasses.replace(rec.train, loss=loss_for(spec.codec.activation)))
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".lhp_qat_", dir=out.parent) as tmp:
        recipe_file = Path(tmp) / "recipe.yaml"  # the child's recipe; beside qat.keras, its calibration images
        recipe_file.write_text(dump_recipe(rec))
        if graph == "deploy":
            from .deploy_qat import train_on_deploy_graph
            from .learned_ranges import converted_ranges, learn_for_checkpoint

            path, start, now = learn_for_checkpoint(checkpoint, recipe, overrides, calib_samples=calib_samples)
            print(f"qat (deploy graph): trains under the ranges of {path}" + (" (learned now)" if now else "")
                  + ", as the int8 conversion quantises with them", flush=True)
            converted = converted_ranges(trained, spec, checkpoint, start, recipe, overrides, calib_samples)
            qat_ranges = train_on_deploy_graph(trained, rec, checkpoint, epochs,
                                               lr if lr is not None else final_lr(rec), converted,
                                               optimizer == "continue", steps_per_epoch, max_samples, drop)
        else:
            weights = Path(tmp) / "weights.npz"
            save_layer_weights(trained, weights)
            spec_file = Path(tmp) / "spec.json"
            spec_file.write_text(json.dumps(spec.to_dict()))
            tuned = Path(tmp) / "tuned.npz"
            cmd = [sys.executable, "-m", "lhp_tf.quantize.qat", str(recipe_file), "--spec", str(spec_file),
                   "--weights", str(weights), "--epochs", str(epochs), "--checkpoint", str(checkpoint)]
            resume = Path(tmp) / "optimizer.npz"
            if save_optimizer_state(checkpoint, rec, spec, resume, optimizer == "continue"):
                cmd += ["--optimizer-state", str(resume)]
            cmd += ["--weights-out", str(tuned)] if ranges == "calibrated" else ["-o", str(out)]
            for flag, value in (("--lr", lr), ("--steps-per-epoch", steps_per_epoch),
                                ("--max-samples", max_samples), ("--calib-samples", calib_samples)):
                if value is not None:
                    cmd += [flag, str(value)]
            env = {**os.environ, "TF_USE_LEGACY_KERAS": "1"}
            proc = subprocess.run(cmd, env=env)
            if proc.returncode != 0:
                raise LhpError(f"{checkpoint}: quantisation-aware training failed (child exit {proc.returncode}); "
                               "see its messages above")
            if ranges == "calibrated":
                assign_layer_weights(trained, load_layer_weights(tuned), f"{checkpoint}: QAT weights")
        if ranges == "calibrated":
            # QAT on the deploy graph trains its weights under the checkpoint's learned ranges, held
            # fixed: it converts with those (another target's graph learns its own)
            calibration = LEARNED if graph == "deploy" else QAT_CALIBRATION
            tuned_checkpoint = Path(tmp) / "qat.keras"  # recipe.yaml beside it: the calibration images
            trained.save(tuned_checkpoint)
            set_calibration = [f"export.calibration={calibration}"]
            if calibration == LEARNED:
                from .learned_ranges import keep_for_checkpoint, learn_for_checkpoint, ranges_path

                if (target or DEFAULT_TARGET) == DEFAULT_TARGET:  # the graph QAT simulated: its ranges
                    keep_for_checkpoint(tuned_checkpoint, qat_ranges,
                                        {"source": "qat", "qat_from": str(checkpoint), "qat_epochs": epochs,
                                         "qat_drop": drop},
                                        None, set_calibration, calib_samples)
                else:
                    learn_for_checkpoint(tuned_checkpoint, None, set_calibration, target, calib_samples)
            if save_checkpoint is not None:
                from lhp_tf.checkpoint import atomic_write, atomic_write_text

                # the same bytes, so that the ranges learned for them stay theirs (keyed by SHA-256)
                atomic_write(save_checkpoint, lambda tmp_path: shutil.copyfile(tuned_checkpoint, tmp_path))
                if calibration == LEARNED:
                    learned_file = ranges_path(tuned_checkpoint, target or DEFAULT_TARGET)
                    saved_file = ranges_path(save_checkpoint, target or DEFAULT_TARGET)
                    atomic_write(saved_file, lambda tmp_path: shutil.copyfile(learned_file, tmp_path))
                beside = Path(save_checkpoint).parent / "recipe.yaml"
                if not beside.exists():  # what `lhp convert` calibrates with; an existing one is kept
                    export = dataclasses.replace(rec.export, calibration=calibration)
                    atomic_write_text(beside, dump_recipe(dataclasses.replace(rec, export=export)))
            export_checkpoint(tuned_checkpoint, out, quant="int8", calib_samples=calib_samples,
                              overrides=set_calibration, target=target or DEFAULT_TARGET, int16=int16,
                              extra_metadata={"qat_epochs": epochs, "qat_from": str(checkpoint),
                                              "qat_ranges": ranges, "qat_graph": graph,
                                              **({"qat_drop": drop} if graph == "deploy" else {})})
    return out


def save_optimizer_state(checkpoint: str | os.PathLike[str], recipe: Recipe, spec: object,
                         path: str | os.PathLike[str], moments: bool = True) -> bool:
    """Where the run left off (``state.npz`` beside the checkpoint), by variable name, for the
    child to continue from: the epoch it had finished (QAT's data order continues there, as the
    float control's does) and, with ``moments``, the optimizer's moments and step count. False
    (with a line saying so) when there is no state to read: QAT then starts at epoch 0.

    A fresh Adam's first steps move every weight by about the full rate whatever its gradient
    (its bias-corrected moments start at sign(g)), while the float control (``lhp train
    --resume``) continues with the run's moments: without them QAT is also a restart. Keys:
    ``m/<layer>/<var>``, ``v/<layer>/<var>`` (:func:`~lhp_tf.model.weights.trainable_keys`),
    ``iteration``, ``epoch``.
    """
    import numpy as np

    from lhp_tf.checkpoint import STATE_FILE, CheckpointError, load_state
    from lhp_tf.model.network import LandmarkNet
    from lhp_tf.model.weights import trainable_keys

    state_path = Path(checkpoint).parent / STATE_FILE
    try:
        state = load_state(state_path)
    except CheckpointError as exc:
        print(f"qat: a fresh optimizer from epoch 0 ({exc})", flush=True)
        return False
    arrays = {"epoch": np.asarray(state.epoch)}
    why = "--optimizer fresh" if not moments else None
    if why is None and recipe.train.optimizer not in MOMENT_OPTIMIZERS:
        why = f"the state of {recipe.train.optimizer} is not carried over"
    net = LandmarkNet(spec) if why is None else None
    variables, keys = (net.trainable_variables, trainable_keys(net)) if net is not None else ([], {})
    if why is None and len(state.optimizer) != 2 + 2 * len(variables):
        why = (f"{state_path} holds {len(state.optimizer)} optimizer tensors, not the "
               f"{2 + 2 * len(variables)} of {recipe.train.optimizer} on this model")
    for i, var in enumerate(variables):
        m, v = state.optimizer[2 + 2 * i], state.optimizer[3 + 2 * i]
        if tuple(m.shape) != tuple(var.shape) or tuple(v.shape) != tuple(var.shape):
            why = f"{state_path}: moments of {var.path} have shape {m.shape}, the model {tuple(var.shape)}"
            break
        arrays[f"m/{keys[id(var)]}"], arrays[f"v/{keys[id(var)]}"] = m, v
    if why is None:
        arrays["iteration"] = np.asarray(state.optimizer[0])
        print(f"qat: continues {state_path}'s optimizer (step {int(state.optimizer[0])}, "
              f"epoch {state.epoch})", flush=True)
    else:
        arrays = {"epoch": arrays["epoch"]}
        print(f"qat: a fresh optimizer ({why}); data from {state_path}'s epoch {state.epoch}", flush=True)
    np.savez(path, **arrays)
    return True


def load_optimizer_state(optimizer: object, model: object, variables: list, path: str | os.PathLike[str]) -> int:
    """Set the tf_keras optimizer (built on ``variables``, those of ``model`` QAT trains) from
    :func:`save_optimizer_state`'s file; returns the epoch the run had finished. Every moment of
    the file must find its variable (a QuantizeWrapper keeps its layer's name and weights);
    variables QAT adds start at zero."""
    import numpy as np

    from lhp_tf.model.weights import trainable_keys

    with np.load(path) as z:
        saved = {k: z[k] for k in z.files}
    by_id = trainable_keys(model)
    keys = {var.name: by_id[id(var)] for var in variables if id(var) in by_id}
    used = set()
    for var in optimizer.variables:
        slot, _, name = var.name.partition("/")
        key = "iteration" if var.name.split(":")[0] == "iteration" else f"{slot}/{keys.get(name)}"
        if key in saved:
            var.assign(saved[key].astype(var.dtype.as_numpy_dtype))
            used.add(key)
    missing = sorted(set(saved) - used - {"epoch"})
    if missing:
        raise RuntimeError(f"{path}: {len(missing)} optimizer tensor(s) match no QAT variable, e.g. {missing[0]}")
    return int(saved["epoch"])


def final_lr(recipe: Recipe) -> float:
    """The rate the recipe's schedule ends at: QAT fine-tunes where training left off.

    The paper's schedule (lr 2e-3, x0.1 at epochs 170 and 200) ends at 2e-5; the synthetic
    10-epoch recipe at 2e-4. Measured on the synthetic lhp-small (float 4.571 % NME): 60 steps
    at 2e-5 left int8 at +0.138 points; 3 epochs at 2e-4 gave 4.415, +0.077 against the same
    3 epochs trained in float (``benchmarks/int8_drift.py``).
    """
    t = recipe.train
    return t.lr * t.lr_factor ** sum(1 for s in t.lr_steps if s < t.epochs)


def resume_optimizer(recipe: Recipe, model: object, lr: float,
                     optimizer_state: str | os.PathLike[str] | None) -> tuple[object, list, int]:
    """The recipe's optimizer on the variables QAT trains, at rate ``lr``, continuing
    :func:`save_optimizer_state`'s file when given: ``(optimizer, variables, first epoch)``."""
    from lhp_tf.train import make_optimizer

    from .qat_model import trained_variables

    variables = trained_variables(model)
    optimizer = make_optimizer(recipe)
    optimizer.build(variables)
    first = 0 if optimizer_state is None else load_optimizer_state(optimizer, model, variables, optimizer_state)
    optimizer.learning_rate.assign(lr)
    return optimizer, variables, first


def _train(recipe: Recipe, model: object, epochs: int, lr: float, steps_per_epoch: int | None,
           max_samples: int | None, optimizer_state: str | os.PathLike[str] | None) -> None:
    """Fine-tune on the recipe's pipeline, continuing the run's optimizer state and epoch count
    when there is one (as the float control, ``lhp train --resume``, does)."""
    optimizer, variables, first = resume_optimizer(recipe, model, lr, optimizer_state)
    fine_tune(recipe, lambda images: model(images, training=True), variables, optimizer, first, epochs,
              steps_per_epoch, max_samples)


def fine_tune(recipe: Recipe, forward: Callable[[Any], Any], variables: list, optimizer: Any, first: int,
              epochs: int, steps_per_epoch: int | None = None, max_samples: int | None = None) -> None:
    """QAT's epochs, whichever graph it simulates: ``forward(images)`` gives logits, scored with
    the recipe's heatmap loss on its training pipeline from epoch ``first`` (the data order the
    float control continues with); ``optimizer`` steps ``variables``."""
    import tensorflow as tf

    from lhp_tf.data.datasets import read_split
    from lhp_tf.data.pipeline import train_dataset
    from lhp_tf.losses import per_sample_loss

    samples = read_split(recipe.data, recipe.data.train_split)
    if max_samples is not None:
        samples = samples[:max_samples]
    kind = recipe.train.loss

    @tf.function
    def step(images: tf.Tensor, targets: dict) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(per_sample_loss(kind, targets, tf.cast(forward(images), tf.float32)))
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(grads, variables, strict=True))
        return loss

    for epoch in range(first, first + epochs):
        total, count = 0.0, 0
        for images, targets in train_dataset(recipe, samples, recipe.train.seed, epoch):
            total += float(step(images, targets))
            count += 1
            if steps_per_epoch is not None and count >= steps_per_epoch:
                break
        print(f"qat epoch {epoch + 1 - first}/{epochs}: loss {total / max(count, 1):.6f} ({count} steps)", flush=True)


def child_main(argv: Sequence[str]) -> int:
    """Child side (tf_keras): build, load, annotate, fine-tune, convert to int8 with metadata."""
    p = argparse.ArgumentParser(prog="python -m lhp_tf.quantize.qat")
    p.add_argument("recipe")
    p.add_argument("--spec", required=True, help="the checkpoint's ModelSpec as JSON")
    p.add_argument("--weights", required=True)
    p.add_argument("--checkpoint", default="")
    p.add_argument("--epochs", type=int, required=True)
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("-o", "--output", help="int8 .tflite, ranges from the fake-quant nodes")
    out.add_argument("--weights-out", help="the fine-tuned float weights (.npz by layer name) instead")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--steps-per-epoch", type=int, default=None)
    p.add_argument("--max-samples", type=int, default=None)
    p.add_argument("--calib-samples", type=int, default=None)
    p.add_argument("--optimizer-state", default=None, help="save_optimizer_state's .npz")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    import json

    from lhp_tf.converters.tflite import metadata_for, qat_tflite, write_bytes

    from lhp_tf.config import load_recipe
    from lhp_tf.model.network import with_activation
    from lhp_tf.spec import ModelSpec
    from lhp_tf.train import configure_tf

    from .calibration import calibration_images, probe_images
    from .qat_model import build_qat_model, float_weights, require_legacy

    require_legacy()
    rec = load_recipe(args.recipe)
    # seeded (and deterministic when the recipe's training is) as the float control trains,
    # so that QAT minus control measures quantisation, not run-to-run noise
    configure_tf(rec)
    spec = ModelSpec.from_dict(json.loads(Path(args.spec).read_text()), args.spec)
    batch = rec.train.batch_size
    faces = probe_images(rec, RANGE_BATCHES * batch)
    model = build_qat_model(spec, args.weights, batch_size=None, range_images=faces, range_batch=batch)
    print(f"qat: activation ranges start from the float network's outputs on {len(faces)} augmented "
          "training faces", flush=True)
    lr = args.lr if args.lr is not None else final_lr(rec)
    _train(rec, model, args.epochs, lr, args.steps_per_epoch, args.max_samples, args.optimizer_state)
    if args.weights_out:
        float_weights(model, spec, args.weights_out)
        return 0
    deploy = with_activation(model, spec.codec.activation)  # traced and converted at batch 1
    # Ranges come from the fake-quant nodes (so no range search over them); the converter
    # still wants sample inputs for int8 I/O.
    calib = calibration_images(rec, args.calib_samples or min(rec.export.calib_samples, 32))
    meta = {**metadata_for(spec, "int8", rec), "calibration": "qat", "qat_epochs": args.epochs,
            "qat_from": args.checkpoint, "int16_ops": []}
    write_bytes(args.output, qat_tflite(deploy, calib, meta))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(child_main, prog="python -m lhp_tf.quantize.qat"))
