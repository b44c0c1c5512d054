"""Int8 ranges learned end to end on the deploy-graph simulation: held-out drift against the
converter's own ranges (an experiment, not yet a calibration method of ``lhp convert``).

    python benchmarks/learned_ranges.py RUN [--steps 400] [--lr 0.01] [--init mse|minmax|auto] [-o F]

1. ``lhp convert``'s pieces: the int8 deploy graph of ``RUN/best.keras`` (target xnnpack) as a
   float .tflite, its range table calibrated on the recipe's calibration images (``--init``).
2. The same network as :mod:`lhp_tf.quantize.deploy_qat`'s fake-quantised deploy graph, each
   fake-quant node started at the table's range of the tensor it simulates (matched by the
   Keras layer that writes it), then only the ranges trained (weights frozen), LSQ-style:
   value = lo + s * clip(round((x - lo) / s), 0, 255) with s = (hi - lo) / 255, the rounding
   straight through, so both clipping and rounding error reach lo and hi; loss: mean square
   heatmap difference from the float graph on batches of 16 calibration images; Adam with
   steps relative to each range's size (``--lr``).
3. The learned ranges written back into the table (tensors that only copy values, the
   outputs of split, concatenation, reshape and shuffle ops, take their group's learned
   range through the converter's own ``share_ranges``), the converter's XNNPACK and bias
   edits, ai-edge-quantizer, metadata: a pure int8 .tflite like ``lhp convert``'s.
4. ``lhp quantize drift RUN/best.keras --data RUN/int8_drift/full.npz`` for the converter's
   ranges (``--set export.calibration=INIT``) and ``--int8`` the learned file; the held-out
   bundle is made with ``lhp data export-eval`` if missing. Delegation is checked.

The training images are the recipe's calibration images; the drift is scored on the held-out
faces, which neither step sees.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np

BATCH = 16


def learn(checkpoint: Path, out: Path, steps: int, lr: float, init: str, seed: int = 0) -> dict:
    import tensorflow as tf

    # the first trace of a ~1,000-node graph with its gradient is minutes under grappler
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    tf.random.set_seed(seed)
    from ai_edge_quantizer.algorithms.utils.common_utils import OpQuantConstraint
    from lhp_tf.converters import quantizer as q
    from lhp_tf.converters.inference_model import inference_model, load_checkpoint
    from lhp_tf.converters.passes import drop_identity_quantize, metadata, run_passes
    from lhp_tf.converters.run_folder import find_recipe
    from lhp_tf.converters.tflite import float_tflite, metadata_for, write_bytes
    from lhp_tf.quantize.calibration import calibration_images
    from lhp_tf.quantize.deploy_qat import calibrate, simulation

    rec = find_recipe(checkpoint)
    trained, spec = load_checkpoint(checkpoint, rec)
    float_model = float_tflite(inference_model(trained, spec, 1, target="xnnpack", quant="int8"))
    images = np.asarray(calibration_images(rec, rec.export.calib_samples), np.float32)
    table = q.calibrate(float_model, list(images), init)
    graph = q.FloatGraph.read(float_model)
    # the tensor each Keras layer writes last: "layer_1/Op;..." -> layer
    written_by = {re.sub(r"_\d+$", "", graph.names[t].split(";")[0].split("/")[0]): graph.names[t]
                  for _, _, outs in graph.ops for t in outs}
    sim = simulation(trained)
    calibrate(sim, [images[i:i + BATCH] for i in range(0, len(images), BATCH)])
    free = [fq for fq in sim.fake_quants if fq.fixed is None]

    def tensor_of(fq: object) -> str | None:
        op = fq._inbound_nodes[0].input_tensors[0]._keras_history.operation  # type: ignore[attr-defined]
        name = written_by.get(op.conv.name if hasattr(op, "conv") else op.name)
        return name if name is not None and q._range(table, name) is not None else None

    names = [tensor_of(fq) for fq in free]
    for fq, name in zip(free, names, strict=True):
        if name is not None:
            lo, hi = q._range(table, name)
            fq.lo.assign(min(lo, 0.0))
            fq.hi.assign(max(hi, lo + 1e-6))
    sim.rounding(False)
    reference = np.asarray(sim.model([images], training=False))
    sim.rounding(True)
    lows = tf.Variable(np.array([float(fq.lo.numpy()) for fq in free], np.float32))
    highs = tf.Variable(np.array([float(fq.hi.numpy()) for fq in free], np.float32))

    def lsq(x: tf.Tensor, lo: tf.Tensor, hi: tf.Tensor) -> tf.Tensor:
        s = (hi - lo) / 255.0
        u = (x - lo) / s
        return tf.clip_by_value(u + tf.stop_gradient(tf.round(u) - u), 0.0, 255.0) * s + lo

    for i, fq in enumerate(free):
        fq.call = types.MethodType(lambda self, x, _i=i: lsq(x, lows[_i], highs[_i]), fq)
    variables = [lows, highs]
    moments = [(tf.Variable(tf.zeros_like(v)), tf.Variable(tf.zeros_like(v))) for v in variables]
    t = tf.Variable(0.0)
    xs, ys = tf.constant(images), tf.constant(reference)

    @tf.function
    def step() -> tf.Tensor:
        idx = tf.random.uniform((BATCH,), 0, len(images), dtype=tf.int32)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(sim.model([tf.gather(xs, idx)], training=False) - tf.gather(ys, idx)))
        grads = tape.gradient(loss, variables)
        t.assign_add(1.0)
        for v, (m, s), g in zip(variables, moments, grads, strict=True):
            m.assign(0.9 * m + 0.1 * g)
            s.assign(0.999 * s + 0.001 * g * g)
            v.assign_sub(lr * (m / (1 - 0.9 ** t)) / (tf.sqrt(s / (1 - 0.999 ** t)) + 1e-12) * tf.abs(v))
        return loss

    start = time.perf_counter()
    for i in range(steps):
        loss = float(step())
        if (i + 1) % 100 == 0:
            print(f"step {i + 1}: loss {loss:.3g} ({time.perf_counter() - start:.0f} s)", flush=True)
    for name, lo, hi in zip(names, lows.numpy(), highs.numpy(), strict=True):
        if name is not None:
            q._set_range(table, name, float(min(lo, 0.0)), float(max(hi, 0.0)))
    copies = (q._constrained(OpQuantConstraint.SAME_AS_INPUT_SCALE)
              | q._constrained(OpQuantConstraint.SAME_AS_OUTPUT_SCALE))
    for index, (kind, _, outs) in enumerate(graph.ops):
        if kind in copies or index in graph.permutations:
            for o in outs:
                if o not in graph.outputs and q._range(table, graph.names[o]) is not None:
                    q._set_range(table, graph.names[o], 0.0, 0.0)  # share_ranges gives it its group's range
    q.widen_for_bias(table, graph)
    q.share_ranges(table, graph)
    q.widen_for_xnnpack(table, graph)
    meta = {**metadata_for(spec, "int8", rec), "calibration": f"learned ({init} start, {steps} steps)"}
    write_bytes(out, run_passes(q.quantize(float_model, table), [drop_identity_quantize, metadata(meta)]))
    return {"fake_quants": len(free), "matched": sum(n is not None for n in names),
            "seconds": round(time.perf_counter() - start)}


def drift(checkpoint: Path, bundle: Path, extra: list[str]) -> str:
    proc = subprocess.run([sys.executable, "-m", "lhp_tf.cli", "quantize", "drift", str(checkpoint), "--data",
                           str(bundle), *extra], capture_output=True, text=True, check=True)
    return next(line for line in proc.stdout.splitlines() if line.startswith("NME float"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="run folder holding best.keras and recipe.yaml")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--init", choices=("minmax", "mse", "auto"), default="mse")
    p.add_argument("-o", "--output", type=Path, default=None, help="default RUN/int8_drift/learned.tflite")
    args = p.parse_args()
    ckpt = args.run / "best.keras"
    bundle = args.run / "int8_drift" / "full.npz"
    if not bundle.is_file():
        subprocess.run([sys.executable, "-m", "lhp_tf.cli", "data", "export-eval", str(args.run / "recipe.yaml"),
                        "--split", "full", "-o", str(bundle)], check=True)
    out = args.output or args.run / "int8_drift" / "learned.tflite"
    info = learn(ckpt, out, args.steps, args.lr, args.init)
    from lhp_tf.runtime import op_delegation

    ops = op_delegation(out)
    print(f"{args.run}: {info['matched']} of {info['fake_quants']} fake-quant ranges matched to the table's "
          f"tensors; {args.steps} steps in {info['seconds']} s; {out}: {ops['delegated']} of {ops['total']} "
          "nodes on XNNPACK")
    print(f"converter's ranges ({args.init}): {drift(ckpt, bundle, ['--set', f'export.calibration={args.init}'])}")
    print(f"learned ranges:        {drift(ckpt, bundle, ['--int8', str(out)])}")


if __name__ == "__main__":
    main()
