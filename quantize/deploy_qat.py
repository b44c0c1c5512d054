"""Quantisation-aware training on the deploy graph (``lhp quantize qat``, ``--graph deploy``).

The int8 model that ships rounds where the deploy graph (:mod:`lhp_tf.converters.deploy`) puts
its tensors: SCAF products at the source's size, channel means as MEAN ops (convs for an
NPU), pools as strided steps, BatchNorm folded into the convs. tfmot's path (``--graph training``,
:mod:`lhp_tf.quantize.qat_model`) fake-quantises the TRAINING graph instead. Here the
simulation is the deploy graph itself, in Keras 3, no tfmot, in the calling process:

* the graph is :func:`~lhp_tf.converters.deploy.deploy_model` for int8 without its layout
  rewrites (``layout_rewrites=False``: they lay the same int8 values out differently), so
  every trained conv appears once, folded with its BatchNorm where it has one;
* every tensor the int8 graph holds is rounded to an 8-bit grid where a reader takes it
  (:class:`FakeQuant`, TensorFlow's fake-quant op: asymmetric, zero exactly representable,
  straight-through gradient inside the range): the image, each computed tensor once,
  sigmoid outputs on int8 LOGISTIC's fixed 1/256 grid; not what only moves values
  (concatenation, split, shuffle, nearest upsampling, permutation convs), nor a conv or ADD
  output read only by the ReLU the converter fuses into it;
* conv and depthwise kernels are rounded per output channel, symmetric, as the converter
  quantises them (:class:`FakeQuantConv`);
* each conv is computed from the CHECKPOINT's variables (``trains_weights``): its kernel and
  bias, and the BatchNorm folded into it with its moving statistics, in the graph
  (:func:`folded_weights`; checked against the deploy graph's own folded copy when built). So
  QAT trains the checkpoint's own variables in place, all of them, and the run's optimizer
  state (``state.npz``) applies as it is: QAT continues the run - Adam's moments and step, the
  schedule's last rate, the data order from the epoch the run finished - exactly as its float
  control ``lhp train --resume`` does, differing only in the forward pass (and in BatchNorm's
  statistics, frozen: the deploy graph folds the moving ones);
* the ranges are the checkpoint's learned int8 ranges (:mod:`lhp_tf.quantize.learned_ranges`,
  ``lhp convert``'s default calibration, learned first if ``best.ranges.json`` is missing) as
  the conversion quantises with them
  (:func:`~lhp_tf.quantize.learned_ranges.converted_ranges`: tensors int8 holds at one scale
  share the union of their ranges), min/max of augmented training faces for the few tensors
  without one, fixed while training; the export converts with those same ranges (they are
  saved as the tuned checkpoint's ranges file): the weights learned to live with them;
* at every step a random half of each fake-quant tensor's elements passes unrounded (QDrop,
  Wei et al., ICLR 2022; ``--drop``, :data:`DROP`), drawn afresh per step; kernels are always
  rounded. Training then sees every mix of rounded and unrounded activations, and the weights
  settle where int8 noise moves the loss least rather than fitting one rounding pattern.

Why both: on the 20-epoch synthetic lhp-large QAT's int8 scored 0.07 above its own float, and
its simulation fell short of the real int8 model: the simulation with the ranges QAT trained
under scored 3.710 where the converted model scored 3.767; the same simulation with the
converted ranges scored 3.750 (ad-hoc scripts on this module and ``converted_ranges``, 300
held-out faces; with the layout rewrites on too, every simulated tensor matched the TFLite
int8 interpreter's to within 0.3 of a step on average). The converted ranges alone moved QAT's
int8 by noise (1 epoch: 3.774 against 3.767); with QDrop and three epochs QAT's own float beat
the control.

Measured (the synthetic checkpoints of the README's drift tables, an AVX-512/AMX x86 machine,
3 epochs, held-out faces; ``lhp quantize qat RUN/best.keras --epochs 3 -o F --save-checkpoint
D/qat.keras``, ``lhp quantize drift D/qat.keras --data RUN/int8_drift/full.npz --int8 F``; the
control: ``state.npz`` and ``recipe.yaml`` copied, ``python -m lhp_tf.train C/recipe.yaml
--workdir C --resume --no-ranges --set train.epochs=E+3``, scored with ``lhp quantize drift
C/last.keras``; ``python benchmarks/int8_drift.py RUN`` runs the same):

==========  ===============  ==========  =============  =============  ======  ==========  =========================
model       QAT's own float  QAT int8    control float  QAT - control  budget  per tensor  before: without / (tfmot)
==========  ===============  ==========  =============  =============  ======  ==========  =========================
small 10ep  4.222            4.204       4.105          +0.099         0.100   +0.085      (+0.083)
small 20ep  3.545            3.568       3.621          -0.053         0.100   -0.034      not run
large 10ep  5.328            5.365       5.438          -0.073         0.109   -0.045      (+0.101)
large 20ep  3.619            3.654       3.609          +0.045         0.100   +0.024      +0.103 (+0.260)
==========  ===============  ==========  =============  =============  ======  ==========  =========================

One seeded run each (two runs of one command give the same weights). QAT starts from the
checkpoint's learned ranges, trained one per group of tensors int8 holds at one scale; "per
tensor": the same command from ranges learned each on its own (then widened to the group's
union by the conversion), the previous form of :mod:`lhp_tf.quantize.learned_ranges`. "Before",
three epochs against the same controls: this module without QDrop and the converted ranges,
and in brackets the training graph (``--graph training``, the README's figures). The 10-epoch
lhp-small is at its budget's edge because QAT's own float trails the control (4.222 against
4.105); its post-training int8 is 0.017 below its float. Time on 2 cores, the whole command:
lhp-small 135-195 s, lhp-large 347-392 s.

One epoch, before QDrop and the converted ranges (same commands with ``--epochs 1``, control
E+1): QAT - control -0.019 / +0.042 (lhp-small 10 / 20 epochs), +0.084 / +0.139 (lhp-large);
the training graph's +0.160 / +0.065 / +0.179 / +0.230. On the 20-epoch lhp-large the same
fine-tuning with rounding switched off scored 3.619 against the control's 3.629: freezing
BatchNorm costs nothing. Tried there, not kept (ad-hoc scripts, one seeded epoch each): the
ranges trained with the weights (LSQ, Adam steps of 1 % of each bound): +0.148; QDrop with the
learned ranges as they were: +0.113 (half unrounded), +0.111 (three quarters).

The first form of this module trained frozen BN-folded COPIES of the convs with a fresh Adam
(folded convs have no moments in the run's state) and wrote them back as identity BatchNorms:
on lhp-large 10 epochs its own float fell behind the control (5.697 against 5.552) before any
rounding. Converting with ranges learned again for the tuned weights (weights frozen, from
the MSE table) instead of the ones QAT trained under: small 10 / 20 epochs and large 10 epochs
+0.081 / +0.036 / +0.091 against the control.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lhp_tf.config import Recipe
from lhp_tf.errors import LhpError

#: int8 LOGISTIC's output grid (TFLite fixes scale 1/256, zero point -128): [0, 255/256]
SIGMOID_RANGE = (0.0, 255.0 / 256.0)
#: the narrowest range a fake-quant node gets (a tensor that is always zero)
MIN_RANGE = 1e-6
#: augmented training batches the activation ranges come from
RANGE_BATCHES = 8
#: the share of each fake-quant tensor's elements QAT leaves unrounded at every step (QDrop,
#: Wei et al., ICLR 2022): training then meets every mix of rounded and unrounded tensors and
#: the weights settle where int8 noise moves the loss least (the module docs' measurements)
DROP = 0.5
#: layer types that only move values: their output is on their input's grid
MOVES = ("Concatenate", "ChannelSplit", "ChannelShuffle", "NearestUpsample", "Reshape", "Cropping2D",
         "ZeroPadding2D", "Permute")


def check_drop(share: float) -> None:
    """``share`` is a share of elements to leave unrounded: in [0, 1) (1 would never round)."""
    if not 0.0 <= share < 1.0:
        raise LhpError(f"--drop {share}: the share of unrounded elements must be in [0, 1)")


def _keras() -> Any:
    from lhp_tf.model.kbackend import keras

    return keras


def folded_weights(conv: Any, bn: Any) -> tuple[Any, Any]:
    """The kernel and bias (None: no bias) of ``bn(conv(x))`` as one conv, computed from their
    variables (``bn`` None: ``conv``'s own), so that gradients reach them; the same folding as
    the deploy graph's (:mod:`lhp_tf.converters.deploy`), with BatchNorm's moving statistics."""
    import tensorflow as tf

    keras = _keras()
    kernel, bias = conv.kernel, (conv.bias if conv.use_bias else None)
    if bn is None:
        return kernel, bias
    factor = (bn.gamma if bn.scale else 1.0) / tf.sqrt(bn.moving_variance + bn.epsilon)
    # Conv2D kernels end in output channels; depthwise ones in (input channel, multiplier)
    depthwise = isinstance(conv, keras.layers.DepthwiseConv2D)
    kernel = kernel * tf.reshape(factor, tuple(kernel.shape[-2:]) if depthwise else (-1,))
    shifted = (bias if bias is not None else 0.0) - bn.moving_mean
    return kernel, (bn.beta if bn.center else 0.0) + shifted * factor


def fake_quant_classes() -> tuple[type, type]:
    """``(FakeQuant, FakeQuantConv)``, built on the running Keras (imported lazily)."""
    import tensorflow as tf

    keras = _keras()

    class FakeQuant(keras.layers.Layer):
        """Round to the 8-bit grid of [lo, hi] (observing: widen [lo, hi] to what passes, unrounded)."""

        def __init__(self, fixed: tuple[float, float] | None = None, source: str | None = None,
                     **kwargs: Any) -> None:
            super().__init__(trainable=False, **kwargs)
            self.fixed = fixed
            #: the deploy graph's layer that writes the rounded tensor (None: the image)
            self.source = source
            self.observing = False
            #: the share of elements left unrounded per call (QDrop; 0: round every element)
            self.drop = 0.0

        def build(self, input_shape: Any) -> None:
            lo, hi = self.fixed if self.fixed is not None else (np.inf, -np.inf)
            self.lo = self.add_weight(shape=(), initializer=keras.initializers.Constant(lo), trainable=False, name="lo")
            self.hi = self.add_weight(shape=(), initializer=keras.initializers.Constant(hi), trainable=False, name="hi")

        def call(self, x: Any) -> Any:
            if self.observing and self.fixed is None:
                self.lo.assign(tf.minimum(self.lo, tf.reduce_min(x)))
                self.hi.assign(tf.maximum(self.hi, tf.reduce_max(x)))
                return x
            if self.observing:
                return x
            rounded = tf.quantization.fake_quant_with_min_max_vars(x, self.lo, self.hi, num_bits=8)
            if self.drop > 0.0:
                return tf.where(tf.random.uniform(tf.shape(x)) < self.drop, x, rounded)
            return rounded

    class FakeQuantConv(keras.layers.Layer):
        """``conv`` (Conv2D or DepthwiseConv2D) with its kernel rounded per output channel to
        int8 [-127, 127], gradient straight through. With ``trained`` (the checkpoint's conv and
        the BatchNormalization folded into it, or None) the kernel and bias are computed from
        THEIR variables, BatchNorm folded with its moving statistics: training then moves the
        checkpoint's own weights, which the run's optimizer state belongs to."""

        def __init__(self, conv: Any, trained: tuple[Any, Any] | None = None, **kwargs: Any) -> None:
            super().__init__(name=f"{conv.name}_fq", **kwargs)
            self.conv = conv
            self.trained = trained
            self.depthwise = isinstance(conv, keras.layers.DepthwiseConv2D)
            self.observing = False

        def kernel_and_bias(self) -> tuple[Any, Any]:
            if self.trained is None:
                c = self.conv
                return c.kernel, (c.bias if c.use_bias else None)
            return folded_weights(*self.trained)

        def call(self, x: Any) -> Any:
            c = self.conv
            k, bias = self.kernel_and_bias()
            kq = k
            if not self.observing:
                axes = [0, 1] if self.depthwise else [0, 1, 2]
                scale = tf.maximum(tf.reduce_max(tf.abs(k), axis=axes, keepdims=True), 1e-12) / 127.0
                kq = k + tf.stop_gradient(tf.round(k / scale) * scale - k)
            if self.depthwise:
                y = keras.ops.depthwise_conv(x, kq, strides=c.strides, padding=c.padding,
                                             dilation_rate=c.dilation_rate)
            else:
                if c.groups != 1:
                    raise LhpError(f"{c.name}: grouped convs are not simulated")
                y = keras.ops.conv(x, kq, strides=c.strides, padding=c.padding, dilation_rate=c.dilation_rate)
            if bias is not None:
                y = y + bias
            return c.activation(y)

    return FakeQuant, FakeQuantConv


def _is_permutation(layer: Any) -> bool:
    """A frozen conv that only reorders channels (the channel shuffle as a conv), by the
    converter's own rule (:func:`~lhp_tf.converters.quantizer.is_permutation_conv`, on TFLite's
    (out, h, w, in) kernel layout)."""
    from lhp_tf.converters.quantizer import is_permutation_conv

    keras = _keras()
    if type(layer) is not keras.layers.Conv2D or layer.trainable:
        return False
    kernel, *bias = layer.get_weights()
    return is_permutation_conv([np.transpose(kernel, (3, 0, 1, 2)), *bias])


def _is_sigmoid(layer: Any) -> bool:
    keras = _keras()
    act = getattr(layer, "activation", None)
    return act is keras.activations.sigmoid or (type(layer) is keras.layers.Activation
                                                and getattr(act, "__name__", "") == "sigmoid")


@dataclass
class Simulation:
    """The fake-quantised int8 deploy graph and what QAT needs of it."""

    model: Any
    fake_quants: list[Any]
    #: the convs with rounded kernels (FakeQuantConv)
    fake_quant_convs: list[Any]
    #: the checkpoint's trainable variables the simulation computes with, in the checkpoint's
    #: order (empty unless built with ``trains_weights``)
    trained_variables: list[Any]

    def rounding(self, on: bool) -> None:
        """Round (the int8 simulation) or not (the float deploy graph; FakeQuants then widen
        their ranges to what passes)."""
        for layer in (*self.fake_quants, *self.fake_quant_convs):
            layer.observing = not on

    def dropping(self, share: float) -> None:
        """Leave ``share`` of every fake-quant tensor's elements unrounded at each call, drawn
        afresh each time (QDrop; 0: the int8 simulation itself). Kernels stay rounded."""
        check_drop(share)
        for fq in self.fake_quants:
            fq.drop = share


def _checkpoint_convs(trained: Any, graph: Any) -> dict[str, tuple[Any, Any]]:
    """``{deploy conv name: (the checkpoint's conv, its folded BatchNorm or None)}`` for every
    conv of the deploy graph that is a frozen copy of one of the checkpoint's, checked to hold
    exactly the weights computed from them (a copy whose channels the deploy graph reordered
    would make training move the wrong weights: refused)."""
    from lhp_tf.converters.deploy import folded_convs

    keras = _keras()
    convs = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)
    pairs = folded_convs(trained)
    own = {layer.name: layer for layer in trained.layers if type(layer) in convs}
    found = {}
    for layer in graph.layers:
        if type(layer) not in convs or layer.name not in own or own[layer.name] is layer:
            continue  # a constant conv of the rewrites, or the checkpoint's layer itself
        source = (own[layer.name], pairs.get(layer.name))
        kernel, bias = folded_weights(*source)
        copy = layer.get_weights()
        computed = [np.asarray(kernel), np.zeros(copy[-1].shape, np.float32) if bias is None else np.asarray(bias)]
        if len(copy) != 2 or any(a.shape != b.shape or not np.allclose(a, b, rtol=1e-5, atol=1e-6 * np.abs(a).max())
                                 for a, b in zip(copy, computed, strict=True)):
            raise LhpError(f"QAT simulation of {trained.name}: the deploy graph's {layer.name} is not the checkpoint's "
                           "conv folded with its BatchNorm (reordered channels?); its weights cannot train")
        found[layer.name] = source
    return found


def simulation(trained: Any, target: str = "xnnpack", batch_size: int | None = None,
               trains_weights: bool = False) -> Simulation:
    """The int8 deploy graph of ``trained`` for ``target`` with fake quantisation (``batch_size``:
    None for a dynamic batch; the ``npu`` form needs a fixed one). ``trains_weights``: every conv
    is computed from the checkpoint's own variables (BatchNorm folded in the graph, with its
    moving statistics) so that QAT trains them; otherwise from the deploy graph's frozen copies."""
    from lhp_tf.converters.deploy import deploy_model

    keras = _keras()
    FakeQuant, FakeQuantConv = fake_quant_classes()
    graph = deploy_model(trained, target, "int8", batch_size=batch_size, layout_rewrites=False)
    sources = _checkpoint_convs(trained, graph) if trains_weights else {}
    fqs: list[Any] = []
    on_grid: dict[int, Any] = {}  # id(raw tensor) -> its rounded tensor
    kept: list[Any] = []  # raw tensors stay alive so their ids stay unique
    moved: set[int] = set()  # ids of tensors produced by a move of rounded tensors
    source: dict[int, str] = {}  # id(raw tensor) -> the layer that wrote it

    def rounded(t: Any, fixed: tuple[float, float] | None = None) -> Any:
        if id(t) in moved:
            return t
        if id(t) not in on_grid:
            fq = FakeQuant(fixed, source.get(id(t)), name=f"fq{len(fqs)}")
            fqs.append(fq)
            kept.append(t)
            on_grid[id(t)] = fq(t)
        return on_grid[id(t)]

    sigmoid_out: set[int] = set()

    def call(layer: Any, *args: Any, **kwargs: Any) -> Any:
        x = args[0]
        xs = list(x) if isinstance(x, list | tuple) else [x]
        if type(layer) is keras.layers.ReLU or (type(layer) is keras.layers.Activation
                                                and getattr(layer.activation, "__name__", "") == "relu"):
            inputs = xs  # fused into the conv or ADD before it: one rounding, after the ReLU
        else:
            inputs = [rounded(t, SIGMOID_RANGE if id(t) in sigmoid_out else None) for t in xs]
        arg = inputs if isinstance(x, list | tuple) else inputs[0]
        permutation = _is_permutation(layer)
        if type(layer) in (keras.layers.Conv2D, keras.layers.DepthwiseConv2D) and not permutation:
            y = FakeQuantConv(layer, sources.get(layer.name))(arg)
        else:
            y = layer(arg, *args[1:], **kwargs)
        ys = list(y) if isinstance(y, list | tuple) else [y]
        kept.extend(ys)
        source.update((id(t), layer.name) for t in ys)
        if type(layer).__name__ in MOVES or permutation:
            moved.update(id(t) for t in ys)
        if _is_sigmoid(layer):
            sigmoid_out.update(id(t) for t in ys)
        return y

    try:
        sim = keras.models.clone_model(graph, clone_function=lambda layer: layer, call_function=call)
    except (ValueError, TypeError) as exc:
        raise LhpError(f"QAT simulation of {trained.name}: {exc}") from exc
    out = rounded(sim.outputs[0])
    sim = keras.Model(sim.inputs, out, name=f"{trained.name}_int8_sim")
    fqs = [layer for layer in sim.layers if isinstance(layer, FakeQuant)]
    convs = [layer for layer in sim.layers if isinstance(layer, FakeQuantConv)]
    used = {id(v) for v in sim.trainable_variables} if trains_weights else set()
    return Simulation(sim, fqs, convs, [v for v in trained.trainable_variables if id(v) in used])


def calibrate(sim: Simulation, batches: Sequence[np.ndarray]) -> None:
    """Set every FakeQuant's range to the float deploy graph's min/max over ``batches``."""
    sim.rounding(False)
    try:
        for images in batches:
            sim.model([images], training=False)
    finally:
        sim.rounding(True)
    empty = [fq.name for fq in sim.fake_quants if not np.isfinite(float(fq.lo.numpy()))]
    if empty:
        raise LhpError(f"QAT simulation: {len(empty)} fake-quant node(s) saw no values (e.g. {empty[0]})")
    for fq in sim.fake_quants:  # a grid holds zero; a tensor that is always zero gets a tiny one
        lo, hi = min(float(fq.lo.numpy()), 0.0), max(float(fq.hi.numpy()), 0.0)
        fq.lo.assign(lo)
        fq.hi.assign(max(hi, lo + MIN_RANGE))


def start_ranges(sim: Simulation, ranges: Mapping[str, Sequence[float]]) -> list[Any]:
    """Set the fake-quant nodes whose writing layer ``ranges`` names (a learned-ranges file's
    ``{layer: [lo, hi]}``) to that range; returns those nodes."""
    started = [fq for fq in sim.fake_quants if fq.fixed is None and fq.source in ranges]
    for fq in started:
        lo = min(float(ranges[fq.source][0]), 0.0)
        fq.lo.assign(lo)
        fq.hi.assign(max(float(ranges[fq.source][1]), lo + MIN_RANGE))
    return started


def resumed_optimizer(trained: Any, recipe: Recipe, checkpoint: str | os.PathLike[str],
                      moments: bool = True) -> tuple[Any, int]:
    """The recipe's optimizer over ``trained``'s trainable variables as ``lhp train --resume``
    rebuilds it from the run's ``state.npz`` beside ``checkpoint`` (with ``moments``: its
    moments and step count), and the epoch the run had finished; a fresh one (and epoch 0
    without a state file) otherwise, said on stdout."""
    from lhp_tf.checkpoint import STATE_FILE, CheckpointError, assign_all, load_state
    from lhp_tf.train import make_optimizer

    optimizer = make_optimizer(recipe)
    optimizer.build(trained.trainable_variables)
    path = Path(checkpoint).parent / STATE_FILE
    try:
        state = load_state(path)
    except CheckpointError as exc:
        print(f"qat (deploy graph): a fresh {recipe.train.optimizer} from epoch 0 ({exc})", flush=True)
        return optimizer, 0
    if not moments:
        print(f"qat (deploy graph): a fresh {recipe.train.optimizer} (--optimizer fresh); data from "
              f"{path}'s epoch {state.epoch}", flush=True)
        return optimizer, int(state.epoch)
    try:
        assign_all(optimizer.variables, state.optimizer, "optimizer state", path)
    except CheckpointError as exc:
        print(f"qat (deploy graph): a fresh {recipe.train.optimizer} ({exc}); data from epoch {state.epoch}", flush=True)
        return optimizer, int(state.epoch)
    last = len(state.weights) == len(trained.weights) and all(
        np.array_equal(a, b) for a, b in zip(state.weights, trained.get_weights(), strict=True))
    print(f"qat (deploy graph): continues {path}'s optimizer (step {int(optimizer.iterations.numpy())}, epoch "
          f"{state.epoch}{'' if last else '; the checkpoint is not its last weights'})", flush=True)
    return optimizer, int(state.epoch)


def train_on_deploy_graph(trained: Any, recipe: Recipe, checkpoint: str | os.PathLike[str], epochs: int, lr: float,
                          ranges: Mapping[str, Sequence[float]] | None = None, moments: bool = True,
                          steps_per_epoch: int | None = None, max_samples: int | None = None,
                          drop: float = DROP) -> dict[str, list[float]]:
    """Fine-tune ``trained`` (Keras 3, its own variables, in place) for ``epochs`` through its
    int8 deploy-graph simulation on the recipe's training pipeline and heatmap loss, continuing
    the run of ``checkpoint`` (:func:`resumed_optimizer`), under fixed fake-quant ranges: min/max
    on augmented training faces, then ``ranges`` where they name the tensor (the ones the
    conversion quantises with, :func:`~lhp_tf.quantize.learned_ranges.converted_ranges`), with
    ``drop`` of each tensor's elements left unrounded per step (:data:`DROP`). Returns the ranges
    of the tensors ``ranges`` named (what to convert with)."""
    from lhp_tf.train import configure_tf

    from .calibration import probe_images
    from .qat import fine_tune

    configure_tf(recipe)
    sim = simulation(trained, trains_weights=True)
    batch = recipe.train.batch_size
    faces = probe_images(recipe, RANGE_BATCHES * batch)
    calibrate(sim, [faces[i:i + batch] for i in range(0, len(faces), batch)])
    started = start_ranges(sim, ranges or {})
    print(f"qat (deploy graph): {len(sim.fake_quants)} fake-quant tensors ({len(started)} with learned ranges, the "
          f"rest min/max of {len(faces)} augmented training faces), {len(sim.trained_variables)} of the "
          f"checkpoint's {len(trained.trainable_variables)} trainable variables; {drop:.0%} of each tensor's elements "
          "left unrounded per step", flush=True)
    optimizer, first = resumed_optimizer(trained, recipe, checkpoint, moments)
    optimizer.learning_rate.assign(lr)
    sim.dropping(drop)
    fine_tune(recipe, lambda images: sim.model([images], training=False), sim.trained_variables, optimizer, first,
              epochs, steps_per_epoch, max_samples)
    return {fq.source: [float(b) for b in ranges[fq.source]] for fq in started} if ranges else {}
