"""What XNNPACK's 3x3 depthwise conv costs by channel count, int8 against float.

    python benchmarks/depthwise_channels.py [--channels 8 12 16 24 32] [--size 24] [--rounds 30]

The depthwise convs are lhp-small's costliest int8 ops (``benchmarks/op_profile.py``), on
12- and 24-channel maps. For each channel count a chain of ``--blocks`` 3x3 'same' depthwise
convs on a ``--size`` square map is built with random weights, converted to float and to int8
(calibrated on random data: the values do not matter, the shapes do), and every chain is timed
in one process, round-robin, LiteRT with XNNPACK, 1 thread (``op_profile``'s runner),
``--reps`` invokes per chain per round, medians over ``--rounds``. It prints the cost per conv
and int8 / float. On this project's AVX-512 machine the int8 cost steps in 16-channel tiles
(12 and 16 channels cost the same, 24 and 32 the same) at up to twice float's, which is why
no channel layout of the deploy graph makes those convs cheaper (``converters/deploy.py``).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import numpy as np


def _convert(model: Any, int8: bool, seed: int = 0) -> bytes:
    """``model`` (one input) as a .tflite: float, or int8 in and out calibrated on random data."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        rng = np.random.default_rng(seed)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        shape = tuple(model.inputs[0].shape)
        converter.representative_dataset = lambda: ([rng.normal(size=shape).astype(np.float32)] for _ in range(8))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.int8
    return converter.convert()


def depthwise_chain(size: int, channels: int, blocks: int, seed: int = 0) -> Any:
    """``blocks`` chained 3x3 'same' depthwise convs on a (1, size, size, channels) input."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    x = inp = tf.keras.Input((size, size, channels), batch_size=1)
    for _ in range(blocks):
        layer = tf.keras.layers.DepthwiseConv2D(3, padding="same")
        x = layer(x)
        layer.set_weights([rng.normal(0, 0.3, w.shape).astype(np.float32) for w in layer.get_weights()])
    return tf.keras.Model(inp, x)


def time_all(models: dict[str, bytes], rounds: int, reps: int) -> dict[str, float]:
    """Median microseconds per invoke of every model, timed round-robin in one process."""
    from op_profile import Runner  # benchmarks/ is sys.path[0] when run as a script

    runners = {name: Runner(data) for name, data in models.items()}
    for runner in runners.values():
        runner.seconds(3)
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, runner in runners.items():
            times[name].append(runner.seconds(reps))
    return {name: float(np.median(t)) * 1e6 for name, t in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels", type=int, nargs="+", default=[8, 12, 16, 24, 32])
    parser.add_argument("--size", type=int, default=24, help="the map's side")
    parser.add_argument("--blocks", type=int, default=10, help="ops per chain")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args(argv)
    if min(args.size, args.blocks, args.rounds, args.reps, *args.channels) < 1:
        parser.error("--size, --channels, --blocks, --rounds and --reps must be positive")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from machine import describe  # benchmarks/ is sys.path[0] when run as a script

    models: dict[str, bytes] = {}
    for ch in args.channels:
        chain = depthwise_chain(args.size, ch, args.blocks)
        models[f"int8 {ch}"] = _convert(chain, True)
        models[f"float {ch}"] = _convert(chain, False)
    us = time_all(models, args.rounds, args.reps)

    print(describe()[0])
    print(f"LiteRT XNNPACK, 1 thread; {args.rounds} round-robin rounds of {args.reps} invokes (medians)")
    print(f"{args.blocks} chained 3x3 depthwise convs on {args.size}x{args.size}xC, us per conv:")
    print(f"{'channels':>8}  {'int8':>7}  {'float':>7}  int8/float")
    for ch in args.channels:
        i8, f32 = us[f"int8 {ch}"] / args.blocks, us[f"float {ch}"] / args.blocks
        print(f"{ch:>8}  {i8:7.2f}  {f32:7.2f}  {i8 / f32:9.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
