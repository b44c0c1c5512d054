"""Lite-HRNet and Lite-HRNet Plus as Keras layers, one block per module.

Architecture (README-ready)
---------------------------
A 96x96 RGB crop in [0, 1] goes through a **shuffle stem** (stride-2 conv, then a two-branch
ShuffleNet unit of stride 2) to 24x24. Three **stages** follow; stage s runs s+2 parallel
branches, each at half the resolution and twice the width of the one above (40/80/160/320
channels at 24/12/6/3 pixels in the large model). A **transition** opens each new branch with a
depthwise stride-2 conv. A stage is a stack of modules; a module is two **conditional channel
weighting** (CCW) blocks - half the channels pass through, the other half is reweighted by
attention computed across resolutions and within each branch, then shuffled back - followed by
a **fusion** block that exchanges information between all branches.

Lite-HRNet Plus (Kato et al.) changes two things. The fusion block, where Lite-HRNet spends
about 2/3 of its multiply-adds on 1x1 convolutions between branches, becomes **SCAF** (stepped
channel attention fusion): a branch receives another branch's channel-averaged map, scaled by
per-channel attention weights computed from its own pooled features, so the cost no longer
grows with the feature-map size. The output head becomes the **MR head**: a 1x1 conv to K
heatmaps on every branch, upsampled to 24x24 and summed. The output is K heatmap logits at
stride 4; a sigmoid is appended for BCE-trained exports.

Presets (``lhp flops --model NAME``): ``lite-hrnet-18`` and ``lite-hrnet-30`` (official
layouts, pointwise fusion, iterative head, v1 output), ``lhp-large`` (Lite-HRNet-30 layout with
SCAF r=4 and the MR head; 1.49M params, 30.2 mmcv-style MFLOPs at 96x96, 98 landmarks) and
``lhp-small`` (widths 24..192, modules (2, 3, 1), SCAF r=2; 0.37M params, 10.2 MFLOPs). The
paper does not publish its layouts: these reproduce its Table 1 complexity to within 1.1%
(:mod:`lhp_tf.model.presets` says how they were found). Every op lowers to TFLite builtins that XNNPACK
delegates in a batch-1 graph: the nearest upsample is built from concatenation and reshape,
channel splits from SPLIT/SLICE, head upsampling is bilinear.

Modules: ``kbackend`` (Keras 3 or tf_keras), ``ops`` (shuffle, split, exact upsample, channel
mean), ``conv`` (conv-BN-ReLU), ``stem``, ``ccw``, ``transition``, ``fusion``, ``scaf``,
``heads``, ``presets`` (ArchSpec and ``resolve``), ``network`` (``build_model``), ``flops``
(``lhp flops``). Importing this package does not import TensorFlow.
"""
