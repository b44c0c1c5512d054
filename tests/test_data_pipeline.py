"""The tf.data pipeline, the evaluation bundle and ``lhp data show`` on a tiny synthetic set."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("tensorflow")

from lhp_tf.config import DataConfig, Recipe, SynthConfig, TrainConfig  # noqa: E402
from lhp_tf.data import datasets, pipeline  # noqa: E402
from lhp_tf.data.crop import apply_affine, crop_transform, invert_affine  # noqa: E402
from lhp_tf.data.flip import flip_permutation  # noqa: E402


def _recipe(tmp: Path, fmt: str = "300w", num: int = 24, **augment) -> Recipe:
    r = Recipe()
    r.data = DataConfig(format=fmt, synthetic=SynthConfig(num=num, seed=3, image_size=128),
                        cache_dir=str(tmp), deterministic=True)
    r.data.augment = dataclasses.replace(r.data.augment, **augment)
    r.train = TrainConfig(batch_size=8)
    return r


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("lhpcache")


@pytest.fixture(scope="module")
def recipe(cache_dir) -> Recipe:
    return _recipe(cache_dir, occlusion=0.3, blur=0.3)


@pytest.fixture(scope="module")
def samples(recipe):
    return datasets.read_split(recipe.data, "train")


def _first(ds):
    return {k: v.numpy() for k, v in next(iter(ds)).items()}


def test_train_dataset_contract(recipe, samples):
    ds = pipeline.train_dataset(recipe, samples, seed=0, epoch=0)
    batches = list(ds)
    assert len(batches) == len(samples) // 8
    images, targets = batches[0]
    assert images.shape == (8, 96, 96, 3) and images.dtype.name == "float32"
    assert 0.0 <= float(images.numpy().min()) and float(images.numpy().max()) <= 1.0
    assert targets["heatmap"].shape == (8, 24, 24, 68) and targets["weight"].shape == (8, 68)
    assert float(targets["heatmap"].numpy().max()) <= 1.0


def test_order_and_augmentation_are_functions_of_seed_and_epoch(recipe, samples):
    a = _first(pipeline.batches(recipe, samples, 4, 2))
    b = _first(pipeline.batches(recipe, samples, 4, 2))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(pipeline.epoch_order(len(samples), 4, 2), pipeline.epoch_order(len(samples), 4, 3))
    np.testing.assert_array_equal(pipeline.epoch_order(20, 1, 1), pipeline.epoch_order(20, 1, 1))
    # parallel (non-deterministic-mode) map gives the very same batches: randomness is keyed by batch
    parallel = dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, deterministic=False))
    c = _first(pipeline.batches(parallel, samples, 4, 2))
    for k in a:
        np.testing.assert_array_equal(a[k], c[k])


def test_inverse_warp_restores_landmarks(recipe, samples):
    cache = pipeline.crop_cache(recipe, samples)
    order = pipeline.epoch_order(len(cache.images), 1, 0)
    perm = flip_permutation(68)
    b = _first(pipeline.batches(recipe, samples, 1, 0))
    for i in range(len(b["points"])):
        truth = cache.landmarks[order[i]]
        back = apply_affine(invert_affine(b["cache2crop"][i]), b["points"][i])
        flipped = np.linalg.det(b["cache2crop"][i][:, :2]) < 0
        if flipped:
            back = back[perm]  # perm is an involution
        assert np.abs(back - truth).max() < 0.5


def test_heatmap_centres_follow_the_coordinate_formula(recipe, samples):
    b = _first(pipeline.batches(recipe, samples, 2, 0))
    hm, pts, w = b["heatmap"], b["points"], b["weight"]
    g = np.arange(24, dtype=np.float32)
    checked = 0
    for i in range(len(hm)):
        for k in range(68):
            x, y = pts[i, k]
            if not (22 < x < 72 and 22 < y < 72):  # Gaussian fully inside the 24x24 map
                continue
            assert w[i, k] == 1.0
            m = hm[i, :, :, k]
            u = (m.sum(0) * g).sum() / m.sum()
            v = (m.sum(1) * g).sum() / m.sum()
            np.testing.assert_allclose([(u + 0.5) * 4 - 0.5, (v + 0.5) * 4 - 0.5], [x, y], atol=0.05)
            checked += 1
    assert checked > 50


def test_points_leaving_the_crop_get_zero_weight(cache_dir, samples):
    r = _recipe(cache_dir, scale=(0.4, 0.4), rotation=0.0, translate=0.0, flip=False)
    b = _first(pipeline.batches(r, samples, 0, 0))
    p = b["points"]
    outside = (p[..., 0] < -0.5) | (p[..., 0] > 95.5) | (p[..., 1] < -0.5) | (p[..., 1] > 95.5)
    assert outside.any() and (~outside).any()
    np.testing.assert_array_equal(b["weight"], (~outside).astype(np.float32))


def test_tf_warp_matches_opencv(recipe, samples):
    cache = pipeline.crop_cache(recipe, samples)
    order = pipeline.epoch_order(len(cache.images), 0, 0)
    b = _first(pipeline.batches(recipe, samples, 0, 0, augment=False))
    for i in range(3):
        ref = cv2.warpAffine(cache.images[order[i]], b["cache2crop"][i], (96, 96), flags=cv2.INTER_LINEAR)
        assert np.abs(ref / 255.0 - b["image"][i]).mean() < 0.01


def test_flip_augmentation_mirrors_the_pixels(cache_dir, samples):
    r = _recipe(cache_dir, scale=(1.0, 1.0), rotation=0.0, translate=0.0, photometric=False)
    b = _first(pipeline.batches(r, samples, 0, 0))
    plain = _first(pipeline.batches(r, samples, 0, 0, augment=False))
    flips = np.linalg.det(b["cache2crop"][:, :, :2]) < 0
    assert flips.any()
    i = int(np.argmax(flips))
    assert np.abs(b["image"][i] - plain["image"][i][:, ::-1]).mean() < 0.01
    expect = plain["points"][i][flip_permutation(68)]
    expect[:, 0] = 95 - expect[:, 0]
    np.testing.assert_allclose(b["points"][i], expect, atol=1e-3)


def test_eval_dataset_maps_back_to_image_pixels(recipe):
    samples = datasets.read_split(recipe.data, "full")
    ds = pipeline.eval_dataset(recipe, samples)
    d = _first(ds)
    n = len(samples)
    assert d["image"].shape == (n, 96, 96, 3) and d["landmarks"].shape == (n, 68, 2)
    np.testing.assert_array_equal(d["index"], np.arange(n))
    for i, s in enumerate(samples):
        m = crop_transform(s.box, 96, recipe.data.box_scale)
        crop_pts = apply_affine(m, s.landmarks)
        np.testing.assert_allclose(apply_affine(d["crop2img"][i], crop_pts), s.landmarks, atol=1e-2)
        np.testing.assert_allclose(d["norm"][i], np.linalg.norm(s.landmarks[36] - s.landmarks[45]), rtol=1e-5)


@pytest.mark.parametrize("fmt, split, subsets", [
    ("300w", "full", ["common", "challenging"]),
    ("wflw", "test", ["largepose", "expression", "illumination", "makeup", "occlusion", "blur"]),
])
def test_export_eval_bundle(tmp_path, cache_dir, fmt, split, subsets):
    from lhp_tf.data.cli import main as data_main

    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(f"data:\n  format: {fmt}\n  synthetic: {{num: 30, seed: 3, image_size: 128}}\n"
                           f"  cache_dir: {cache_dir}\n")
    out = tmp_path / "b.npz"
    assert data_main(["export-eval", str(recipe_file), "--split", split, "-o", str(out)]) == 0
    with np.load(out, allow_pickle=False) as z:
        k = 68 if fmt == "300w" else 98
        n = len(z["images"])
        assert n > 0 and z["images"].dtype == np.uint8 and z["images"].shape == (n, 96, 96, 3)
        assert z["landmarks"].shape == (n, k, 2) and z["landmarks"].dtype == np.float32
        assert z["crop2img"].shape == (n, 2, 3) and z["norm"].shape == (n,) and (z["norm"] > 0).all()
        assert z["subset_names"].tolist() == subsets
        assert z["subset_masks"].shape == (len(subsets), n) and z["subset_masks"].dtype == bool
        assert z["subset_masks"].any(axis=1).all()
        assert str(z["format"]) == fmt and str(z["split"]) == split
        assert z["input_size"].tolist() == [96, 96]
        if fmt == "300w":
            np.testing.assert_array_equal(z["subset_masks"].sum(0), 1)


def test_show_writes_a_grid(tmp_path, cache_dir):
    from lhp_tf.data.cli import main as data_main

    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(f"data:\n  format: wflw\n  synthetic: {{num: 30, seed: 3, image_size: 128}}\n"
                           f"  cache_dir: {cache_dir}\n")
    out = tmp_path / "grid.png"
    assert data_main(["show", str(recipe_file), "--split", "train", "-o", str(out), "--augment", "--num", "4"]) == 0
    img = cv2.imread(str(out))
    assert img is not None and img.shape == (2 * 288, 2 * 288, 3)


def test_targets_decode_to_the_points_with_the_contract_decoder(recipe, samples):
    from lhp_tf.spec import ModelSpec

    b = _first(pipeline.batches(recipe, samples, 5, 0))
    crop, _ = ModelSpec.from_recipe(recipe).codec.decode(np.asarray(b["heatmap"]))
    p = b["points"]
    inner = (p > 8).all(-1) & (p < 87).all(-1)
    assert inner.sum() > 100
    err = np.linalg.norm(crop - p, axis=-1)[inner]
    assert np.median(err) < 0.25 and err.max() < 1.0, (np.median(err), err.max())
