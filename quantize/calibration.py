"""Calibration images for int8: the recipe's TRAINING data through the EVALUATION preprocessing.

Activation ranges must be those the model sees at inference: crops made exactly as the
evaluation pipeline makes them (no flips, rotations or photometric noise, which would widen
the ranges and cost resolution), drawn from the training split so that the test split stays
unseen. Samples are picked with a fixed seed, spread over the whole split.

:func:`probe_images` are the other kind: training faces through the TRAINING augmentation, on
which ``export.calibration: auto`` compares candidate ranges. The model has fitted the plain
training crops, and on them int8's landmark shifts rank the candidates unlike on unseen faces
(synthetic lhp-small, 20 epochs, mean shift in heatmap pixels, min/max vs MSE ranges: 0.062 vs
0.066 on plain training crops, 0.103 vs 0.088 on augmented ones; held-out drift +0.238 vs
+0.045); augmented crops are new to it.
"""

from __future__ import annotations

import numpy as np

from lhp_tf.config import Recipe
from lhp_tf.errors import LhpError


def calibration_images(recipe: Recipe, num: int | None = None, seed: int = 0) -> np.ndarray:
    """``(N, H, W, 3)`` float32 images in [0, 1]; ``num`` defaults to ``export.calib_samples``."""
    from lhp_tf.data.datasets import read_split
    from lhp_tf.data.pipeline import eval_dataset

    num = recipe.export.calib_samples if num is None else num
    if num <= 0:
        raise LhpError(f"calibration sample count must be > 0, got {num} (export.calib_samples / --calib-samples)")
    samples = read_split(recipe.data, recipe.data.train_split)
    if not samples:
        raise LhpError(f"{recipe.source or recipe.name}: training split {recipe.data.train_split!r} is empty; "
                       "int8 calibration needs training images")
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(samples), size=min(num, len(samples)), replace=False))
    chosen = [samples[int(i)] for i in pick]
    batches = [batch["image"].numpy() for batch in eval_dataset(recipe, chosen)]
    return np.concatenate(batches, axis=0).astype(np.float32)


def probe_images(recipe: Recipe, num: int, seed: int = 0) -> np.ndarray:
    """``(num, H, W, 3)`` float32 training faces in [0, 1] through the training augmentation
    (one epoch's draw for ``seed``), spread over the whole split."""
    from lhp_tf.data.datasets import read_split
    from lhp_tf.data.pipeline import train_dataset

    samples = read_split(recipe.data, recipe.data.train_split)
    if not samples:
        raise LhpError(f"{recipe.source or recipe.name}: training split {recipe.data.train_split!r} is empty; "
                       "int8 calibration needs training images")
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(samples), size=min(num, len(samples)), replace=False))
    chosen = [samples[int(i)] for i in pick]
    batches = [images.numpy() for images, _ in train_dataset(recipe, chosen, seed, 0)]
    return np.concatenate(batches, axis=0)[:num].astype(np.float32)

