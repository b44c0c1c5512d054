"""The tf.data pipeline: crops, one affine warp per sample, photometric jitter, heatmap targets.

Why this shape: on a 2-core machine decoding JPEGs every epoch would starve training, so
images are decoded once into in-memory loose crops (:class:`lhp_tf.data.images.CropCache`);
each batch is then augmented with vectorised TF ops (one ``ImageProjectiveTransformV3``
warp for scale, rotation, translation and flip). Every random number is drawn from a
stateless generator keyed by (seed, epoch, batch), and the order is a numpy permutation of
(seed, epoch): a resumed run sees exactly the same batches, whatever the thread timing.

Heatmap targets are drawn with the model's heatmap codec (``lhp_tf.codec``: its stride, sigma
and coordinate formula), the codec a checkpoint of this recipe carries and decodes with.
"""

from __future__ import annotations

import hashlib
import math
import sys
from collections import OrderedDict

import numpy as np
import tensorflow as tf

from lhp_tf.codec import HeatmapCodec
from lhp_tf.config import Recipe
from lhp_tf.data.flip import flip_permutation
from lhp_tf.data.images import CropCache, build_cache, eval_arrays
from lhp_tf.data.sample import DataError, ProblemLog, Sample
from lhp_tf.spec import ModelSpec

_CACHES: OrderedDict[str, CropCache] = OrderedDict()


def _fingerprint(samples: list[Sample], *extra: object) -> str:
    h = hashlib.sha1(repr(extra).encode())
    for s in samples:
        h.update(s.image_path.encode())
        h.update(s.box.tobytes())
        h.update(s.landmarks.tobytes())
    return h.hexdigest()


def crop_cache(recipe: Recipe, samples: list[Sample]) -> CropCache:
    """The decoded loose crops of ``samples``, built once per process and reused across epochs."""
    d = recipe.data
    key = _fingerprint(samples, d.box_scale, d.cache_size, d.cache_margin)
    if key not in _CACHES:
        if not samples:
            raise DataError("no samples to train on: the split is empty")
        log = ProblemLog(d.on_error)
        cache = build_cache(samples, d.box_scale, d.cache_size, d.cache_margin, log)
        if log.problems:
            print(f"lhp data: {log.summary()}", file=sys.stderr)
        if not len(cache.images):
            raise DataError(f"no samples to train on: none of the {len(samples)} images could be read "
                            f"(first: {log.problems[0] if log.problems else samples[0].source})")
        _CACHES[key] = cache
        while len(_CACHES) > 2:
            _CACHES.popitem(last=False)
    return _CACHES[key]


def epoch_order(num: int, seed: int, epoch: int) -> np.ndarray:
    """The sample order of one epoch: a pure function of (seed, epoch)."""
    return np.random.default_rng([seed, epoch, 0x0DE5]).permutation(num).astype(np.int32)


def heatmaps(points: tf.Tensor, codec: HeatmapCodec) -> tf.Tensor:
    """Gaussian targets ``(B, h, w, K)`` centred at crop points ``(B, K, 2)`` (sub-pixel).

    The TF twin of ``HeatmapCodec.encode`` (a test holds them equal).
    """
    h, w = codec.heatmap_size
    sigma = codec.sigma
    uv = codec.crop_to_heatmap(points)
    u, v = uv[..., 0], uv[..., 1]
    gx = tf.range(w, dtype=tf.float32)
    gy = tf.range(h, dtype=tf.float32)
    ex = tf.exp(-tf.square(gx[None, None, :] - u[..., None]) / (2 * sigma * sigma))
    ey = tf.exp(-tf.square(gy[None, None, :] - v[..., None]) / (2 * sigma * sigma))
    return tf.einsum("bkh,bkw->bhwk", ey, ex)


def _affine(n: tf.Tensor, centre: float, side: tf.Tensor, size: tuple[int, int], angle: tf.Tensor,
            flip: tf.Tensor, shift: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Batched cache->crop affine and its inverse, ``(B, 2, 3)`` each (same as crop.similarity)."""
    h, w = size
    a = angle * (math.pi / 180.0)
    c, s = tf.cos(a), tf.sin(a)
    sx, sy = w / side, h / side
    cx = centre + shift[:, 0] * side
    cy = centre + shift[:, 1] * side
    ox, oy = (w - 1) / 2.0, (h - 1) / 2.0
    # forward: q = diag(sx, sy) R (p - c) + o,   R = [[c, s], [-s, c]]; flip: x -> w - 1 - x
    f = tf.where(flip, -1.0, 1.0)
    fo = tf.where(flip, w - 1.0, 0.0)
    a00, a01 = f * sx * c, f * sx * s
    a10, a11 = -sy * s, sy * c
    t0 = f * (ox - (sx * c * cx + sx * s * cy)) + fo
    t1 = oy - (-sy * s * cx + sy * c * cy)
    fwd = tf.reshape(tf.stack([a00, a01, t0, a10, a11, t1], -1), [n, 2, 3])
    # inverse: p = c + R^T diag(1/sx, 1/sy) (F(q) - o)
    i00, i01 = f * c / sx, -s / sy
    i10, i11 = f * s / sx, c / sy
    # F^-1(q).x = f * (q.x - fo) and -f * fo == fo for both flip states
    j0 = cx + (c / sx) * (fo - ox) + (-s / sy) * (-oy)
    j1 = cy + (s / sx) * (fo - ox) + (c / sy) * (-oy)
    inv = tf.reshape(tf.stack([i00, i01, j0, i10, i11, j1], -1), [n, 2, 3])
    return fwd, inv


def _warp(images: tf.Tensor, inv: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    n = tf.shape(inv)[0]
    flat = tf.concat([tf.reshape(inv, [n, 6]), tf.zeros([n, 2], tf.float32)], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=flat, output_shape=tf.constant(size, tf.int32),
        fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")


def _photometric(img: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    n = tf.shape(img)[0]

    def u(i: int, lo: float, hi: float, shape=None) -> tf.Tensor:
        return tf.random.stateless_uniform(shape or [n, 1, 1, 1], seed + [0, 100 + i], lo, hi)

    gray = tf.reduce_mean(img, axis=-1, keepdims=True)
    img = gray + (img - gray) * u(0, 0.6, 1.4)                            # saturation
    img = tf.where(u(1, 0, 1) < 0.1, tf.reduce_mean(img, -1, keepdims=True) + 0 * img, img)  # grayscale
    mean = tf.reduce_mean(img, axis=[1, 2, 3], keepdims=True)
    img = mean + (img - mean) * u(2, 0.7, 1.3)                            # contrast
    img = img * u(3, 0.85, 1.15, [n, 1, 1, 3]) + u(4, -0.15, 0.15)        # colour gain, brightness
    return tf.clip_by_value(img, 0.0, 1.0)


def _occlude(img: tf.Tensor, prob: float, seed: tf.Tensor) -> tf.Tensor:
    n = tf.shape(img)[0]
    h, w = img.shape[1], img.shape[2]
    r = tf.random.stateless_uniform([n, 5], seed + [0, 200], 0.0, 1.0)
    on = r[:, 0] < prob
    bw, bh = (0.15 + 0.3 * r[:, 1]) * w, (0.15 + 0.3 * r[:, 2]) * h
    x0, y0 = r[:, 3] * (w - bw), r[:, 4] * (h - bh)
    gx = tf.range(w, dtype=tf.float32)[None, None, :]
    gy = tf.range(h, dtype=tf.float32)[None, :, None]
    inside = ((gx >= x0[:, None, None]) & (gx < (x0 + bw)[:, None, None]) &
              (gy >= y0[:, None, None]) & (gy < (y0 + bh)[:, None, None]) & on[:, None, None])
    colour = tf.random.stateless_uniform([n, 1, 1, 3], seed + [0, 201], 0.0, 1.0)
    return tf.where(inside[..., None], colour, img)


def _blur(img: tf.Tensor, prob: float, seed: tf.Tensor) -> tf.Tensor:
    n = tf.shape(img)[0]
    on = tf.random.stateless_uniform([n, 1, 1, 1], seed + [0, 300], 0.0, 1.0) < prob
    return tf.where(on, tf.nn.avg_pool2d(img, 3, 1, "SAME"), img)


def augment_batch(recipe: Recipe, cache_images: tf.Tensor, cache_landmarks: tf.Tensor, cache_size: int,
                  margin: float, idx: tf.Tensor, seed: tf.Tensor, augment: bool = True) -> dict[str, tf.Tensor]:
    """Augment one batch of cache indices: image, crop landmarks, weights, heatmaps, cache->crop affine."""
    a = recipe.data.augment
    size = tuple(recipe.model.input_size)
    n = tf.shape(idx)[0]
    k = recipe.num_landmarks
    side0 = cache_size / margin
    centre = (cache_size - 1) / 2.0
    if augment:
        r = tf.random.stateless_uniform([n, 6], seed, 0.0, 1.0)
        side = side0 * (a.scale[0] + (a.scale[1] - a.scale[0]) * r[:, 0])
        angle = a.rotation * (2.0 * r[:, 1] - 1.0)
        shift = a.translate * (2.0 * r[:, 2:4] - 1.0)
        flip = (r[:, 4] < 0.5) if a.flip else tf.zeros([n], tf.bool)
    else:
        side = tf.fill([n], tf.constant(side0, tf.float32))
        angle = tf.zeros([n])
        shift = tf.zeros([n, 2])
        flip = tf.zeros([n], tf.bool)
    fwd, inv = _affine(n, centre, side, size, angle, flip, shift)
    images = tf.cast(tf.gather(cache_images, idx), tf.float32) * (1.0 / 255.0)
    images = _warp(images, inv, size)
    pts = tf.gather(cache_landmarks, idx)
    pts = tf.einsum("bij,bkj->bki", fwd[:, :, :2], pts) + fwd[:, None, :, 2]
    if a.flip and augment:
        perm = tf.constant(flip_permutation(k))
        pts = tf.where(flip[:, None, None], tf.gather(pts, perm, axis=1), pts)
    h, w = size
    inside = ((pts[..., 0] >= -0.5) & (pts[..., 0] <= w - 0.5) & (pts[..., 1] >= -0.5) & (pts[..., 1] <= h - 0.5))
    if augment:
        if a.photometric:
            images = _photometric(images, seed)
        if a.occlusion > 0:
            images = _occlude(images, a.occlusion, seed)
        if a.blur > 0:
            images = _blur(images, a.blur, seed)
    return {"image": images, "points": pts, "weight": tf.cast(inside, tf.float32),
            "heatmap": heatmaps(pts, ModelSpec.from_recipe(recipe).codec), "cache2crop": fwd}


def _options(recipe: Recipe) -> tf.data.Options:
    opt = tf.data.Options()
    opt.deterministic = True
    opt.experimental_optimization.map_parallelization = not recipe.data.deterministic
    return opt


def _parallel(recipe: Recipe) -> int:
    if recipe.data.deterministic:
        return 1
    n = recipe.data.num_parallel_calls
    return tf.data.AUTOTUNE if n < 0 else n


_FUNCTIONS: OrderedDict[tuple, tf.types.experimental.GenericFunction] = OrderedDict()


def _augment_function(recipe: Recipe, samples: list[Sample], augment: bool):
    """A traced-once ``(indices, seed) -> batch`` function per (recipe, samples, augment).

    tf.data traces a map function every time a dataset is built; building one per epoch
    would re-trace the whole augmentation graph each epoch. Wrapping it in a ``tf.function``
    with a fixed signature makes the per-epoch trace a single call op. Autograph is off: the
    augmentation branches on the recipe only, never on a tensor, and converting its Python cost
    ~2.5 s of every training start and of every ``lhp convert`` (its probe faces), for the
    same graph (same batches, checked on the synthetic recipe).
    """
    cache = crop_cache(recipe, samples)
    d = recipe.data
    key = (recipe.hash(), _fingerprint(samples, d.box_scale, d.cache_size, d.cache_margin), augment)
    if key not in _FUNCTIONS:
        images = tf.constant(cache.images)
        lms = tf.constant(cache.landmarks)
        size, margin = cache.size, cache.margin

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int32), tf.TensorSpec([2], tf.int64)], autograph=False)
        def fn(idx: tf.Tensor, seed: tf.Tensor) -> dict[str, tf.Tensor]:
            return augment_batch(recipe, images, lms, size, margin, idx, seed, augment)

        _FUNCTIONS[key] = fn
        while len(_FUNCTIONS) > 4:
            _FUNCTIONS.popitem(last=False)
    return cache, _FUNCTIONS[key]


def batches(recipe: Recipe, samples: list[Sample], seed: int, epoch: int, augment: bool = True,
            batch_size: int | None = None) -> tf.data.Dataset:
    """One epoch of augmented batches as dicts (see :func:`augment_batch`); used by show and tests."""
    cache, fn = _augment_function(recipe, samples, augment)
    b = batch_size or recipe.train.batch_size
    order = epoch_order(len(cache.images), seed, epoch)
    base = tf.constant(seed * 1_000_003 + epoch, tf.int64)

    def call(i: tf.Tensor, idx: tf.Tensor) -> dict[str, tf.Tensor]:
        return fn(idx, tf.stack([base, tf.cast(i, tf.int64)]))

    ds = tf.data.Dataset.from_tensor_slices(order).batch(b, drop_remainder=len(order) >= b).enumerate()
    ds = ds.map(call, num_parallel_calls=_parallel(recipe))
    return ds.prefetch(2).with_options(_options(recipe))


def train_dataset(recipe: Recipe, samples: list[Sample], seed: int, epoch: int) -> tf.data.Dataset:
    """One epoch of ``(images, {"heatmap", "weight"})`` batches; order and augmentation fixed by (seed, epoch).

    Batches are full (``train.batch_size``) unless the split holds fewer samples than one batch.
    """
    ds = batches(recipe, samples, seed, epoch, augment=True)
    return ds.map(lambda d: (d["image"], {"heatmap": d["heatmap"], "weight": d["weight"]}))


def eval_dataset(recipe: Recipe, samples: list[Sample]) -> tf.data.Dataset:
    """Un-augmented crops with what evaluation needs to map predictions back to image pixels.

    ``index`` refers to positions in ``samples`` (unreadable images are skipped in skip mode).
    """
    log = ProblemLog(recipe.data.on_error)
    arr = eval_arrays(samples, tuple(recipe.model.input_size), recipe.data.box_scale, log)
    if log.problems:
        print(f"lhp data: evaluation: {log.summary()} (first: {log.problems[0]})", file=sys.stderr)
    index = np.nonzero(arr.keep)[0].astype(np.int32)
    ds = tf.data.Dataset.from_tensor_slices({
        "image": arr.images, "landmarks": arr.landmarks, "crop2img": arr.crop2img, "norm": arr.norm,
        "index": index})
    ds = ds.batch(recipe.train.batch_size)
    ds = ds.map(lambda d: {**d, "image": tf.cast(d["image"], tf.float32) * (1.0 / 255.0)})
    return ds.prefetch(2)
