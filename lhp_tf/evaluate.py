"""``lhp eval``: NME / FR / AUC of a checkpoint per split and subset, laid out like Table 1.

The evaluation math lives in the numpy-only modules that boards run too: heatmaps are
decoded by the checkpoint's own codec through :func:`lhp_tf.codec.landmarks_from_crops` (the
path ``lhp bench`` and inference take), mapped through each sample's ``crop2img`` affine back
to ORIGINAL image pixels, and scored by :mod:`lhp_tf.metrics` (inter-ocular NME). The only
TensorFlow here is the forward pass, so a number printed by ``lhp eval`` and one computed on a
board from the same model agree.

Every row also reports the trivial baseline ``mean_shape_nme``: the training set's mean
landmark layout inside the crop, mapped back to image pixels. A model that does not beat it
by a wide margin has not learned to localise anything.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lhp_tf import decode as dec
from lhp_tf import metrics
from lhp_tf.codec import HeatmapCodec, landmarks_from_crops
from lhp_tf.config import Recipe, load_recipe
from lhp_tf.errors import LhpError
from lhp_tf.kinds import DECODERS
from lhp_tf.spec import ModelSpec


@dataclass
class Predictions:
    """Landmarks of a list of samples, in original image pixels."""

    pred: np.ndarray  # (N, K, 2)
    truth: np.ndarray  # (N, K, 2)
    norm: np.ndarray  # (N,)
    crop2img: np.ndarray  # (N, 2, 3)
    #: which of the samples asked for these are (False: unreadable image skipped under
    #: ``data.on_error: skip``); None: all of them
    keep: np.ndarray | None = None


def table_rows(recipe: Recipe) -> list[str]:
    """The splits/subsets of the paper's Table 1 for this dataset.

    300W: the recipe's ``eval_splits`` (common, challenging, full, test). WFLW: the test set
    plus its six attribute subsets.
    """
    splits = list(recipe.data.eval_splits or [recipe.data.val_split])
    if recipe.data.format == "wflw" and "test" in splits:
        from lhp_tf.data.wflw import ATTRIBUTES

        splits += [a for a in ATTRIBUTES if a not in splits]
    return splits


def heatmap_fn(model: Any) -> Any:
    """A compiled inference call ``images -> heatmaps`` (retracing once per batch shape)."""
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def infer(images: Any) -> Any:
        return model(images, training=False)

    return infer


def predict(model: Any, spec: ModelSpec, recipe: Recipe, samples: Sequence[Any],
            codec: HeatmapCodec | None = None, flip_test: bool | None = None, infer: Any = None) -> Predictions:
    """Run ``model`` (which outputs heatmaps, activation applied) on ``samples`` and decode.

    Decodes with ``codec`` (default: the spec's). ``flip_test`` averages each heatmap with the
    one predicted on the mirrored crop (left and right landmarks swapped back with the spec's
    flip permutation) before decoding.
    """
    from lhp_tf.data.pipeline import eval_dataset

    codec = codec or spec.codec
    flip_test = recipe.eval.flip_test if flip_test is None else flip_test
    infer = infer or heatmap_fn(model)
    perm = None
    if flip_test:
        perm = spec.flip_array()
        if perm is None:
            raise LhpError(f"eval.flip_test: the model's {spec.num_landmarks}-landmark scheme has no flip table")
    n = len(samples)
    k = spec.num_landmarks
    pred = np.zeros((n, k, 2), np.float64)
    truth = np.zeros((n, k, 2), np.float64)
    norm = np.zeros((n,), np.float64)
    c2i = np.zeros((n, 2, 3), np.float64)
    seen = np.zeros((n,), bool)
    for batch in eval_dataset(recipe, list(samples)):
        m = np.asarray(batch["crop2img"], np.float64)
        idx = np.asarray(batch["index"]).astype(np.int64)
        pred[idx], _ = landmarks_from_crops(infer, batch["image"], m, codec, perm)
        truth[idx] = np.asarray(batch["landmarks"], np.float64)
        norm[idx] = np.asarray(batch["norm"], np.float64)
        c2i[idx] = m
        seen[idx] = True
    if not seen.any():
        raise LhpError(f"{samples[0].source if n else recipe.source}: none of the {n} images to evaluate "
                       f"could be read")
    if seen.all():
        return Predictions(pred, truth, norm, c2i, keep=seen)
    return Predictions(pred[seen], truth[seen], norm[seen], c2i[seen], keep=seen)


def mean_shape(recipe: Recipe, train_samples: Sequence[Any]) -> np.ndarray:
    """The training set's mean landmark layout in crop pixels, (K, 2)."""
    from lhp_tf.data.crop import apply_affine, crop_transform

    if not train_samples:
        raise LhpError(f"{recipe.source or 'recipe'}: the training split "
                       f"{recipe.data.train_split!r} is empty; no mean shape to compare with")
    size = tuple(recipe.model.input_size)
    pts = [apply_affine(crop_transform(s.box, size, recipe.data.box_scale), s.landmarks)
           for s in train_samples]
    return np.mean(np.stack(pts).astype(np.float64), axis=0)


def score(p: Predictions, shape: np.ndarray | None, threshold: float) -> dict[str, float]:
    """NME, FR and AUC at ``threshold`` (in %), plus the mean-shape baseline NME."""
    nmes = metrics.nme(p.pred, p.truth, p.norm)
    row = {"n": int(nmes.size), "nme": 100.0 * float(nmes.mean()),
           "fr": 100.0 * metrics.failure_rate(nmes, threshold),
           "auc": 100.0 * metrics.auc(nmes, threshold)}
    if shape is not None:
        base = dec.crop_to_image(np.broadcast_to(shape, p.pred.shape), p.crop2img)
        row["mean_shape_nme"] = 100.0 * float(metrics.nme(base, p.truth, p.norm).mean())
    return row


def load_for_eval(recipe: Recipe, checkpoint: str | Path) -> tuple[Any, ModelSpec, Any]:
    """Load a checkpoint: ``(logits model, its spec, model with the spec's heatmap activation)``."""
    from lhp_tf.model.network import load_trained, with_activation

    path = Path(checkpoint)
    if not path.is_file():
        raise LhpError(f"{path}: checkpoint not found")
    try:
        model, spec = load_trained(path, recipe)
    except LhpError:
        raise
    except Exception as exc:  # Keras raises many types for a corrupt or foreign file
        raise LhpError(f"{path}: cannot load checkpoint: {exc}") from None
    return model, spec, with_activation(model, spec.codec.activation)


def complexity(model: Any) -> tuple[int, float]:
    """Parameters and mmcv-style MFLOPs of the network, counted by lhp_tf.model.flops."""
    from lhp_tf.model import flops

    c = flops.count(model)
    return int(c.params), c.mmcv_flops / 1e6


def evaluate(recipe: Recipe, checkpoint: str | Path, out: str | Path | None = None,
             decoder: str | None = None, flip_test: bool | None = None,
             max_samples: int | None = None, num_images: int = 6) -> dict[str, Any]:
    """Score ``checkpoint`` on every row of :func:`table_rows`; write CED and example images."""
    from lhp_tf.data.datasets import read_split

    flip_test = recipe.eval.flip_test if flip_test is None else flip_test
    max_samples = max_samples if max_samples is not None else recipe.eval.max_samples
    threshold = recipe.eval.fr_threshold
    logits_model, spec, model = load_for_eval(recipe, checkpoint)
    codec = spec.codec.with_decoder(decoder)
    infer = heatmap_fn(model)
    shape = mean_shape(recipe, read_split(recipe.data, recipe.data.train_split))

    rows = table_rows(recipe)
    per_split: dict[str, list[Any]] = {}
    unique: dict[tuple[str, str], Any] = {}
    for split in rows:
        samples = read_split(recipe.data, split)
        if max_samples is not None:
            samples = samples[:max_samples]
        if not samples:
            raise LhpError(f"{recipe.source or 'recipe'}: eval split {split!r} has no samples")
        per_split[split] = samples
        for s in samples:
            unique.setdefault((s.image_path, s.source), s)
    # Overlapping splits (300W full = common + challenging) are predicted once.
    keys = list(unique)
    allp = predict(model, spec, recipe, [unique[k] for k in keys], codec, flip_test, infer)
    keys = [k for k, ok in zip(keys, allp.keep, strict=True) if ok]  # unreadable ones skipped
    where = {k: i for i, k in enumerate(keys)}

    result: dict[str, Any] = {"recipe": recipe.name, "checkpoint": str(checkpoint),
                              "decoder": codec.decoder, "dark_kernel": codec.dark_kernel,
                              "flip_test": bool(flip_test),
                              "threshold": threshold, "splits": {}}
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split, samples in per_split.items():
        ix = np.array([where[key] for key in ((s.image_path, s.source) for s in samples) if key in where], int)
        if ix.size == 0:
            raise LhpError(f"{recipe.source or 'recipe'}: eval split {split!r}: none of its "
                           f"{len(samples)} images could be read")
        p = Predictions(allp.pred[ix], allp.truth[ix], allp.norm[ix], allp.crop2img[ix])
        result["splits"][split] = score(p, shape, threshold)
        result["splits"][split]["skipped"] = len(samples) - int(ix.size)
        curves[split] = metrics.ced_curve(metrics.nme(p.pred, p.truth, p.norm), threshold)
    params, mflops = complexity(logits_model)
    result["params"] = params
    result["mflops"] = mflops

    if out is not None:
        _write_figures(Path(out), recipe, result, curves, unique, keys, allp, num_images)
    return result


def _write_figures(out: Path, recipe: Recipe, result: dict[str, Any],
                   curves: dict[str, tuple[np.ndarray, np.ndarray]], unique: dict, keys: list,
                   allp: Predictions, num_images: int) -> None:
    import cv2

    from lhp_tf.checkpoint import atomic_write_text
    from lhp_tf.report_plots import draw_ced, draw_landmarks

    out.mkdir(parents=True, exist_ok=True)
    draw_ced(out / "ced.png", curves, result["threshold"],
             title=f"CED {recipe.name} ({result['decoder']})")
    step = max(1, len(keys) // max(1, num_images))
    for j, i in enumerate(range(0, len(keys), step)[:num_images]):
        s = unique[keys[i]]
        image = cv2.imread(s.image_path, cv2.IMREAD_COLOR)  # the path the pipeline read
        if image is None:
            continue
        draw_landmarks(out / f"sample_{j:02d}.png", image, allp.pred[i], allp.truth[i], s.box)
    atomic_write_text(out / "eval.json", json.dumps(result, indent=2) + "\n")


def format_table(result: dict[str, Any]) -> str:
    """Per-split rows (N, NME, FR, AUC, mean-shape NME), then a Table 1 style one-liner."""
    t = result["threshold"]
    lines = [f"{result['recipe']}: {result['checkpoint']}  (decoder {result['decoder']}, "
             f"flip test {'on' if result['flip_test'] else 'off'}, NME inter-ocular)",
             f"{'split':<14}{'N':>6}{'NME %':>9}{f'FR@{t:.2f} %':>12}{f'AUC@{t:.2f} %':>13}"
             f"{'mean-shape NME %':>18}"]
    for split, r in result["splits"].items():
        lines.append(f"{split:<14}{r['n']:>6}{r['nme']:>9.2f}{r['fr']:>12.2f}{r['auc']:>13.2f}"
                     f"{r.get('mean_shape_nme', float('nan')):>18.2f}")
    names = list(result["splits"])
    head = " | ".join(["params", "MFLOPs", *names])
    vals = " | ".join([f"{result['params'] / 1e6:.3f}M", f"{result['mflops']:.2f}",
                       *(f"{result['splits'][n]['nme']:.2f}" for n in names)])
    lines += ["", f"Table 1 layout (NME %): | {head} |", f"                        | {vals} |"]
    skipped = {n: r["skipped"] for n, r in result["splits"].items() if r.get("skipped")}
    if skipped:
        lines.append("unreadable images skipped (data.on_error: skip): "
                     + ", ".join(f"{n} {c}" for n, c in skipped.items()))
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="lhp eval", description=__doc__.splitlines()[0])
    parser.add_argument("recipe", help="recipe (a name from 'lhp recipes' or a YAML file) whose data "
                                       "to evaluate on; the checkpoint says how to decode")
    parser.add_argument("--checkpoint", required=True,
                        help="a .keras checkpoint (a run's best is <workdir>/best.keras)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe key, e.g. --set eval.flip_test=true")
    parser.add_argument("--decoder", choices=DECODERS, default=None,
                        help="heatmap decoder (default: the checkpoint's codec)")
    flip = parser.add_mutually_exclusive_group()
    flip.add_argument("--flip-test", dest="flip_test", action="store_true", default=None)
    flip.add_argument("--no-flip-test", dest="flip_test", action="store_false")
    parser.add_argument("--max-samples", type=int, default=None, help="first N samples per split")
    parser.add_argument("--out", default=None,
                        help="folder for ced.png, sample images and eval.json "
                             "(default: eval/ next to the checkpoint)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    recipe = load_recipe(args.recipe, args.set)
    out = Path(args.out) if args.out else Path(args.checkpoint).parent / "eval"
    result = evaluate(recipe, args.checkpoint, out, args.decoder, args.flip_test, args.max_samples)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_table(result))
        print(f"\nfigures: {out}/ced.png, {out}/sample_*.png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    from lhp_tf.errors import run_main

    sys.exit(run_main(main, prog="lhp eval"))
