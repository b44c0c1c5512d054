"""Calibration images for int8: the recipe's TRAINING data through the EVALUATION preprocessing.

Activation ranges must be those the model sees at inference: crops made exactly as the
evaluation pipeline makes them (no flips, rotations or photometric noise, which would widen
the ranges and cost resolution), drawn from the training split so that the test split stays
unseen. Samples are picked with a fixed seed, spread over the whole split.

:func:`probe_images` are the other kind: training faces through the TRAINING augmentation, on
which ``export.calibration: auto`` compares candidate ranges (and :func:`augmented_bundle`
scores ``--int16 auto``'s trials). The model has fitted the plain training crops, and on them
int8's landmark shifts rank the candidates unlike on unseen faces (an ad-hoc comparison, not
kept: synthetic lhp-small, 20 epochs, mean shift in heatmap pixels, min/max vs MSE ranges:
0.062 vs 0.066 on plain training crops, 0.103 vs 0.088 on augmented ones; held-out drift
+0.238 vs +0.045); augmented crops are new to it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np

from lhp_tf.config import Recipe
from lhp_tf.errors import LhpError

#: training splits read inside :func:`one_split_read`, by recipe hash (None: not caching)
_SPLITS: dict[str, list] | None = None


@contextlib.contextmanager
def one_split_read() -> Iterator[None]:
    """Within it, the training split is read once per recipe: a conversion takes calibration
    images and probe faces from the same split, and reading a 300W split's .pts files is over a
    second of ``lhp convert``'s wall time. Scoped, so that a long-lived process (a notebook)
    sees annotation files edited between two conversions."""
    global _SPLITS
    outer, _SPLITS = _SPLITS, ({} if _SPLITS is None else _SPLITS)
    try:
        yield
    finally:
        _SPLITS = outer


def _training_split(recipe: Recipe) -> list:
    from lhp_tf.data.datasets import read_split

    if _SPLITS is None:
        return read_split(recipe.data, recipe.data.train_split)
    key = recipe.hash()
    if key not in _SPLITS:
        _SPLITS[key] = read_split(recipe.data, recipe.data.train_split)
    return _SPLITS[key]


def _training_samples(recipe: Recipe, num: int, seed: int) -> list:
    """Up to ``num`` samples of the training split, picked with ``seed``, in split order."""
    samples = _training_split(recipe)
    if not samples:
        raise LhpError(f"{recipe.source or recipe.name}: training split {recipe.data.train_split!r} is empty; "
                       "int8 calibration needs training images")
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(samples), size=min(num, len(samples)), replace=False))
    return [samples[int(i)] for i in pick]


def calibration_images(recipe: Recipe, num: int | None = None, seed: int = 0) -> np.ndarray:
    """``(N, H, W, 3)`` float32 images in [0, 1]; ``num`` defaults to ``export.calib_samples``."""
    from lhp_tf.data.pipeline import eval_dataset

    num = recipe.export.calib_samples if num is None else num
    if num <= 0:
        raise LhpError(f"calibration sample count must be > 0, got {num} (export.calib_samples / --calib-samples)")
    batches = [batch["image"].numpy() for batch in eval_dataset(recipe, _training_samples(recipe, num, seed))]
    return np.concatenate(batches, axis=0).astype(np.float32)


def probe_images(recipe: Recipe, num: int, seed: int = 0) -> np.ndarray:
    """Up to ``num`` float32 training faces ``(N, H, W, 3)`` in [0, 1] through the training
    augmentation (one epoch's draw for ``seed``, full batches), spread over the whole split."""
    from lhp_tf.data.pipeline import train_dataset

    batches = [images.numpy() for images, _ in train_dataset(recipe, _training_samples(recipe, num, seed), seed, 0)]
    return np.concatenate(batches, axis=0)[:num].astype(np.float32)


def augmented_bundle(recipe: Recipe, num: int, seed: int = 0) -> dict[str, np.ndarray]:
    """An evaluation bundle (``lhp_tf.bench`` format) of up to ``num`` training faces through the
    training augmentation, landmarks in crop pixels (identity ``crop2img``), normalised by
    their own inter-ocular distance; faces with a landmark outside the crop are left out.

    A model's NME here is close to its held-out NME, unlike on the plain training crops it has
    fitted (an ad-hoc comparison, not kept: synthetic lhp-large, 10 epochs, float 5.643
    augmented, 4.325 plain, 5.665 held out; int8 with min/max ranges drifts +0.165, +0.042
    and +0.131), so ``--int16 auto`` judges its trials on these.
    """
    from lhp_tf.data.images import inter_ocular
    from lhp_tf.data.pipeline import batches

    images, points = [], []
    for b in batches(recipe, _training_samples(recipe, num, seed), seed, 0, augment=True, batch_size=1):
        inside = b["weight"].numpy().min(axis=1) > 0
        images.append(b["image"].numpy()[inside])
        points.append(b["points"].numpy()[inside])
    pts = np.concatenate(points).astype(np.float32)
    n = len(pts)
    return {
        "images": np.clip(np.round(np.concatenate(images) * 255.0), 0, 255).astype(np.uint8),
        "landmarks": pts,
        "crop2img": np.tile(np.array([[1, 0, 0], [0, 1, 0]], np.float32), (n, 1, 1)),
        "norm": inter_ocular(pts).astype(np.float32),
        "format": np.array(recipe.data.format),
        "split": np.array(f"{recipe.data.train_split} (augmented)"),
        "input_size": np.array(recipe.model.input_size, np.int64),
    }
