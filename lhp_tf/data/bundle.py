"""The evaluation bundle (``lhp data export-eval``): crops and ground truth in one ``.npz``.

The device side (``lhp_tf.bench``) reads it with numpy only, so everything in it is a plain
array; the layout is fixed by docs/CONTRACTS.md. This module imports neither TensorFlow nor Keras.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lhp_tf.checkpoint import atomic_write
from lhp_tf.config import Recipe
from lhp_tf.data.datasets import read_split, subset_masks
from lhp_tf.data.images import eval_arrays
from lhp_tf.data.sample import DataError, ProblemLog


def build_bundle(recipe: Recipe, split: str, max_samples: int | None = None) -> dict[str, np.ndarray]:
    """Arrays of the bundle for one split (subsets per CONTRACTS: 300W full, WFLW test)."""
    d = recipe.data
    samples = read_split(d, split)
    if max_samples is not None:
        samples = samples[:max_samples]
    if not samples:
        raise DataError(f"{d.format} split {split!r} has no samples under {d.root or d.cache_dir}")
    arr = eval_arrays(samples, tuple(recipe.model.input_size), d.box_scale, ProblemLog(d.on_error))
    masks = subset_masks(d, split, samples)
    names = list(masks)
    m = np.stack([masks[n][arr.keep] for n in names]) if names else np.zeros((0, len(arr.images)), bool)
    return {
        "images": arr.images.astype(np.uint8),
        "landmarks": arr.landmarks.astype(np.float32),
        "crop2img": arr.crop2img.astype(np.float32),
        "norm": arr.norm.astype(np.float32),
        "subset_names": np.array(names, dtype=str),
        "subset_masks": m.astype(bool),
        "format": np.array(d.format),
        "split": np.array(split),
        "input_size": np.array(recipe.model.input_size, np.int64),
    }


def write_bundle(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Atomic ``.npz`` write (temp file in the same folder, then ``os.replace``)."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)

    atomic_write(path, write)
