"""Is the tf.data pipeline fast enough to feed training on this machine?

Measures, in one run and on the same cores:
  1. the pipeline alone (``train_dataset`` batches/s after its one-off image decode),
  2. one lhp-large train step (forward + backward + Adam, batch 64, BCE on logits) on a
     fixed in-memory batch,
  3. the same train step fed by the pipeline (what training actually does),
and prints samples/s of each and the ratio pipeline / train step (must be >= 2: the
pipeline then needs at most half of what training leaves it).

    python benchmarks/pipeline_throughput.py [--format 300w] [--num 512] [--steps 8]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv: list[str] | None = None) -> int:
    from lhp_tf.kinds import DATASET_FORMATS

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--format", choices=DATASET_FORMATS, default="300w")
    ap.add_argument("--num", type=int, default=512, help="synthetic images (256 px)")
    ap.add_argument("--arch", default="lhp-large")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=8, help="timed train steps")
    ap.add_argument("--cache-dir", default=os.path.join(tempfile.gettempdir(), "lhp_bench_cache"))
    args = ap.parse_args(argv)

    import tensorflow as tf

    from lhp_tf.config import DataConfig, ModelConfig, Recipe, SynthConfig, TrainConfig
    from lhp_tf.data import datasets, pipeline
    from lhp_tf.model.kbackend import keras
    from lhp_tf.model.network import build_model

    recipe = Recipe(data=DataConfig(format=args.format, synthetic=SynthConfig(num=args.num, seed=0),
                                    cache_dir=args.cache_dir),
                    model=ModelConfig(arch=args.arch), train=TrainConfig(batch_size=args.batch))
    t = time.perf_counter()
    samples = datasets.read_split(recipe.data, "train")
    t_synth = time.perf_counter() - t
    t = time.perf_counter()
    pipeline.crop_cache(recipe, samples)
    t_cache = time.perf_counter() - t
    print(f"{len(samples)} training samples ({args.format}); dataset ready in {t_synth:.1f} s, "
          f"decode cache built in {t_cache:.1f} s ({len(samples) / t_cache:.0f} images/s)")

    # 1. pipeline alone, several epochs (the first batch includes tracing)
    n, t, epoch = 0, None, 0
    while n < 6 * args.batch * 4:
        for images, _ in pipeline.train_dataset(recipe, samples, seed=0, epoch=epoch):
            if t is None:
                t = time.perf_counter()
                continue
            n += int(images.shape[0])
        epoch += 1
    pipe = n / (time.perf_counter() - t)

    # 2. train step on a fixed batch
    model = build_model(recipe.model, recipe.num_landmarks)
    opt = keras.optimizers.Adam(2e-3)

    @tf.function
    def step(x, hm):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(hm, logits))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    x, y = next(iter(pipeline.train_dataset(recipe, samples, seed=0, epoch=0)))
    step(x, y["heatmap"])
    step(x, y["heatmap"]).numpy()
    t = time.perf_counter()
    for _ in range(args.steps):
        loss = step(x, y["heatmap"])
    loss.numpy()
    train = args.steps * args.batch / (time.perf_counter() - t)

    # 3. train step fed by the pipeline (timing starts once the first batch is in)
    def fed_batches():
        epoch = 100
        while True:
            yield from pipeline.train_dataset(recipe, samples, seed=0, epoch=epoch)
            epoch += 1

    it = fed_batches()
    xb, yb = next(it)
    step(xb, yb["heatmap"]).numpy()
    t = time.perf_counter()
    for _ in range(args.steps):
        xb, yb = next(it)
        loss = step(xb, yb["heatmap"])
    loss.numpy()
    fed = args.steps * args.batch / (time.perf_counter() - t)

    print(f"pipeline alone:              {pipe:8.1f} samples/s")
    print(f"train step ({args.arch}, batch {args.batch}): {train:8.1f} samples/s")
    print(f"train step fed by pipeline:  {fed:8.1f} samples/s ({fed / train:.2f} x fixed-batch speed)")
    ratio = pipe / train
    print(f"ratio pipeline / train step: {ratio:.1f} ({'OK' if ratio >= 2 else 'PIPELINE IS THE BOTTLENECK'})")
    return 0 if ratio >= 2 else 1


if __name__ == "__main__":
    sys.exit(main())
