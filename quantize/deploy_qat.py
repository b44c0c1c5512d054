"""Quantisation-aware training on the deploy graph (``lhp quantize qat --graph deploy``).

The tfmot path (:mod:`lhp_tf.quantize.qat_model`) fake-quantises the TRAINING graph, while the
int8 model that ships rounds where the deploy graph (:mod:`lhp_tf.converters.deploy`) puts its
tensors: SCAF products at the source's size, channel means as convs, pools as strided steps,
BatchNorm folded into the convs. Three QAT epochs there left the shipped int8 of the synthetic
lhp-small (20 epochs) 0.164 points from QAT's own float, while the same weights scored 0.094
from it through tfmot's own graph (README). Here the simulation is the deploy graph itself, in
Keras 3, no tfmot, in the calling process:

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
* ranges are the float deploy graph's min/max on augmented training batches, fixed for the
  fine-tuning (the shipped model is calibrated again afterwards, as ``lhp convert`` does);
* BatchNorm is folded, so there are no batch statistics: the folded convs train as plain
  convs, and :func:`write_back` puts them into the checkpoint's conv + BatchNorm pairs as an
  identity BatchNorm (gamma 1, mean 0, variance 1 - epsilon, beta the folded bias), which the
  deploy graph folds back to the same conv.

The optimizer starts fresh (a folded conv has no Adam moments in the run's state); the data
order continues at the epoch the run finished, as the float control's does.

Measured (synthetic checkpoints retrained on an AVX2 x86 machine, held-out faces, ``lhp
quantize qat RUN/best.keras --graph deploy --epochs E -o F --save-checkpoint D/qat.keras``,
then ``lhp quantize drift D/qat.keras --data RUN/int8_drift/full.npz --int8 F``; the controls
are the README's float runs trained E more epochs, this machine kind reproducing them):

==========  ======  ===============  ========  =============  =============  ==================
model       epochs  QAT's own float  int8      control float  QAT - control  training graph's
==========  ======  ===============  ========  =============  =============  ==================
small 20ep  1       3.471            3.636     3.518          +0.118         +0.134
small 20ep  3       3.399            3.650     3.431          +0.219         +0.182
large 10ep  1       4.887            5.163     4.841          +0.322         +0.325
==========  ======  ===============  ========  =============  =============  ==================

The deploy graph fixes what the training graph's simulation cost
QAT's FLOAT weights (lhp-large 1 epoch: 4.887 against its control's 4.841, where tfmot's
network ended at 5.005), but not int8's own cost: int8 sits 0.165-0.276 above QAT's own float,
as post-training int8 sits above the checkpoint's (+0.176 and +0.261). The simulation is
faithful in size (lhp-small 20 epochs, 16 augmented faces: its heatmaps 0.0091 RMS from float,
the shipped int8's 0.0088) but not in pattern (0.0110 from each other: the shipped model is
calibrated again, MSE or min/max, on other images), and with fixed ranges the straight-through
gradient sees rounding as identity: over one epoch the simulation's own error moved 0.0091 ->
0.0090. What the weights learn is the float task. So ``training`` stays the default.

What the simulation is good for: learning the RANGES end to end, weights frozen
(:mod:`lhp_tf.quantize.learned_ranges`, the default ``export.calibration``: LSQ-style ranges,
so rounding error reaches them too, started from the converter's table and written back into
it): pure int8 held-out drift of lhp-small 10 / 20 epochs +0.111 / +0.176 -> +0.044 / +0.028,
lhp-large 10 epochs +0.261 -> +0.026. QAT's int8 export (``--ranges calibrated``) takes the
recipe's calibration, so it learns the ranges of the fine-tuned weights the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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
#: layer types that only move values: their output is on their input's grid
MOVES = ("Concatenate", "ChannelSplit", "ChannelShuffle", "NearestUpsample", "Reshape", "Cropping2D",
         "ZeroPadding2D", "Permute")


def _keras() -> Any:
    from lhp_tf.model.kbackend import keras

    return keras


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
            return tf.quantization.fake_quant_with_min_max_vars(x, self.lo, self.hi, num_bits=8)

    class FakeQuantConv(keras.layers.Layer):
        """``conv`` (Conv2D or DepthwiseConv2D, its own variables) with its kernel rounded per
        output channel to int8 [-127, 127], gradient straight through."""

        def __init__(self, conv: Any, **kwargs: Any) -> None:
            super().__init__(name=f"{conv.name}_fq", **kwargs)
            self.conv = conv
            self.depthwise = isinstance(conv, keras.layers.DepthwiseConv2D)
            self.observing = False

        def call(self, x: Any) -> Any:
            c = self.conv
            kq = k = c.kernel
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
            if c.use_bias:
                y = y + c.bias
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
    #: names of the folded convs it trains (each named as the checkpoint's conv)
    folded: set[str]
    #: the deploy graph's layers by name (the convs are wrapped in the model)
    layers: dict[str, Any]

    def rounding(self, on: bool) -> None:
        """Round (the int8 simulation) or not (the float deploy graph; FakeQuants then widen
        their ranges to what passes)."""
        for layer in (*self.fake_quants, *self.fake_quant_convs):
            layer.observing = not on


def simulation(trained: Any, target: str = "xnnpack", batch_size: int | None = None) -> Simulation:
    """The int8 deploy graph of ``trained`` for ``target`` with fake quantisation (``batch_size``:
    None for a dynamic batch; the ``npu`` form needs a fixed one)."""
    from lhp_tf.converters.deploy import deploy_model, folded_convs

    keras = _keras()
    FakeQuant, FakeQuantConv = fake_quant_classes()
    folded = set(folded_convs(trained))
    graph = deploy_model(trained, target, "int8", batch_size=batch_size, layout_rewrites=False)
    for layer in graph.layers:
        if layer.name in folded:
            layer.trainable = True  # the deploy graph freezes the folded copies it makes
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
            y = FakeQuantConv(layer)(arg)
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
    return Simulation(sim, fqs, convs, folded, {layer.name: layer for layer in graph.layers})


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


def write_back(sim: Simulation, trained: Any) -> int:
    """Put the fine-tuned folded convs into ``trained``'s conv + BatchNorm pairs (an identity
    BatchNorm after the folded kernel; the other layers are shared and trained in place).
    Returns how many pairs were written."""
    from lhp_tf.converters.deploy import folded_convs

    pairs = folded_convs(trained)
    for name in sim.folded:
        conv, bn = trained.get_layer(name), pairs[name]
        kernel, bias = (np.asarray(w) for w in sim.layers[name].get_weights())
        if not (bn.center and bn.scale):
            raise LhpError(f"{bn.name}: QAT on the deploy graph needs a BatchNorm with center and scale")
        conv.kernel.assign(kernel)
        if conv.use_bias:
            conv.bias.assign(np.zeros_like(bias))
        bn.gamma.assign(np.ones_like(bias))
        bn.beta.assign(bias)
        bn.moving_mean.assign(np.zeros_like(bias))
        bn.moving_variance.assign(np.full_like(bias, 1.0 - bn.epsilon))
    return len(sim.folded)


def finished_epoch(checkpoint: str) -> int:
    """The epoch the run beside ``checkpoint`` had finished (0 without a state file)."""
    from pathlib import Path

    from lhp_tf.checkpoint import STATE_FILE, CheckpointError, load_state

    try:
        return int(load_state(Path(checkpoint).parent / STATE_FILE).epoch)
    except CheckpointError:
        return 0


def train_on_deploy_graph(trained: Any, recipe: Recipe, epochs: int, lr: float, first_epoch: int = 0,
                          steps_per_epoch: int | None = None, max_samples: int | None = None) -> Simulation:
    """Fine-tune ``trained`` (Keras 3, in place) for ``epochs`` through its int8 deploy-graph
    simulation on the recipe's training pipeline and heatmap loss; returns the simulation."""
    from lhp_tf.train import configure_tf, make_optimizer

    from .calibration import probe_images
    from .qat import fine_tune

    configure_tf(recipe)
    sim = simulation(trained)
    batch = recipe.train.batch_size
    faces = probe_images(recipe, RANGE_BATCHES * batch)
    calibrate(sim, [faces[i:i + batch] for i in range(0, len(faces), batch)])
    print(f"qat (deploy graph): {len(sim.fake_quants)} fake-quant tensors, {len(sim.folded)} folded convs, ranges from "
          f"{len(faces)} augmented training faces", flush=True)
    variables = sim.model.trainable_variables
    optimizer = make_optimizer(recipe)
    optimizer.build(variables)
    optimizer.learning_rate.assign(lr)
    fine_tune(recipe, lambda images: sim.model([images], training=False), variables, optimizer, first_epoch, epochs,
              steps_per_epoch, max_samples)
    write_back(sim, trained)
    return sim
