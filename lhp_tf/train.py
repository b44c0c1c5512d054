"""``python -m lhp_tf.train RECIPE`` (also ``lhp train``): train a model from a recipe.

One run writes one folder (``--workdir``, default ``runs/<recipe name>``):

- ``recipe.yaml``: the resolved recipe;
- ``state.npz``: the resume state (epoch, weights, optimizer variables, best weights,
  history), the run's single atomic commit point (see :mod:`lhp_tf.checkpoint`);
- ``last.keras`` / ``best.keras`` (best by validation NME), ``metrics.jsonl`` (one row per
  epoch) and ``tb/`` (TensorBoard), all derived from the state and written atomically.

A run killed at any moment resumes with ``--resume`` from its last finished epoch: same
weights, same Adam moments and step counter, same data order (the pipeline's order and
augmentation are pure functions of (seed, epoch)), losing at most the epoch in progress.

The loop is a custom ``strategy.run`` step rather than ``Model.fit``: it keeps one code path
for no / mirrored / multi-worker distribution, and the run state under our control.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lhp_tf.checkpoint import (
    STATE_FILE,
    RunLock,
    RunState,
    assign_all,
    atomic_write_text,
    load_state,
    save_keras,
    save_state,
)
from lhp_tf.config import Recipe, dump_recipe, load_recipe
from lhp_tf.errors import LhpError
from lhp_tf.model.presets import pinned


def learning_rate(recipe: Recipe, epoch: int) -> float:
    """Step decay: ``lr * lr_factor ** (number of lr_steps <= epoch)`` (epochs are 0-based)."""
    t = recipe.train
    return t.lr * t.lr_factor ** sum(1 for s in t.lr_steps if epoch >= s)


def make_optimizer(recipe: Recipe) -> Any:
    from lhp_tf.model.kbackend import keras

    t = recipe.train
    if t.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=t.lr)
    if t.optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate=t.lr, weight_decay=t.weight_decay)
    return keras.optimizers.SGD(learning_rate=t.lr, momentum=0.9, weight_decay=t.weight_decay or None)


def configure_tf(recipe: Recipe) -> None:
    """Seed Python/numpy/TF and, when ``train.deterministic``, make TF ops deterministic."""
    import tensorflow as tf

    from lhp_tf.model.kbackend import keras

    keras.utils.set_random_seed(recipe.train.seed)
    if not tf.config.list_physical_devices("GPU"):
        # Grappler spends about a minute optimising the ~1,200-layer training graph of
        # lhp-small on a CPU and the steps measured no faster for it (0.256 vs 0.257 s).
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    if recipe.train.deterministic:
        tf.config.experimental.enable_op_determinism()


class Progress:
    """Per-step progress line (loss, steps/s): redrawn in place on a terminal, every
    ``every`` steps otherwise (logs, CI)."""

    def __init__(self, total_epochs: int, every: int, stream: Any = None) -> None:
        self.total_epochs = total_epochs
        self.every = max(1, every)
        self.stream = stream or sys.stdout
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def step(self, epoch: int, step: int, steps: int | None, loss: float, rate: float) -> None:
        if step % self.every and not self.tty and step != steps:
            return
        of = f"/{steps}" if steps else ""
        text = (f"epoch {epoch + 1}/{self.total_epochs} step {step}{of} "
                f"loss {loss:.5f} {rate:.2f} steps/s")
        if self.tty:
            self.stream.write("\r" + text + "\033[K")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def line(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r\033[K")
        self.stream.write(text + "\n")
        self.stream.flush()


def _steps_in(dataset: Any) -> int | None:
    import tensorflow as tf

    n = int(dataset.cardinality())
    return n if n >= 0 and n != int(tf.data.INFINITE_CARDINALITY) else None


def train(recipe: Recipe, workdir: str | Path, resume: bool = False,
          log: Callable[[str], None] | None = None, stream: Any = None,
          max_epochs: int | None = None) -> dict[str, Any]:
    """Train ``recipe`` into ``workdir``; returns the final history row and best NME.

    ``max_epochs`` stops after that many epochs *in this call* (the run can be resumed
    later); tests use it to simulate an interruption at an epoch boundary. The process that
    writes the folder (the chief) owns it for the whole call (:class:`lhp_tf.checkpoint.RunLock`):
    a second training into the same folder is refused.
    """
    from lhp_tf.distribute import is_chief

    if not is_chief(recipe.train.distribute):
        return _train(recipe, Path(workdir), resume, log, stream, max_epochs)
    with RunLock(workdir) as lock:
        if lock.removed:
            (log or print)(f"removed {len(lock.removed)} temporary file(s) left by a killed write in {workdir}")
        return _train(recipe, Path(workdir), resume, log, stream, max_epochs)


def _train(recipe: Recipe, workdir: Path, resume: bool, log: Callable[[str], None] | None,
           stream: Any, max_epochs: int | None) -> dict[str, Any]:
    state_path = workdir / STATE_FILE
    if state_path.exists() and not resume:
        raise LhpError(f"{workdir}: already holds a run ({STATE_FILE}); pass --resume to continue "
                       f"it or choose another --workdir")
    # Read and check the state before anything is written or TensorFlow starts: a failed
    # resume must leave the folder as it found it.
    saved = load_state(state_path) if resume and state_path.exists() else None

    import numpy as np
    import tensorflow as tf

    from lhp_tf.data.datasets import read_split
    from lhp_tf.data.pipeline import train_dataset
    from lhp_tf.distribute import average_over_workers, cluster_for, make_strategy, sum_over_workers
    from lhp_tf.evaluate import heatmap_fn, predict
    from lhp_tf.losses import heatmap_loss
    from lhp_tf.metrics import nme
    from lhp_tf.model.network import LandmarkNet, with_activation
    from lhp_tf.spec import ModelSpec
    from lhp_tf.tb_log import ScalarLog

    progress = Progress(recipe.train.epochs, recipe.train.log_every, stream)
    say = log or progress.line
    cluster = cluster_for(recipe.train.distribute)
    chief = cluster.chief

    configure_tf(recipe)
    strategy = make_strategy(recipe.train.distribute, cluster)
    t = recipe.train
    train_samples = read_split(recipe.data, recipe.data.train_split)
    val_samples = read_split(recipe.data, recipe.data.val_split)
    if t.val_samples is not None:
        val_samples = val_samples[: t.val_samples]
    if not train_samples:
        raise LhpError(f"{recipe.source}: training split {recipe.data.train_split!r} is empty")
    if not val_samples:
        raise LhpError(f"{recipe.source}: validation split {recipe.data.val_split!r} is empty")
    say(f"{recipe.name}: {len(train_samples)} training / {len(val_samples)} validation faces, "
        f"{recipe.model.arch}, loss {t.loss}, {strategy.num_replicas_in_sync} replica(s), "
        f"workdir {workdir}")

    with strategy.scope():
        spec = ModelSpec.from_recipe(recipe)
        model = LandmarkNet(spec)
        optimizer = make_optimizer(recipe)
        optimizer.build(model.trainable_variables)
    eval_model = with_activation(model, spec.codec.activation)
    infer = heatmap_fn(eval_model)
    loss_fn = heatmap_loss(t.loss)

    state = RunState(epoch=0, weights=[], optimizer=[], recipe_hash=recipe.hash())
    if saved is not None:
        state = saved
        if state.recipe_hash != recipe.hash():
            say(f"warning: {workdir}/recipe.yaml differs from the recipe given; resuming anyway")
        assign_all(model.weights, state.weights, "model weights", state_path)
        assign_all(optimizer.variables, state.optimizer, "optimizer state", state_path)
    if chief:  # the state (if any) is read and fits the model: the folder may now change
        workdir.mkdir(parents=True, exist_ok=True)
        pinned_model = pinned(recipe.model, recipe.num_landmarks)
        atomic_write_text(workdir / "recipe.yaml", dump_recipe(dataclasses.replace(recipe, model=pinned_model)))
    if saved is not None:
        if chief:
            _write_views(workdir, model, state)
        say(f"resumed from {state_path}: {state.epoch} epoch(s) done, optimizer step "
            f"{int(optimizer.iterations.numpy())}")
    elif resume:
        say(f"no {STATE_FILE} in {workdir}: starting from epoch 1")

    @tf.function
    def train_step(images: Any, targets: Any) -> Any:
        def step(images: Any, targets: Any) -> Any:
            with tf.GradientTape() as tape:
                logits = model(images, training=True)
                per_sample = loss_fn(targets, tf.cast(logits, tf.float32))
                loss = tf.nn.compute_average_loss(per_sample)
                if model.losses:
                    loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
            return loss

        per_replica = strategy.run(step, args=(images, targets))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    writer = ScalarLog(workdir / "tb") if chief else None
    last_row: dict[str, Any] = state.history[-1] if state.history else {}
    epochs_run = 0
    for epoch in range(state.epoch, t.epochs):
        if max_epochs is not None and epochs_run >= max_epochs:
            break
        lr = learning_rate(recipe, epoch)
        optimizer.learning_rate.assign(lr)
        ds = train_dataset(recipe, train_samples, t.seed, epoch)
        if t.steps_per_epoch is not None:
            ds = ds.repeat().take(t.steps_per_epoch)
        steps = _steps_in(ds)
        dist = strategy.experimental_distribute_dataset(ds)
        start = time.perf_counter()
        total, count, step_i = 0.0, 0, 0
        for images, targets in dist:
            loss = float(train_step(images, targets))
            if not math.isfinite(loss):
                raise LhpError(f"{workdir}: loss became {loss} at epoch {epoch + 1} step "
                               f"{step_i + 1}; lower train.lr or check the data")
            step_i += 1
            total += loss
            count += 1
            rate = step_i / max(time.perf_counter() - start, 1e-9)
            progress.step(epoch, step_i, steps, loss, rate)
            if writer is not None and step_i % progress.every == 0:
                writer.scalar("train/loss", loss, optimizer.iterations)
        train_time = time.perf_counter() - start
        row: dict[str, Any] = {"epoch": epoch + 1, "lr": lr, "loss": total / max(count, 1),
                               "steps": count, "step": int(optimizer.iterations.numpy()),
                               "train_s": round(train_time, 2)}
        # Workers' batch-norm statistics drift apart (each sees its shard): one model for all.
        average_over_workers(strategy, cluster, model.non_trainable_variables)
        validate = (epoch + 1) % t.val_every == 0 or epoch + 1 == t.epochs
        if validate:
            # Each worker scores its share of the faces; the sums make one figure for the run.
            v0 = time.perf_counter()
            shard = val_samples[cluster.rank::cluster.workers]
            per_face = np.zeros(0)
            skipped = 0
            if shard:
                try:
                    p = predict(eval_model, spec, recipe, shard, infer=infer)
                    per_face = nme(p.pred, p.truth, p.norm).astype(np.float64)
                    skipped = int((~p.keep).sum()) if p.keep is not None else 0
                except LhpError:
                    if cluster.workers < 2:
                        raise
                    skipped = len(shard)  # none readable here; the peers still wait for our sums
            total, faces, skipped = sum_over_workers(strategy, cluster,
                                                     np.array([per_face.sum(), per_face.size, skipped]))
            if faces == 0:
                raise LhpError(f"{recipe.source or recipe.name}: none of the validation faces of "
                               f"{recipe.data.val_split!r} could be read on any worker")
            row["val_nme"] = 100.0 * float(total / faces)
            if skipped:  # data.on_error: skip
                row["val_skipped"] = int(skipped)
            row["val_s"] = round(time.perf_counter() - v0, 2)
        state.epoch = epoch + 1
        state.history.append(row)
        if validate and row["val_nme"] < state.best_nme:
            state.best_nme = row["val_nme"]
            state.best_epoch = epoch + 1
            state.best_weights = [w.copy() for w in model.get_weights()]
        state.weights = model.get_weights()
        state.optimizer = [v.numpy() for v in optimizer.variables]
        if chief:
            save_state(state_path, state)
            _write_views(workdir, model, state, best_changed=state.best_epoch == epoch + 1)
            if writer is not None:
                for key in ("loss", "val_nme", "lr"):
                    if key in row:
                        writer.scalar(f"epoch/{key}", row[key], epoch + 1)
                writer.flush()
        val_text = f", val NME {row['val_nme']:.2f}%" if validate else ""
        if row.get("val_skipped"):
            val_text += f" ({row['val_skipped']} unreadable image(s) skipped)"
        say(f"epoch {epoch + 1}/{t.epochs}: loss {row['loss']:.5f}{val_text}, lr {lr:g}, "
            f"{count / max(train_time, 1e-9):.2f} steps/s"
            + (f", best {state.best_nme:.2f}% @ {state.best_epoch}" if state.best_epoch > 0 else ""))
        last_row = row
        epochs_run += 1
    return {"epoch": state.epoch, "last": last_row, "best_nme": state.best_nme,
            "best_epoch": state.best_epoch, "workdir": str(workdir)}


def _write_views(workdir: Path, model: Any, state: RunState, best_changed: bool = True) -> None:
    """Rewrite ``best.keras``, ``last.keras`` and ``metrics.jsonl`` from the committed state."""
    if best_changed and state.best_weights is not None:
        current = model.get_weights()
        model.set_weights(state.best_weights)
        save_keras(model, workdir / "best.keras")
        model.set_weights(current)
    save_keras(model, workdir / "last.keras")
    text = "".join(json.dumps(r) + "\n" for r in state.history)
    atomic_write_text(workdir / "metrics.jsonl", text)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="lhp train", description=__doc__.splitlines()[0])
    parser.add_argument("recipe", help="recipe YAML (e.g. recipes/synthetic-300w.yaml)")
    parser.add_argument("--workdir", default=None, help="run folder (default runs/<recipe name>)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe key, e.g. --set model.arch=lhp-large")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --workdir from its last finished epoch")
    parser.add_argument("--no-ranges", dest="ranges", action="store_false",
                        help="skip learning best.keras's int8 ranges at the end (export.calibration: learned); "
                             "'lhp convert' then learns them itself, or 'lhp quantize ranges' later")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    recipe = load_recipe(args.recipe, args.set)
    workdir = Path(args.workdir) if args.workdir else Path("runs") / recipe.name
    result = train(recipe, workdir, resume=args.resume)
    print(f"done: {result['epoch']} epoch(s); best val NME {result['best_nme']:.2f}% at epoch "
          f"{result['best_epoch']}; checkpoints in {workdir}/ (best.keras, last.keras)")
    from lhp_tf.distribute import is_chief
    from lhp_tf.quantize.learned_ranges import learn_for_checkpoint, learns

    if args.ranges and learns(recipe) and is_chief(recipe.train.distribute):
        print("learning best.keras's int8 ranges for 'lhp convert' (export.calibration: learned; "
              "--no-ranges skips)", flush=True)
        path, learned, _ = learn_for_checkpoint(workdir / "best.keras", workdir / "recipe.yaml")
        print(f"wrote {path} ({learned.stats.get('seconds', 0)} s)")
    return 0


if __name__ == "__main__":
    from lhp_tf.errors import run_main

    sys.exit(run_main(main, prog="lhp train"))
