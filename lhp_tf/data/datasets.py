"""Splits of a dataset root as lists of samples, whatever the format or origin.

``read_split`` is the one entry the pipeline, training and evaluation use; it reads the
official WFLW / 300W layouts (or HRNet-Facial CSVs for 300W) and, when the recipe asks for
synthetic data, materialises it first. This module imports neither TensorFlow nor Keras.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from lhp_tf.config import DataConfig
from lhp_tf.data import synth, w300, wflw
from lhp_tf.data.sample import DataError, ProblemLog, Sample

#: Splits of each format; WFLW's six test subsets and 300W's common/challenging are splits too.
SPLITS: dict[str, tuple[str, ...]] = {"300w": w300.SPLITS, "wflw": wflw.SPLITS}
#: Subsets reported inside an evaluation split.
SUBSETS: dict[tuple[str, str], tuple[str, ...]] = {
    ("300w", "full"): ("common", "challenging"),
    ("wflw", "test"): wflw.ATTRIBUTES,
}


def synthetic_root(data_cfg: DataConfig) -> Path:
    s = data_cfg.synthetic
    assert s is not None
    return Path(data_cfg.cache_dir).expanduser() / f"synth-{data_cfg.format}-{s.num}-{s.seed}-{s.image_size}"


def dataset_root(data_cfg: DataConfig) -> Path:
    """The dataset folder; a synthetic set is generated into the cache on first use."""
    if data_cfg.root is not None:
        root = Path(data_cfg.root).expanduser()
        if not root.is_dir():
            raise DataError(f"{root}: data.root is not a folder")
        return root
    if data_cfg.synthetic is None:
        raise DataError("data.root is not set and data.synthetic is off: nothing to read")
    s = data_cfg.synthetic
    target = synthetic_root(data_cfg)
    if not synth.is_current(target):
        print(f"lhp data: generating {s.num} synthetic {data_cfg.format} faces into {target}", file=sys.stderr)
    return synth.materialise(data_cfg.format, target, s.num, s.seed, s.image_size)


def read_samples(fmt: str, root: Path, split: str, log: ProblemLog, csv_dir: Path | None = None,
                 check_images: bool = True) -> list[Sample]:
    """One split of a root folder, problems going to ``log``."""
    if split not in SPLITS[fmt]:
        raise DataError(f"unknown {fmt} split {split!r} (known: {', '.join(SPLITS[fmt])})")
    if fmt == "wflw":
        return wflw.read_split(root, split, log, check_images)
    if csv_dir is not None:
        return w300.read_csv(csv_dir, root, split, log, check_images)
    return w300.read_split(root, split, log, check_images)


def read_split(data_cfg: DataConfig, split: str, allow_empty: bool = False) -> list[Sample]:
    """Samples of one split; with ``on_error: skip`` bad ones are dropped and counted on stderr.

    A split that was asked for and holds no usable sample (absent, empty, or every sample
    skipped) is a :class:`DataError` unless ``allow_empty``: training or scoring nothing
    would otherwise fail later with a less clear message, or not at all.
    """
    root = dataset_root(data_cfg)
    log = ProblemLog(data_cfg.on_error)
    csv_dir = Path(data_cfg.csv_dir).expanduser() if data_cfg.csv_dir else None
    samples = read_samples(data_cfg.format, root, split, log, csv_dir)
    if log.problems:
        print(f"lhp data: {data_cfg.format} {split}: {log.summary()}", file=sys.stderr)
        for p in log.problems[:5]:
            print(f"  {p}", file=sys.stderr)
    if not samples and not allow_empty:
        why = f"all skipped ({log.summary()}; first: {log.problems[0]})" if log.problems else \
            "no annotations found (is data.format right for this root?)"
        raise DataError(f"{root}: {data_cfg.format} split {split!r} has no usable samples: {why}")
    return samples


def subset_masks(data_cfg: DataConfig, split: str, samples: list[Sample]) -> dict[str, np.ndarray]:
    """Boolean membership of each sample in the split's subsets (empty for splits without)."""
    names = SUBSETS.get((data_cfg.format, split), ())
    if data_cfg.format == "wflw":
        return {a: np.array([bool(s.attributes and s.attributes.get(a)) for s in samples]) for a in names}
    out = {}
    for name in names:
        members = {s.image_path for s in read_split(data_cfg, name, allow_empty=True)}
        out[name] = np.array([s.image_path in members for s in samples])
    return out
