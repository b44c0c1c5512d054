"""The closed vocabularies of lhp-tf: each tuple below is the one list of its kind.

Recipes validate against them (``lhp_tf.config`` builds its ``Literal`` types from these
tuples), the model builders dispatch on them, the converters and the CLIs offer them as
choices and the .tflite metadata records values from them. Adding a kind means adding it here
and to the code that implements it; nothing else lists them.

This module imports nothing.
"""

from __future__ import annotations

#: landmark schemes of the two datasets the paper evaluates on (iBUG-68 and WFLW-98)
DATASET_FORMATS = ("300w", "wflw")
#: landmark count of each scheme
NUM_LANDMARKS = {"300w": 68, "wflw": 98}
#: fusion blocks between branches: Lite-HRNet's pointwise paths, Table 2a's alternatives, SCAF
FUSION_KINDS = ("pointwise", "bottleneck", "group", "scaf")
#: output heads: HRNetV1 (highest branch), HRNetV2 (all branches concatenated), multi-resolution
HEAD_KINDS = ("v1", "v2", "mr")
#: heatmap losses; each implies the activation an exported model appends (``ACTIVATION``)
LOSSES = ("bce", "mse")
#: what an exported model applies to its heatmap logits, per training loss
ACTIVATION = {"bce": "sigmoid", "mse": "none"}


def loss_for(activation: str) -> str:
    """The training loss behind a heatmap activation (the inverse of :data:`ACTIVATION`)."""
    return {a: loss for loss, a in ACTIVATION.items()}[activation]
#: heatmap -> coordinate decoders (``lhp_tf.codec``)
DECODERS = ("dark", "argmax")
#: .tflite quantisation modes
QUANT_MODES = ("float", "int8", "int16x8")
#: deploy-graph forms of ``lhp convert --target`` (``lhp_tf.converters.deploy``)
DEPLOY_TARGETS = ("xnnpack", "amx", "npu")
#: how int8 activation ranges are chosen (``lhp_tf.converters.quantizer``); ``auto``: whichever
#: of ``minmax`` and ``mse`` moves the int8 landmarks least on augmented training faces;
#: ``learned``: trained end to end from the ``mse`` table (``lhp_tf.quantize.learned_ranges``)
CALIBRATIONS = ("minmax", "mse", "auto", "learned")
#: the calibration that trains its ranges, and the table it starts from
LEARNED = "learned"
LEARNED_START = "mse"
#: where a QAT model's int8 ranges come from (``lhp quantize qat --ranges``); the first is the default
QAT_RANGES = ("calibrated", "fake-quant")
#: ``lhp quantize qat --optimizer``: take over the run's optimizer moments (``state.npz``) as
#: the float control (``lhp train --resume``) does, or start them afresh; the first is the default
QAT_OPTIMIZER = ("continue", "fresh")
#: ``lhp quantize qat --graph``: the graph QAT fake-quantises, the int8 deploy graph
#: (``lhp_tf.quantize.deploy_qat``) or the training graph under tfmot
#: (``lhp_tf.quantize.qat_model``); the first is the default
QAT_GRAPHS = ("deploy", "training")
#: the ``--int16`` selector that picks the ops itself (``lhp_tf.quantize.mixed``)
INT16_AUTO = "auto"
#: ``train.distribute`` strategies (``lhp_tf.distribute``)
DISTRIBUTE_KINDS = ("none", "mirrored", "multi_worker")
#: what a reader does with a bad sample
ON_ERROR = ("stop", "skip")
#: ``train.optimizer`` choices
OPTIMIZERS = ("adam", "adamw", "sgd")
