"""The deploy graph: the trained network restructured for what runs it, computing the same function.

:func:`deploy_model` takes the batch-1 inference Keras model (the network, with or without its
heatmap sigmoid, pools as AveragePooling2D or already as the equal depthwise conv of
:func:`lhp_tf.converters.inference_model.xnnpack_friendly`) and rebuilds it from its layers,
matched by layer type and name (the CONTRACTS naming: ``fusion_*_{i}from{j}_mul`` etc.), so
no weight moves by position. Every trained layer is reused as it is; the new layers hold
fixed constants. The rewrites, and why (figures measured on lhp-small, LiteRT 2.3, 1 thread,
this 2-core x86 machine; see the measurements section):

* **Channel shuffle without rank-5 tensors** (every target). The model's ChannelShuffle now
  flattens pixels, (1, H*W, g, C/g) -> TRANSPOSE (0, 1, 3, 2), so it is rank 4 everywhere
  (Ethos-U55/U65, Qualcomm HTP and Edge TPU refuse rank 5). Narrow shuffles become a 1x1 0/1
  permutation conv instead, exact in float and int8 (weight 1 quantises to 127 x 1/127): up
  to 32 channels in float graphs, up to 160 in integer ones (:data:`SHUFFLE_CONV_MAX_CHANNELS`).
  Timed alone between two depthwise convs (LiteRT, 1 thread; conv vs transpose, us): float
  24@24x24 -9%, 40@24x24 48.5 vs 44.7, 48@12x12 13.2 vs 11.6, 80@12x12 23.4 vs 15.7, 96@6x6
  7.7 vs 4.7, 320@3x3 20.1 vs 3.8; int8 24@24x24 -19%, 40@24x24 55.4 vs 61.7, 48@12x12 15.2
  vs 17.8, 80@12x12 22.0 vs 24.6, 96@6x6 7.0 vs 7.9, 160@6x6 10.8 vs 11.9, 192@3x3 4.1 vs 4.0,
  320@3x3 6.5 vs 5.6 (XNNPACK's int8 transpose of 2-element rows is 1.4-1.6x its float one:
  ``benchmarks/op_profile.py``). Trained lhp-small int8, whole graph p50 1472 -> 1420 us with
  the int8 threshold raised from 32 to 96 (toys and whole-graph timings: ad-hoc in-process
  scripts, not kept; ``benchmarks/latency.py`` has the current figures). The rank-4 and rank-5 transposes time the same. Target ``npu`` makes every shuffle a conv:
  Vela takes both forms, but estimates the transposes slower (lhp-large U85-256 10.80 ms with
  them vs 6.79 ms with convs; U55-256 23.48 vs 23.79, U65-512 4.29 vs 4.39). Folding the
  permutation into neighbouring weights is impossible (the CCW identity half passes through
  untouched).
* **SCAF resize-first** for higher-resolution sources: scaling a one-channel map by
  per-channel weights commutes with average pooling, so ``pool(mean_j) * w`` replaces
  ``pool(mean_j * w)``: C_i times fewer elements pooled. Equal up to float rounding.
* **SCAF's lower-resolution terms summed from the coarsest up** (every target,
  :func:`_nested_sum`): for receiver i the terms of sources j > i multiply at the source's
  own size and ``up2(t_{i+1} + up2(t_{i+2} + up2(t_{i+3})))`` replaces ``sum_j up(m_j) * w``
  (nearest upsampling is linear; x2 twice is x4). Per term the full-size two-way broadcast MUL
  and ADD, and the upsample of a one-channel map (pixel by pixel copies of one byte), become
  work at the source's size; one C-channel upsample and one ADD stay at full size. (Until
  this, every path was resize-first, measured -16 % int8 against the paper's order in the
  graph of that time; in today's graph the paper's order, which is this form for a single
  source, is the faster one, as the toy shows.) Toy (ad-hoc script, not kept), one receiver of 24x24x24 with
  1 / 2 / 3 such sources (LiteRT, 1 thread; resize-first vs nested, us): int8 8.1 / 15.8 /
  23.8 vs 5.0 / 6.3 / 6.8, float 5.0 / 8.7 / 12.6 vs 4.6 / 5.2 / 5.4 (C = 40, 3 sources, int8:
  34.6 vs 9.7). Whole graphs (an ad-hoc in-process loop, 1 thread, p50, after the CCW pairs below;
  ``benchmarks/latency.py`` has the current figures):
  lhp-small xnnpack int8 1296 -> 1169 us, amx 1033 -> 969, float 948 -> 923; lhp-large amx
  3169 -> 2912, float 2982 -> 2954. Vela (trained checkpoints of the table below, npu form),
  U55-256 / U65-512 / U85-256: lhp-small 4.942 / 1.276 / 1.880 -> 4.849 / 1.249 / 1.846 ms,
  lhp-large 15.31 / 3.564 / 5.705 -> 14.82 / 3.421 / 5.540 ms.
* **Two CCW blocks without the shuffle between them** (integer graphs, every target,
  :func:`_paired_ccw`): see there; lhp-small -2 %, lhp-large -4.5 % (amx, in-process); Vela
  (npu form, after the nested sums), U55-256 / U65-512 / U85-256: lhp-small 4.849 / 1.249 /
  1.846 -> 4.782 / 1.234 / 1.841 ms, lhp-large 14.82 / 3.421 / 5.540 -> 14.57 / 3.371 / 5.383
  ms (every width paired there: an NPU graph's shuffles are all convs). On CPUs the pair's
  closing permutation is one transpose from 48 channels on (:data:`PAIR_TRANSPOSE_MIN_CHANNELS`:
  on an AVX2 x86 CPU without VNNI or AMX, trained lhp-small int8, in-process loop, p50 -1.9 %,
  p10 -1.6 %; the same int8 values, held-out NME unchanged to the last digit).
* **SCAF's channel means on CPUs: MEAN ops** (targets in :data:`MEAN_OP_TARGETS`, float and
  int8): a full-size mean stays the MEAN over channels, and ``pool_k(mean_c(x))`` is one MEAN
  over the rank-4 view (H/k, k, W/k, k*C) of ``x`` (:class:`~lhp_tf.model.ops.PooledChannelMean`,
  axes 1 and 3; one per k, shared by every receiver pooling that mean); the full-size mean
  goes where only pools read it (always for the top branch). XNNPACK runs a MEAN 2-4x faster
  than the conv computing the same values: one-op toys (LiteRT 2.3, 1 thread, this AMX
  machine, each op's own time, us; conv vs MEAN), int8: pooled mean 24x24x24 by 2 3.64 vs
  1.47, by 4 2.86 vs 0.82, by 8 2.64 vs 0.51, 12x12x48 by 2 about 2.3 vs 0.7; full-size mean
  24x24x24 8.76 vs 2.36, 12x12x48 2.28 vs 0.69, 6x6x96 0.89 vs 0.28, 3x3x192 0.42 vs 0.13;
  float: pooled 24x24x24 by 2 5.13 vs 2.10 (before: the 1x1 mean conv + AVERAGE_POOL_2D), by 8
  7.03 vs 1.56, full-size 24x24x24 3.74 vs 2.03, 12x12x48 1.76 vs 0.57. Trained lhp-small (20
  epochs), whole graph, in-process, interleaved (an ad-hoc script, not kept; p50 us, conv means
  vs MEANs): amx int8 955 -> 924, xnnpack int8 1162 -> 1135, float 940 -> 912;
  ``benchmarks/latency.py`` has the current figures. Held-out drift of that checkpoint's
  xnnpack int8 graph with its learned ranges (learned with the conv means; the same layer
  names): +0.024 (before +0.029). Exact up to float rounding. A view that folds the batch into
  its rows keeps every tensor rank 4.
* **SCAF's channel means for an NPU: constant convs** (target ``npu``; Vela rejects MEAN over
  depth: "reduction over depth only if h, w or c == 1"): a full-size mean is a 1x1 conv C -> 1
  with weights 1/C, ``pool_k(mean_c(x))`` one 2x2 stride-2 conv C -> 1 with weights 1/(4C) on
  ``x``, then 2x2 depthwise steps for k = 4, 8, shared by every pool of the same mean. An int8
  1x1 conv costs about the same per pixel whatever its channels, so the mean is taken at the
  pooled size: Vela U55-256 / U65-512 / U85-256 4.965 / 1.284 / 1.887 -> 4.942 / 1.276 / 1.880
  ms (the CPU graphs used this form too until the MEAN form above). Uniform weights quantise
  exactly.
* **Average pools**: a float graph for XNNPACK keeps AVERAGE_POOL_2D (XNNPACK runs it in
  float, faster than the depthwise form); int8 graphs (XNNPACK runs no int8 AVERAGE_POOL_2D)
  and NPU graphs get a chain of 2x2 stride-2 depthwise convs with weights 1/4 (exact in int8;
  Vela takes depthwise strides 1-3 only, so a single 4x4 or 8x8 stride-4/8 conv falls back).
  Integer graphs for CPUs take 4x4 stride-4 steps, widest first (:data:`POOL_MAX_STEP`): one-op
  toys, int8, LiteRT, 1 thread, p50 us, 2x2 steps vs (4x4, 2x2): 24x24x12 pooled by 8 3.38 vs
  1.98, 24x24x24 5.33 vs 3.06, one channel 3.11 vs 1.96 ((2x2, 4x4): 3.03, 4.65); by 4, 12x12x12
  1.19 vs 0.86, 12x12x24 1.61 vs 0.99, 24x24x12 2.97 vs 1.73; a single 8x8 stride-8 step is
  10x slower (24x24x12 38.2 us, 24x24x24 76.3). The npu form's pooled channel means keep
  halving (:func:`_mean_pool_conv`): each pooled size is shared by several receivers. Per-channel
  pools as MEANs (two, over the view's row axis, then over a pixel's k columns) run 3-5x slower
  than the depthwise step in int8 (toys: 24x24x12 by 2 10.2 vs 1.85 us, by 4 3.61 vs 1.17).
* **Bilinear x4/x8 upsampling** (the MR head): Vela takes RESIZE_BILINEAR with half-pixel
  centres only at x2, and a chain of x2 resizes is NOT x4 (max error 16% of the input range on
  random data: the intermediate samples straddle the first resize's knots). The exact form:
  with half-pixel centres and edge clamping, bilinear x s (even s) equals a nearest x s upsample
  of the input padded by one replicated pixel, cropped by s/2, then a separable depthwise conv
  with taps [1/2, 1, ..., 1, 1/2] / s (a box of s taps convolved with [1/2, 1/2]); verified to
  1e-7. Target ``npu`` uses it (all rank-4 CONCATENATION/RESHAPE/STRIDED_SLICE/DEPTHWISE ops);
  target ``xnnpack`` keeps the single RESIZE_BILINEAR (exact and delegated). In int8 the 1/2
  taps quantise to 63.5 -> 64 steps of 1/127 (0.4% error on the end taps).
* SCAF's chain of outer MULs (an (h, w, 1) map times (1, 1, C) weights) and ADDs stays: a
  dynamic-weight matmul form needs BATCH_MATMUL, which Ethos-U55/U65 and XNNPACK int8 lack.
  Target ``npu`` first broadcasts the map to C channels with a constant 1x1 conv of ones
  (exact: weight 1 is 127 x 1/127 in int8), so each MUL broadcasts one way only: Vela lowers
  a two-way broadcast MUL to an ADD plus a MUL, several times the cycles of conv + MUL on
  U55-256 (``vela --verbose-performance``). Trained lhp-small (`runs/synthetic-300w-small-2x`,
  ``lhp npu-check FILE --accel ethos-u55-256 ethos-u65-512 ethos-u85-256``): U55-256 5.98 ->
  5.64 ms, U65-512 1.50 -> 1.43 ms, U85-256 2.18 -> 2.25 ms (U85 broadcasts natively). On
  XNNPACK the two-way MUL stays faster (the measurement below).
* **The stem's 3x3 stride-2 conv on the image's pixel pairs** (int8, target ``xnnpack``,
  :func:`_column_pair_conv`): a free RESHAPE makes each row's pixel pairs one 6-channel pixel
  and the conv a (3, 2) stride-(2, 1) one whose added weights are zeros, so the int8 values
  are the same (tested). XNNPACK's int8 conv kernels on x86 (``c8``: 8 input channels per
  step) pad each of the 9 taps' 3 channels to 8, 72 multiply-accumulates per output; the pair
  form has 6 taps of 6 (48). One-op toys (96x96x3 image, LiteRT, 1 thread, p50 us, plain vs
  pairs; ad-hoc script, not kept): 16 channels int8 108.8 vs 78.2, float 27.7 vs 35.7; 32
  channels int8 210.4 vs 150.7, float 57.5 vs 68.1, hence int8 only (space-to-depth 2x2 blocks:
  95.9 and 175.2 int8; four pixels as one with 2C outputs: 111.6 and 223.6). In the trained
  lhp-small (10 epochs) int8 graph (``benchmarks/op_profile.py --models before=A after=B``)
  the conv costs 78.0 instead of 104.0 us, whole graph 1374 -> 1313 us; ``benchmarks/latency.py``
  with both files as ``--extra`` rows, p50 1.644 -> 1.585 ms. ARM boards with dot-product int8
  kernels step 4 channels at a time (``c4``), where the plain conv takes 36 and the pair form
  48 per output (not measured: no board here); ``npu`` and ``amx`` (its own stem) keep the plain
  conv.
* **Conv -> BatchNorm pairs fold into one conv with bias** (every target): the converter folds
  them anyway (same ops, outputs within 1e-6), but the graph TensorFlow traces and converts is
  80 layers smaller on lhp-small, part of what brought ``lhp convert`` under 30 s.
* **Global average pools** (the attention branches' GAP, MEAN over H and W): target ``npu``
  makes each a chain of 2x2 stride-2 depthwise convs with taps 1/4 while the map halves
  evenly, then one VALID depthwise conv over what is left (24x24 -> 12 -> 6 -> 3 -> 1; uniform
  taps quantise exactly per channel). Vela, one GAP + the FC after it, int8, U55-256 / U85-256
  (``lhp npu-check`` on one-op toys): 24x24x40 MEAN 63.6 / 37.4 us, AVERAGE_POOL_2D 31.3 /
  16.2, one 24x24 depthwise 63.5 / 37.2, the chain 19.9 / 60.2; 12x12x80 37.1 / 17.2 vs the
  chain 13.5 / 11.8; 6x6x160 30.4 / 11.8 vs 22.5 / 11.2; 3x3x320 alike. In lhp-small (this
  change alone, random trained-like weights) U55-256 5.65 -> 5.05 ms, U65-512 1.43 -> 1.31,
  U85-256 2.25 -> 1.93: the U85 loss at 24x24 is outweighed by the smaller maps. On XNNPACK the chain
  is slower than MEAN (lhp-large int8 p10 4.62 vs 4.37 ms), so target ``xnnpack`` keeps MEAN.
  Whole-map AVERAGE_POOL_2D is not used: XNNPACK's delegate takes only float pools (its
  source), so each int8 pool would split the CPU graph, and int8 gives a pool its input's scale
  (ai-edge-quantizer's same-as-input rule; TFLite's int8 pool kernel assumes it), so the
  pooled means would keep the feature map's coarse step. (An earlier trial build with such
  pools failed to load under XNNPACK; a rebuild on random weights on 2026-12-02 loads, cause
  unknown.)
* **CCW's upsampled attention weights** (``x * nearest_upsample(w, s)``): target ``npu``
  repeats ``w`` along width only and multiplies on a rank-4 view (1, h, s, W*C) of ``x``,
  broadcasting over the s rows each row of ``w`` covers (exact). On toys (Vela, 24x24x20 with
  s = 2, 4, 8, counting the pool and sigmoid that make ``w``) it costs 0.68-0.84x the upsample
  + MUL on U55-256 and 0.37-0.47x on U65/U85 (12x12x40, s = 2: 1.0x on U55), but in
  the network Vela must first copy ``x`` (a channel half of the block input, a strided view)
  to reshape it: trained lhp-small U55-256 5.008 -> 4.965 ms, U65-512 1.261 -> 1.284,
  U85-256 1.889 -> 1.887; lhp-large 15.71 -> 15.34, 3.51 -> 3.58, 5.83 -> 5.71. Kept for
  U55 and U85; U65 pays 2 %.

* **Target ``amx``** (int8 only; float graphs are the xnnpack form): x86 CPUs whose XNNPACK
  runs int8 GEMMs on AMX tiles (Sapphire Rapids and later; this machine). There an int8 1x1
  conv costs per 16 output pixels whatever its width up to 64 channels (24x24 map, LiteRT 2.3,
  1 thread: 8 -> 8 10.2 us, 24 -> 24 10.5, 64 -> 64 10.6, 128 -> 128 20.2; float 2.3, 8.2,
  30.6, 122; per-tensor weights alike), so fewer, wider GEMMs win even with more MACs:
  (1) **the stem on 4x4 space-to-depth blocks** (:func:`_s2d_stem`): its 48x48 maps become
  24x24 ones with 4x the channels, the 3x3 stride-2 conv a 2x2 conv (48 -> 64 channels for a
  16-channel stem), each depthwise stride-2 conv merged with the linear 1x1 conv after it into
  one 2x2 conv, the 1x1 expand block-diagonal; stem alone (toy with lhp-small's shapes, int8):
  192 -> 70 us (lhp-large's 32-channel stem 193 -> 103), float 75 -> 295 us, hence int8 only;
  merging the depthwise and 1x1 convs without the blocks saved 8 us; (2) **narrow 1x1 convs
  take 2 to 4 neighbouring pixels as one** on a (H, W/g, g*C) view with the kernel g times
  on the diagonal (:func:`_pointwise`; g from the AMX tile count, maps of 144 pixels or more):
  the same int8 values, fewer GEMM rows (shuffle conv 24@24x24: 9.7 -> 4.8 us); (3) **the MR
  head as one conv** over the concatenated, resized branches (:func:`_summed_head`; toy 132
  -> 103 us int8, float 92 -> 205); (4) **per-channel weights multiply a map row by row**
  (:func:`_row_broadcast_mul`: CCW's spatial weighting on maps of 576 pixels or more; since
  measured on AVX2 too, every integer CPU graph, the next bullet).
  Trained lhp-small (20 epochs) int8, whole graph (in-process timing, 1 thread, p50): xnnpack
  form 1422 us, stem 1291, + head 1264 (p10 1221), + packing 1211, float 1074 (a quieter
  moment, same files: packing 981, + row MULs 957, float 891, xnnpack form 1172); held-out NME
  3.779 (xnnpack form), 3.775 (stem), 3.773 (+ head; packing and row MULs are bit-exact),
  float 3.734.
  Toy and single-op figures in this bullet come from one-op or one-block models timed in one
  process (ad-hoc scripts, not kept); ``benchmarks/latency.py`` times the whole amx graph
  beside the default form, ``benchmarks/op_profile.py --target amx`` per op. These forms add MACs (the stem
  alone from about 1.5 to 12 M), which CPUs whose int8 GEMMs cost per MAC (ARM boards' NEON
  dot products; not measured here, no board) would pay, so they are a target of their own,
  not the default.

* **Per-channel weights multiply a map row by row in every integer CPU graph** (targets
  ``xnnpack`` and ``amx``, :data:`ROW_MUL_TARGETS`): XNNPACK's int8 MUL costs per broadcast
  row on an AVX2 x86 CPU too. Trained lhp-small (10 epochs) int8, the files with and without
  (``benchmarks/op_profile.py --models``): MUL summed 154.1 -> 117.6 us, CONCATENATION 110.9
  -> 131.2 (the tiled weights), whole graph 1316 -> 1271 us; ``benchmarks/latency.py``, both
  files twice as ``--extra`` rows of one run, p50 1.473 / 1.469 -> 1.450 / 1.451 ms, and in a
  busier run 1.591 / 1.591 -> 1.563 / 1.571 ms. Taking maps from 144 pixels (12x12) on gained
  nothing more in that run (1.588 / 1.571 ms). lhp-large (untrained, the same run holding each
  file twice): with both CPU rewrites 3.916 / 3.918 ms, without the row MULs 3.950 / 3.963,
  without the pixel-pair stem 3.973 / 3.971 (float 3.810). The same int8 values (a reshape
  and concatenations of one scale; held-out NME of the 10-epoch lhp-small 4.5044 both).
* **Attention weights come repeated from the conv that computes them** (CPU graphs,
  :func:`_row_mul_tiles`, :class:`UpsampledWeights`): the spatial weighting's fc2 writes its
  C weights W times over for the row-wise MUL above, and CCW's cross-resolution conv2 writes
  each branch's weights ``s`` times over (``s``: the branch's upsample factor), which is the
  weights upsampled along width; the MUL then broadcasts those rows over the s rows each
  covers on a (h, s, W*C) view of the map (:func:`_tiled_weights_mul`). Tiled output channels
  keep their weights and so their per-channel scales: the same int8 values (tested; the
  converted trained lhp-small amx and xnnpack and lhp-large amx files gave identical outputs
  on 8 random inputs). What goes: the weights' tiling CONCATENATIONs and every CCW upsample
  (two CONCATENATIONs and two RESHAPEs per step), 88 of lhp-small's 1004 amx ops. Why it
  matters more than the ops' own time says: in a graph run right after another model (as
  ``benchmarks/latency.py`` and a board running a face detector first do) every op pays for
  what it touches first, ~0.4-0.5 us for even the cheapest (``python
  benchmarks/op_marginal.py FILE``: one more LOGISTIC 0.43 us after another model vs 0.30
  back to back, one more one-pixel conv 1.05 vs 0.45, a RESHAPE 0.72 vs 0.32, a
  CONCATENATION 1.9 vs 1.3; lhp-small's ~900 ops carry ~0.4 ms of it, MediaPipe's 97 ops
  ~0.04). Whole graphs, an in-process loop interleaved with MediaPipe's model (ad-hoc script,
  200-250 rounds, p50 us, right after the other models / back to back): lhp-small amx 1131 ->
  1112 / 899 -> 895 (the fc2 tiling alone 1141 -> 1130, back to back unchanged), xnnpack
  1294 -> 1251 / 1088 -> 1061, lhp-large amx 2989 -> 2940 / 2522 -> 2496. The conv2 weights
  grow by the factors (lhp-large's constants 1.77 -> 2.04 MB). Float graphs for CPUs take the
  conv2 tiling too (:data:`TILED_WEIGHT_TARGETS`; lhp-small float 1120 -> 1100 / 943 -> 927,
  outputs identical), not the fc2 one (float keeps the plain MUL, above); the npu form keeps
  its broadcast MUL (:func:`_broadcast_upsample_mul`). Tried and not kept: SCAF's
  lower-resolution terms the same way (fc2 writing each receiver's weights repeated to its
  width, the nested sums as ADDs broadcasting rows): 23 ops fewer, the same int8 values, but
  no faster (lhp-small amx 1109 -> 1122 / 884 -> 896, xnnpack 1317 -> 1321, lhp-large amx
  3156 -> 3170): the MULs and coarse ADDs at full width cost what the concatenations saved.

Targets: ``xnnpack`` (the CPU form, the default) and ``npu`` differ in the x4/x8 bilinear
upsamples, SCAF's broadcast, the global average pools and CCW's weight upsampling; the npu
form also runs fully delegated on XNNPACK. ``amx`` is the xnnpack form with the int8 rewrites
above, its own stem instead of the pixel-pair conv.

Tried on Vela in trial builds (code not kept) and not adopted: SCAF's attention FCs merged
per receiver (fc1 side by side, fc2 block-diagonal): the block-diagonal weights triple the
weight traffic that dominates these 1x1-pixel convs on the NPU (U55-256 5.69 ms merged vs
5.64 ms not).

Tried on CPUs in trial builds (code not kept; trained lhp-small, amx form, min/max ranges;
an in-process loop interleaved with MediaPipe's model, 200 rounds, p50 ms right after the
other models / back to back): SCAF's attention FCs merged per receiver (as above): 919 -> 881
ops, 1.111 -> 1.098 / 0.867 -> 0.865, and it renames layers that saved ranges files name;
SCAF's coarse terms "wide" (each coarse path's fc2 writing its weights tiled by its upsample
factor, so the term is already repeated along width, and each level's sum one broadcast ADD
on (h, 2, W*C) row views instead of the x2 upsample's two CONCATENATIONs): identical
outputs, 919 -> 896 ops, 1.119 -> 1.100 / 0.865 -> 0.881; per op (``op_profile.py
--models``) CONCATENATION 69.5 -> 59.8 us, but MUL 92.9 -> 101.4 (XNNPACK's int8 two-way
broadcast MUL costs per element: (12, 12, 1) x 48 channels 1.71 us, x 24 0.93) and ADD 41.3
-> 45.6. Neither moves lhp-small by more than ~2 % in either condition.

Where lhp-small's amx int8 time goes now (``python benchmarks/op_profile.py --models
amx=F``, F from ``lhp convert runs/synthetic-300w-small-2x/best.keras --quant int8 --target
amx``; whole graph 1.10 ms): the 3x3 depthwise convs on 24x24x12 (12 x 7.2 us) and 12x12x24
(12 x 3.5 us) lead; the CCW pairs' data movement on the 24-channel branch costs ~24 us per
pair (its three SLICEs 6.0, the SPLIT of Y 3.3, the working CONCATENATION 3.0, the 3-way
CONCATENATION 5.6, the packed permutation conv 5.8), 143 us over six pairs; the stem's two 2x2
convs to 8 channels 17 us each. Tried (one-op toys, LiteRT, 1 thread, int8) and not adopted:
the depthwise conv as a dense 3x3 conv with block-diagonal weights, for AMX's GEMMs (24x24x12
27.3 vs 8.4 us, 24x24x24 27.5 vs 14.1, 12x12x24 7.6 vs 3.9). XNNPACK's int8 depthwise
conv costs in 16-channel steps and up to twice its float one (``python
benchmarks/depthwise_channels.py``: 10 chained 3x3 convs on 24x24, us per conv, 8 / 12 / 16 /
24 / 32 channels: int8 6.61 / 6.59 / 6.59 / 11.92 / 11.62, float 4.52 / 4.64 / 3.53 / 6.78 /
5.46), so a 12-channel map pays for 16 and nothing laid out differently makes it cheaper;
folding the map's two halves into 24 channels would pay for 32.

Current figures, trained synthetic checkpoints (``runs/synthetic-300w-small-2x``: lhp-small, 20
epochs; ``runs/synthetic-300w-large``: lhp-large, 10 epochs), ``lhp convert ... --quant int8
[--target npu]`` then ``lhp npu-check FILE --accel ethos-u55-256 ethos-u65-512
ethos-u85-256``; "before" is the same command on main ec8a821, "then" on 5fbd3e4 (before the
pooled-mean convs, the int8 shuffle threshold of 160 and the permutation convs' shared
ranges), "then2" on 6395127 (before the nested SCAF sums and the CCW pairs), "then3" on 4b3fb5d
(before the CPU graphs' 4x4 pool steps; amx: lhp-small 974 -> 964 ops, lhp-large 2416 ->
2388; whole graphs, in-process interleaved loop, p50: lhp-small amx 1190 -> 1168 us, xnnpack
1408 -> 1378, float 1187; lhp-large 10 ep amx 3183 -> 3126, xnnpack 3354 -> 3270, float 3211;
held-out NME moved by +0.002 to +0.011, within the run-to-run noise of int8 ranges). Every op
on the NPU and every node delegated to XNNPACK in all of them. lhp-large's QUANTIZEs since the CCW
pairs are copies between scales one float32 step apart (0.047688667 -> 0.047688670) that
ai-edge-quantizer writes where a slice or split of a shared-range group feeds a concatenation;
XNNPACK's int8 concatenation refuses inputs whose scales differ at all, so they cannot simply
be dropped (tried: the graph no longer loads):

=======================  ==============  ===========  ==========================================
model, form              ops (QUANTIZE)  MEAN         Vela U55-256 / U65-512 / U85-256
=======================  ==============  ===========  ==========================================
lhp-small xnnpack before 993 (67)        51
lhp-small xnnpack then   926 (0)         51
lhp-small xnnpack then2  880 (0)         51
lhp-small xnnpack then3  896 (0)         51
lhp-small xnnpack        886 (0)         51
lhp-small npu before     1019 (73)       51           5.636 / 1.433 / 2.256 ms
lhp-small npu then       1044 (0)        0            4.965 / 1.284 / 1.887 ms
lhp-small npu then2      1038 (0)        0            4.942 / 1.276 / 1.880 ms
lhp-small npu            1055 (0)        0            4.782 / 1.234 / 1.841 ms
lhp-large xnnpack before 2492 (164)      126
lhp-large xnnpack then   2328 (0)        126
lhp-large xnnpack then2  2158 (0)        126
lhp-large xnnpack then3  2205 (8)        126
lhp-large xnnpack        2177 (8)        126
lhp-large npu before     2453 (173)      126          18.08 / 4.127 / 7.233 ms
lhp-large npu then       2511 (0)        0            15.34 / 3.581 / 5.706 ms
lhp-large npu then2      2497 (0)        0            15.31 / 3.564 / 5.705 ms
lhp-large npu            2543 (4)        0            14.57 / 3.371 / 5.383 ms
=======================  ==============  ===========  ==========================================

Where XNNPACK's int8 time goes, op by op against float (``python benchmarks/op_profile.py
--checkpoint CKPT``): lhp-small int8 1.38x float summed over its ops alone, CONV_2D 1.59x,
DEPTHWISE 1.71x, MUL 2.13x, TRANSPOSE 1.58x, RESIZE_BILINEAR 1.54x, while CONCATENATION,
SPLIT, RESHAPE, MEAN and LOGISTIC are cheaper in int8. An int8 1x1 conv costs about 15 ns per
output pixel whatever its channels up to 16 (24x24: 8 -> 8 9.8 us, float 1.6 us), the stem's
3x3 conv on 3 channels 93 vs 30 us, and SCAF's two-way broadcast MUL (h, w, 1) x (1, 1, C) 2-3x
float: x86's int8 kernels for these narrow shapes, not the graph. Tried and not adopted: the
stem conv as SPACE_TO_DEPTH + a 2x2 conv on 12 channels (int8 -20 us on one-op toys for 16
and 32 output channels, float +24-27 us, and a TensorFlow op outside Keras' own layers); the
pixel-pair form above is adopted instead.

Measurements (taken before conv+BN folding and the npu form's broadcast conv; current figures
are in the table above. 98 landmarks, untrained weights with
trained-like magnitudes; "before" is the
graph ``inference_model`` exported until now; int8 with min/max ranges; Vela 5.2 with its
default system configuration per accelerator). Ops / max rank / Vela ops on the NPU and
estimate for U55-256, U65-512, U85-256:

=====================  =====  ====  =================================================
lhp-small              ops    rank  Vela U55 / U65 / U85
=====================  =====  ====  =================================================
before float           945    5
before int8            957    5     922/957 10.30 ms, 922/957 2.54 ms, 940/957 4.94 ms
xnnpack float          915    4
xnnpack int8           939    4     937/939 5.67 ms, 937/939 1.47 ms, all 2.38 ms
npu int8               925    4     all: 6.32 ms, 1.53 ms, 2.25 ms
=====================  =====  ====  =================================================

=====================  =====  ====  =================================================
lhp-large              ops    rank  Vela U55 / U65 / U85
=====================  =====  ====  =================================================
before float           2309   5
before int8            2337   5     2248/2337 38.96 ms, 2248/2337 8.07 ms, 2295/2337 17.50 ms
xnnpack float          2295   4
xnnpack int8           2357   4     2355/2357 22.91 ms, 2355/2357 4.26 ms, all 10.52 ms
npu int8               2219   4     all: 23.79 ms, 4.39 ms, 6.79 ms
=====================  =====  ====  =================================================

Before, Vela left on the CPU the channel MEANs (17 in lhp-small), the depthwise pools of
stride 4 and 8 (16) and the x4 and x8 half-pixel resizes (U85: the MEANs only); the xnnpack
form leaves only the two resizes. Op types, lhp-small int8 before: CONV 176, RESHAPE 154,
CONCATENATION 131, MUL 102, DEPTHWISE 83, LOGISTIC 81, MEAN 68, ADD 40, SPLIT 35,
TRANSPOSE 35 (rank 5), SLICE 34, QUANTIZE 12, RESIZE_BILINEAR 6; xnnpack int8: CONV 206,
CONCATENATION 129, RESHAPE 126, MUL 102, DEPTHWISE 95, LOGISTIC 81, MEAN 51, ADD 40, SPLIT 35,
SLICE 34, TRANSPOSE 22 (rank 4), QUANTIZE 12, RESIZE_BILINEAR 6.

Tried and not adopted (timed alone, LiteRT, 1 thread): the CCW nearest-upsample-then-multiply
as one broadcasting MUL over a (h, s, w, s*C) view (within +-10%, no gain); SCAF's two-way
broadcast MUL as a 1 -> C constant conv then a one-way MUL (15-55% slower).

Float deploy graph vs Keras: max abs difference 4e-7 (lhp-small) and 1e-7 (lhp-large) on
heatmaps; the int8 heatmap error against the float model is unchanged by the rewrites (mean
9.2e-3 vs 9.3e-3 small, 3.0e-3 both large).

Latency, LiteRT 2.3, 1 thread, XNNPACK, one process, rounds interleaved with MediaPipe's
face_landmark.tflite (p50 ratio to it; 300 rounds small, 200 large; loaded 2-core x86):
lhp-small int8 1.29x before -> 1.03x xnnpack form (npu form 1.07x), float 1.01x -> 0.88x;
lhp-large int8 3.75x -> 2.84x, float 3.00x -> 2.49x. Int8 / float: 1.28x -> 1.17x (small),
1.25x -> 1.14x (large): x86's int8 kernels remain slower than float on these narrow shapes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from lhp_tf.errors import LhpError
from lhp_tf.kinds import DEPLOY_TARGETS

TARGETS = DEPLOY_TARGETS
#: what `lhp convert` and the quantisation tools build unless told otherwise: the CPU form
DEFAULT_TARGET = "xnnpack"
#: XNNPACK's AMX int8 GEMM works in tiles of this many output channels ...
AMX_COLUMNS = 64
#: ... by this many output pixels: a 1x1 conv costs about the same for any width up to 64
#: channels (24x24 map: 8 -> 8 10.2 us, 64 -> 64 10.6 us, 128 -> 128 20.2 us), so target
#: ``amx`` packs neighbouring pixels of narrow convs into one GEMM row (:func:`_pack_factor`)
AMX_ROWS = 16
#: ... on maps at least this large (12x12 with 24 channels: 6.7 -> 5.4 us packed in pairs)
AMX_MIN_PIXELS = 144
#: Integer graphs for these targets multiply maps of at least ROW_MUL_MIN_PIXELS pixels by
#: per-channel weights one row at a time (:func:`_row_broadcast_mul`)
ROW_MUL_TARGETS = ("xnnpack", "amx")
ROW_MUL_MIN_PIXELS = 576
#: Graphs for these targets (float and integer) take CCW's cross-resolution weights repeated
#: along width from their conv and multiply them row by row (:class:`UpsampledWeights`)
TILED_WEIGHT_TARGETS = ("xnnpack", "amx")
#: The widest stride of one depthwise step of an average pool in integer graphs: Vela takes
#: depthwise strides 1-3 only; XNNPACK's int8 depthwise conv is cheaper as a 4x4 stride-4
#: step than as two 2x2 ones, and an 8x8 stride-8 one is 10x slower (the module docs)
POOL_MAX_STEP = {"xnnpack": 4, "amx": 4, "npu": 2}
#: On CPUs channel shuffles up to this many channels become a 1x1 permutation conv, wider ones
#: stay a rank-4 transpose (float graphs; integer graphs); on NPUs every shuffle becomes a conv.
SHUFFLE_CONV_MAX_CHANNELS = {"float": 32, "integer": 160}
#: A CCW block pair of an integer graph ends in one fixed permutation of its branch
#: (:func:`_paired_ccw`): a 1x1 permutation conv, or from this many channels on one
#: :class:`~lhp_tf.model.ops.QuarterInterleave` transpose. One-op toys, int8, LiteRT, 1 thread,
#: an AVX2 x86 CPU without VNNI or AMX (us, conv vs transpose, ~3 us of invoke included):
#: 24@24x24 20.6 vs 32.4, 48@12x12 14.3 vs 11.0, 96@6x6 11.3 vs 5.5, 192@3x3 10.3 vs 3.5 (a
#: permutation conv does C multiply-accumulates per value, which such CPUs pay in full). AMX
#: runs the conv in tiles of 64 channels (the ``amx`` form keeps it) and Vela estimates
#: transposes slower than convs (the ``npu`` form keeps it).
PAIR_TRANSPOSE_MIN_CHANNELS = {"xnnpack": 48, "amx": 1 << 30, "npu": 1 << 30}

#: SCAF's channel means stay MEAN ops in the graphs for these targets, a pooled one one MEAN
#: over a rank-4 view (:class:`~lhp_tf.model.ops.PooledChannelMean`); the ``npu`` form makes
#: them convs (Vela refuses MEAN over depth)
MEAN_OP_TARGETS = ("xnnpack", "amx")

#: Integer CPU graphs run a 3x3 stride-2 conv on a map this narrow (the stem's on the image)
#: with each row's pixel pairs as one pixel (:func:`_column_pair_conv`) ...
COLUMN_PAIR_MAX_CHANNELS = 4
#: ... for these targets (``amx`` computes its stem on space-to-depth blocks instead)
COLUMN_PAIR_TARGETS = ("xnnpack",)

_SCAF_MUL = re.compile(r"^(fusion_.*_\d+from\d+)_mul$")
_SCAF_PATH = re.compile(r"^(fusion_.*)_(\d+)from\d+$")
_CCW_SHUFFLE = re.compile(r"^(ccw_s\d+m\d+)b(\d+)_shuffle(\d+)$")


def _producer(tensor: Any) -> Any:
    return tensor._keras_history.operation


def _pool_factor(layer: Any, keras: Any) -> int | None:
    """k for a k x k / stride k average pool, in either of its two forms; else None."""
    if type(layer) is keras.layers.AveragePooling2D:
        pool, strides = tuple(layer.pool_size), tuple(layer.strides)
        if pool == strides and pool[0] == pool[1] and layer.padding == "valid":
            return int(pool[0])
        return None
    if type(layer) is keras.layers.DepthwiseConv2D and not layer.use_bias:
        k = tuple(layer.kernel_size)
        if k == tuple(layer.strides) and k[0] == k[1] and layer.padding == "valid" and k[0] > 1:
            w = np.asarray(layer.get_weights()[0])
            if np.allclose(w, 1.0 / (k[0] * k[0]), rtol=0, atol=1e-7):
                return int(k[0])
    return None


def _fixed(layer: Any, x: Any, weights: list[np.ndarray]) -> Any:
    """Call a new constant layer on ``x`` and set its weights."""
    y = layer(x)
    layer.set_weights([w.astype(np.float32) for w in weights])
    return y


def _pack_factor(shape: Any, cin: int, cout: int) -> int:
    """How many neighbouring pixels of a row an ``amx`` 1x1 conv takes as one (1: none): the g
    with the fewest AMX tiles, ceil(pixels / 16 g) x ceil(g x channels / 64), on maps of at
    least :data:`AMX_MIN_PIXELS` (toys, int8 us for the conv plus a conv feeding it, g = 1 / 2 /
    3 / 4: 24x24x12 23.0 / 17.7 / - / 14.7; 24x24x24 19.1 / 15.0 / 16.0; 24x24x40 20.1 / - /
    16.7; 12x12x48 5.4 / 5.5 / 5.5, as the tile count says)."""
    _, h, w, _ = (int(d) for d in shape)
    if h * w < AMX_MIN_PIXELS:
        return 1
    tiles = {g: -(-h * w // (g * AMX_ROWS)) * -(-g * max(cin, cout) // AMX_COLUMNS) for g in (1, 2, 3, 4) if w % g == 0}
    return min(tiles, key=lambda g: (tiles[g], g))


def _pointwise(x: Any, kernel: np.ndarray, bias: np.ndarray | None, name: str, keras: Any, pack: bool) -> Any:
    """A constant 1x1 conv; with ``pack``, on a (H, W/g, g*C) view of ``x`` with g copies of the
    kernel on the diagonal (:func:`_pack_factor`): the same int8 values (every output channel
    keeps its weights and so its per-channel scale), g times fewer GEMM rows."""
    cin, cout = kernel.shape[-2:]
    g = _pack_factor(x.shape, cin, cout) if pack else 1
    weights = [kernel] if bias is None else [kernel, bias]
    if g == 1:
        conv = keras.layers.Conv2D(cout, 1, use_bias=bias is not None, trainable=False, name=name)
        return _fixed(conv, x, weights)
    _, h, w, _ = (int(d) for d in x.shape)
    view = keras.layers.Reshape((h, w // g, g * cin), name=f"{name}_packed")(x)
    packed = [np.kron(np.eye(g, dtype=np.float32), kernel[0, 0])[None, None]]
    if bias is not None:
        packed.append(np.tile(bias, g))
    conv = keras.layers.Conv2D(g * cout, 1, use_bias=bias is not None, trainable=False, name=name)
    return keras.layers.Reshape((h, w, cout), name=f"{name}_unpacked")(_fixed(conv, view, packed))


def shuffle_permutation(channels: int, groups: int) -> np.ndarray:
    """Output channel o of a ``groups``-way channel shuffle reads input channel perm[o]."""
    per = channels // groups
    return np.array([b * per + a for a in range(per) for b in range(groups)])


def _shuffle_conv(x: Any, groups: int, name: str, keras: Any, pack: bool = False) -> Any:
    c = int(x.shape[-1])
    kernel = np.zeros((1, 1, c, c), np.float32)
    kernel[0, 0, shuffle_permutation(c, groups), np.arange(c)] = 1.0
    return _pointwise(x, kernel, None, name, keras, pack)


def _mean_conv(x: Any, name: str, keras: Any) -> Any:
    c = int(x.shape[-1])
    return _pointwise(x, np.full((1, 1, c, 1), 1.0 / c, np.float32), None, name, keras, pack=False)


def _mean_pool_conv(x: Any, k: int, name: str, keras: Any) -> Any:
    """SCAF's channel mean then a k x k average pool as one k x k stride-k conv C -> 1 with
    weights 1/(k^2 C): in int8 on XNNPACK a 1x1 conv costs about the same per pixel whatever
    its channels, so computing the mean at the pooled size is k^2 times cheaper."""
    c = int(x.shape[-1])
    conv = keras.layers.Conv2D(1, k, strides=k, padding="valid", use_bias=False, trainable=False, name=name)
    return _fixed(conv, x, [np.full((k, k, c, 1), 1.0 / (k * k * c), np.float32)])


def _average_step(x: Any, s: int, name: str, keras: Any) -> Any:
    """An s x s stride-s average as a depthwise conv with taps 1/s^2 (exact in int8: per-channel
    weights make the one tap value 127 steps)."""
    dw = keras.layers.DepthwiseConv2D(s, strides=s, padding="valid", use_bias=False, trainable=False, name=name)
    return _fixed(dw, x, [np.full((s, s, int(x.shape[-1]), 1), 1.0 / (s * s), np.float32)])


def _pool(x: Any, k: int, name: str, stepped: bool, keras: Any, max_step: int = 2) -> Any:
    """k x k average pool: AVERAGE_POOL_2D, or depthwise steps of stride up to ``max_step``
    (widest first) when ``stepped``."""
    if not stepped:
        return keras.layers.AveragePooling2D(k, name=name)(x)
    if k & (k - 1):
        raise LhpError(f"{name}: cannot split a {k}x{k} pool into 2x2 steps (not a power of two)")
    step = 0
    while k > 1:
        s = min(k, max_step)
        x = _average_step(x, s, name if k == s else f"{name}_step{step}", keras)
        k //= s
        step += 1
    return x


def _global_pool(x: Any, name: str, keras: Any) -> Any:
    """A keepdims global average pool as depthwise convs: 2x2 stride-2 steps while the map
    halves evenly, then one VALID conv over what is left (e.g. 24x24 -> 12 -> 6 -> 3 -> 1).
    Uniform taps quantise exactly (per-channel int8: the tap is the channel's maximum)."""
    h, w, c = (int(d) for d in x.shape[1:])
    step = 0
    while h % 2 == 0 and w % 2 == 0 and (h, w) != (2, 2):
        x = _average_step(x, 2, f"{name}_step{step}", keras)
        h, w, step = h // 2, w // 2, step + 1
    if h * w == 1:
        return x
    dw = keras.layers.DepthwiseConv2D((h, w), padding="valid", use_bias=False, trainable=False, name=name)
    return _fixed(dw, x, [np.full((h, w, c, 1), 1.0 / (h * w), np.float32)])


def _consumer_counts(model: Any) -> dict[int, int]:
    """How many layer calls read each tensor (by id), over every call of the model's layers."""
    consumers: dict[int, int] = {}
    for layer in model.layers:
        for node in layer._inbound_nodes:
            for t in node.input_tensors:
                consumers[id(t)] = consumers.get(id(t), 0) + 1
    return consumers


def _upsample_then_multiply(model: Any, keras: Any, upsample: type) -> dict[str, tuple[Any, int]]:
    """``{Multiply name: (the nearest upsample feeding it, its input position)}`` where a
    two-input Multiply reads a full-size tensor and a nearest upsample of a smaller one that
    feeds nothing else (and is not a model output)."""
    consumers = _consumer_counts(model)
    outputs = {id(t) for t in model.outputs}
    pairs = {}
    for layer in model.layers:
        if type(layer) is not keras.layers.Multiply or not layer._inbound_nodes:
            continue
        ins = list(layer._inbound_nodes[0].input_tensors)  # its call in ``model`` (later deploys add nodes)
        ups = [i for i, t in enumerate(ins) if isinstance(_producer(t), upsample)]
        if len(ins) != 2 or len(ups) != 1:
            continue
        i = ups[0]
        up = _producer(ins[i])
        if (up.factor > 1 and consumers.get(id(ins[i])) == 1 and id(ins[i]) not in outputs
                and tuple(ins[1 - i].shape) == tuple(ins[i].shape)):
            pairs[layer.name] = (up, i)
    return pairs


def _broadcast_upsample_mul(x: Any, w: Any, s: int, name: str, keras: Any) -> Any:
    """``x * nearest_upsample(w, s)`` without the full upsample: ``w`` is repeated along width
    only (copies at 1/s of the rows), and the product broadcasts over the s rows each row of
    ``w`` covers, on a rank-4 view (1, h, s, W*C) of ``x``. Exact; its Vela figures are in
    the module docs."""
    _, hh, ww, c = (int(d) for d in x.shape)
    h = hh // s
    w = _nearest_along(w, s, 2, f"{name}_cols", keras)
    w = keras.layers.Reshape((h, 1, ww * c), name=f"{name}_rows")(w)
    view = keras.layers.Reshape((h, s, ww * c), name=f"{name}_view")(x)
    y = keras.layers.Multiply(name=f"{name}_bcast_mul")([view, w])
    return keras.layers.Reshape((hh, ww, c), name=name)(y)


def _row_broadcast_mul(layer: Any, xs: list[Any], keras: Any) -> Any | None:
    """``x * w`` for a (1, H, W, C) map and (1, 1, 1, C) weights on a (1, H, 1, W*C) view of
    ``x`` with ``w`` repeated W times along channels (by the conv computing it,
    :func:`_row_mul_tiles`, else by concatenations: exact in int8, one scale), so the MUL
    broadcasts over H rows instead of H*W pixels; None where the shapes are
    not those or the map is under :data:`ROW_MUL_MIN_PIXELS`. XNNPACK's int8 MUL costs per
    broadcast row (24x24x12, int8: 4.8 -> 3.2 us; 24x24x20 5.9 -> 4.4; 12x12x24 2.1 -> 2.1;
    float 2.9 -> 2.5 and 3.5 -> 4.1, so int8 only)."""
    from lhp_tf.model.ops import upsample_steps

    shapes = [tuple(int(d) for d in t.shape[1:]) for t in xs]
    big = [i for i, shape in enumerate(shapes) if shape[:2] != (1, 1)]
    if len(xs) != 2 or len(big) != 1:
        return None
    x, w = xs[big[0]], xs[1 - big[0]]
    h, wd, c = shapes[big[0]]
    if h * wd < ROW_MUL_MIN_PIXELS or shapes[1 - big[0]] not in ((1, 1, c), (1, 1, wd * c)):
        return None
    if shapes[1 - big[0]] == (1, 1, c):  # not already tiled by the conv that computes it
        for k, f in enumerate(upsample_steps(wd)):
            w = keras.layers.Concatenate(name=f"{layer.name}_tile{k}")([w] * f)
    view = keras.layers.Reshape((h, 1, wd * c), name=f"{layer.name}_rows")(x)
    return keras.layers.Reshape((h, wd, c), name=f"{layer.name}_pixels")(layer([view, w]))


def _is_pointwise(conv: Any, keras: Any) -> bool:
    """A linear 1x1 stride-1 ungrouped Conv2D: what :func:`_pointwise` builds, whatever order or
    repetition of its output channels it is given."""
    return (type(conv) is keras.layers.Conv2D and tuple(conv.kernel_size) == (1, 1) and tuple(conv.strides) == (1, 1)
            and conv.activation is keras.activations.linear and conv.groups == 1)


def _row_mul_tiles(model: Any, keras: Any) -> dict[str, int]:
    """``{1x1 conv name: W}`` for the convs whose per-channel weights (through at most one
    elementwise activation, nothing else reading either) a :func:`_row_broadcast_mul` repeats
    W times along channels: the conv writes them W times itself (its output channels tiled, so
    each copy keeps its per-channel weight scale and the int8 values are the same), which saves
    the concatenations (one-pixel CONCATENATIONs cost ~0.5-1 us each in a graph run right
    after another model: ``benchmarks/op_marginal.py``)."""
    consumers = _consumer_counts(model)
    tiles = {}
    for layer in model.layers:
        if type(layer) is not keras.layers.Multiply or not layer._inbound_nodes:
            continue
        ins = list(layer._inbound_nodes[0].input_tensors)
        shapes = [tuple(int(d) for d in t.shape[1:]) for t in ins]
        small = [i for i, shape in enumerate(shapes) if shape[:2] == (1, 1)]
        if len(ins) != 2 or len(small) != 1:
            continue
        (h, wd, c), w = shapes[1 - small[0]], ins[small[0]]
        if h * wd < ROW_MUL_MIN_PIXELS or shapes[small[0]] != (1, 1, c) or consumers.get(id(w)) != 1:
            continue
        source = _producer(w)
        if type(source) is keras.layers.Activation:
            w = _input_of(source)
            source = _producer(w) if consumers.get(id(w)) == 1 else None
        if _is_pointwise(source, keras):
            tiles[source.name] = wd
    return tiles


@dataclass
class UpsampledWeights:
    """Attention weights that a conv computes at a low resolution, an activation squashes, a
    ChannelSplit parts and nearest upsamples bring to the maps they multiply (CCW's
    cross-resolution weighting): the conv writes each part's channels ``factor`` times over
    (tiled output channels keep their per-channel weight scales: the same int8 values), which
    is the part upsampled along width, so the product is one broadcast MUL over a (h, s, W*C)
    view of the map (:func:`_tiled_weights_mul`) and the upsample's CONCATENATIONs go."""

    conv: str
    #: the conv's output channels per split part, and how often each part is repeated
    sizes: list[int]
    factors: list[int]
    split: str
    ups: set[str]
    muls: dict[str, int]

    def order(self, order: np.ndarray) -> np.ndarray:
        """``order`` (the conv's output channels, position -> trained channel) with each part's
        channels repeated ``factor`` times."""
        bounds = np.cumsum([0, *self.sizes])
        return np.concatenate([np.tile(order[a:b], f) for a, b, f in zip(bounds[:-1], bounds[1:], self.factors, strict=True)])


def _upsampled_weights(model: Any, keras: Any, folded: dict[str, Any]) -> list[UpsampledWeights]:
    """Every conv -> (BN) -> activation -> ChannelSplit -> nearest upsample -> Multiply chain of
    ``model`` whose intermediate tensors feed nothing else (:class:`UpsampledWeights`)."""
    from lhp_tf.model.ops import ChannelSplit, NearestUpsample

    consumers = _consumer_counts(model)
    conv_of_bn = {bn.name: name for name, bn in folded.items()}
    by_name = {layer.name: layer for layer in model.layers}
    found: dict[str, UpsampledWeights] = {}
    for layer in model.layers:
        if type(layer) is not keras.layers.Multiply or not layer._inbound_nodes:
            continue
        ins = list(layer._inbound_nodes[0].input_tensors)
        ups = [i for i, t in enumerate(ins) if isinstance(_producer(t), NearestUpsample)]
        if len(ins) != 2 or len(ups) != 1 or tuple(ins[0].shape) != tuple(ins[1].shape):
            continue
        up = _producer(ins[ups[0]])
        part = _input_of(up)
        split = _producer(part)
        if (up.factor < 2 or consumers.get(id(ins[ups[0]])) != 1 or consumers.get(id(part)) != 1
                or type(split) is not ChannelSplit):
            continue
        act = _producer(_input_of(split))
        if type(act) is not keras.layers.Activation or consumers.get(id(_input_of(split))) != 1:
            continue
        source = _producer(_input_of(act))
        conv = by_name.get(conv_of_bn.get(source.name, source.name))
        if consumers.get(id(_input_of(act))) != 1 or not _is_pointwise(conv, keras):
            continue
        k = [i for i, t in enumerate(split._inbound_nodes[0].output_tensors) if t is part][0]
        entry = found.setdefault(split.name, UpsampledWeights(conv.name, list(split.sizes), [1] * len(split.sizes),
                                                              split.name, set(), {}))
        entry.factors[k] = up.factor
        entry.ups.add(up.name)
        entry.muls[layer.name] = up.factor
    return list(found.values())


def _tiled_weights_mul(layer: Any, xs: list[Any], factor: int, keras: Any) -> Any:
    """``x * nearest_upsample(w, factor)`` for weights ``w`` whose channels the conv computing
    them already repeats ``factor`` times (:class:`UpsampledWeights`): a (h, 1, W*C) view of
    ``w`` is the rows of the upsample, and the MUL broadcasts them over the ``factor`` rows
    each covers, on a (h, s, W*C) view of ``x``. Exact."""
    c = min(int(t.shape[-1]) for t in xs)
    big = [i for i, t in enumerate(xs) if int(t.shape[-1]) == c][0]
    x, w = xs[big], xs[1 - big]
    _, hh, ww, _ = (int(d) for d in x.shape)
    if int(w.shape[-1]) != factor * c or hh != factor * int(w.shape[1]) or ww != factor * int(w.shape[2]):
        raise LhpError(f"{layer.name}: weights {tuple(w.shape[1:])} are not a x{factor} tiling for {tuple(x.shape[1:])}")
    rows = keras.layers.Reshape((hh // factor, 1, ww * c), name=f"{layer.name}_rows")(w)
    view = keras.layers.Reshape((hh // factor, factor, ww * c), name=f"{layer.name}_view")(x)
    y = layer([view, rows] if big == 0 else [rows, view])
    return keras.layers.Reshape((hh, ww, c), name=f"{layer.name}_pixels")(y)


def bilinear_taps(factor: int) -> np.ndarray:
    """The 1-D taps that turn a nearest x``factor`` upsample into a half-pixel bilinear one."""
    return np.r_[0.5, np.ones(factor - 1), 0.5] / factor


def _nearest_along(x: Any, s: int, axis: int, name: str, keras: Any) -> Any:
    """Repeat every row (axis 1) or column (axis 2) s times: CONCATENATION + RESHAPE, exact."""
    from lhp_tf.model.ops import upsample_steps

    for k, f in enumerate(upsample_steps(s)):
        _, h, w, c = (int(d) for d in x.shape)
        y = keras.layers.Concatenate(axis=axis + 1, name=f"{name}_cat{k}")([x] * f)
        x = keras.layers.Reshape((h * f, w, c) if axis == 1 else (h, w * f, c), name=f"{name}_rep{k}")(y)
    return x


def _exact_bilinear(x: Any, s: int, name: str, keras: Any) -> Any:
    """Half-pixel bilinear x s (even s) from rank-4 ops an NPU takes (see the module docstring).

    Separable: rows first, on the narrow map, then columns, so the large intermediate is one
    (sH, s(W+2)) map instead of an (s(H+2), s(W+2)) one.
    """
    _, h, w, c = (int(d) for d in x.shape)
    crop = keras.layers.Cropping2D
    taps = bilinear_taps(s).astype(np.float32)
    x = keras.layers.Concatenate(axis=1, name=f"{name}_padh")(
        [crop(((0, h - 1), (0, 0)), name=f"{name}_top")(x), x, crop(((h - 1, 0), (0, 0)), name=f"{name}_bottom")(x)])
    x = _nearest_along(x, s, 1, f"{name}_rows", keras)
    x = crop(((s // 2, s // 2), (0, 0)), name=f"{name}_croph")(x)
    x = _fixed(keras.layers.DepthwiseConv2D((s + 1, 1), padding="valid", use_bias=False, trainable=False,
                                            name=f"{name}_v"), x, [np.tile(taps[:, None, None, None], (1, 1, c, 1))])
    x = keras.layers.Concatenate(axis=2, name=f"{name}_padw")(
        [crop(((0, 0), (0, w - 1)), name=f"{name}_left")(x), x, crop(((0, 0), (w - 1, 0)), name=f"{name}_right")(x)])
    x = _nearest_along(x, s, 2, f"{name}_cols", keras)
    x = crop(((0, 0), (s // 2, s // 2)), name=f"{name}_cropw")(x)
    return _fixed(keras.layers.DepthwiseConv2D((1, s + 1), padding="valid", use_bias=False, trainable=False,
                                               name=name), x, [np.tile(taps[None, :, None, None], (1, 1, c, 1))])


def folded_convs(model: Any) -> dict[str, Any]:
    """``{conv name: its BatchNormalization}`` for the pairs the deploy graph folds into one conv
    named as the conv."""
    from lhp_tf.model.kbackend import keras

    return _bn_after_conv(model, keras)


def _bn_after_conv(model: Any, keras: Any) -> dict[str, Any]:
    """``{conv name: the BatchNormalization it alone feeds}`` for every linear conv -> BN pair."""
    consumers = _consumer_counts(model)
    pairs = {}
    for bn in model.layers:
        if type(bn) is not keras.layers.BatchNormalization or bn.axis not in (-1, 3) or len(bn._inbound_nodes) != 1:
            continue
        x = _input_of(bn)
        conv = _producer(x)
        if (type(conv) in (keras.layers.Conv2D, keras.layers.DepthwiseConv2D) and consumers.get(id(x)) == 1
                and len(conv._inbound_nodes) == 1 and conv.activation is keras.activations.linear):
            pairs[conv.name] = bn
    return pairs


def _folded_weights(conv: Any, bn: Any, keras: Any) -> tuple[np.ndarray, np.ndarray]:
    """The kernel and bias of ``bn(conv(x))`` as one conv: scaled by gamma / sqrt(var + eps)."""
    mean, var = np.asarray(bn.moving_mean), np.asarray(bn.moving_variance)
    gamma = np.asarray(bn.gamma) if bn.scale else np.ones_like(mean)
    beta = np.asarray(bn.beta) if bn.center else np.zeros_like(mean)
    factor = gamma / np.sqrt(var + bn.epsilon)
    kernel = np.asarray(conv.kernel)
    bias = np.asarray(conv.bias) if conv.use_bias else np.zeros_like(mean)
    # Conv2D kernels end in output channels; depthwise ones in (input channel, multiplier)
    kernel = kernel * factor.reshape(kernel.shape[-2:] if type(conv) is keras.layers.DepthwiseConv2D else (-1,))
    return kernel, beta + (bias - mean) * factor


def _folded_conv(conv: Any, bn: Any, x: Any, keras: Any, pack: bool = False, inputs: np.ndarray | None = None,
                 outputs: np.ndarray | None = None, column_pairs: bool = False) -> Any:
    """``bn(conv(x))`` as one conv with bias (a 1x1 one packed as :func:`_pointwise` says);
    ``bn`` None: ``conv`` alone. ``inputs`` / ``outputs``: the conv reads its input channels and
    writes its outputs in that order (position p holds channel ``order[p]`` of the trained
    layer); a depthwise conv permutes its channels by ``inputs``."""
    if bn is not None:
        kernel, bias = _folded_weights(conv, bn, keras)
    else:
        kernel = np.asarray(conv.kernel)
        bias = np.asarray(conv.bias) if conv.use_bias else np.zeros(kernel.shape[-1], np.float32)
    if inputs is not None:
        kernel = kernel[:, :, inputs]
        if type(conv) is keras.layers.DepthwiseConv2D:
            bias = bias[inputs]
    if outputs is not None:
        kernel, bias = kernel[..., outputs], bias[outputs]
    if _is_pointwise(conv, keras):
        return _pointwise(x, kernel, bias, conv.name, keras, pack)
    if column_pairs and _column_pairs(conv, x, keras):
        return _column_pair_conv(conv, kernel, bias, x, keras)
    config = {**conv.get_config(), "use_bias": True, "trainable": False}
    return _fixed(type(conv).from_config(config), x, [kernel, bias])


def _column_pairs(conv: Any, x: Any, keras: Any) -> bool:
    """Whether :func:`_column_pair_conv` applies: a 3x3 stride-2 SAME conv (no dilation, no
    groups) on a map of at most :data:`COLUMN_PAIR_MAX_CHANNELS` channels and even width."""
    return (type(conv) is keras.layers.Conv2D and tuple(conv.kernel_size) == (3, 3) and tuple(conv.strides) == (2, 2)
            and conv.padding == "same" and tuple(conv.dilation_rate) == (1, 1) and conv.groups == 1
            and int(x.shape[-1]) <= COLUMN_PAIR_MAX_CHANNELS and x.shape[2] is not None and int(x.shape[2]) % 2 == 0)


def column_pair_kernel(kernel: np.ndarray) -> np.ndarray:
    """A 3x3 stride-2 SAME kernel ``(3, 3, C, O)`` for the (H, W/2, 2C) view of its input
    (pixel pairs of a row as one pixel): a (3, 2) stride-(2, 1) SAME kernel ``(3, 2, 2C, O)``.
    Output column j reads input columns 2j, 2j + 1 (pair j) and 2j + 2 (the first pixel of
    pair j + 1); TensorFlow's SAME pads both forms by one column on the right only."""
    k, _, c, o = kernel.shape
    paired = np.zeros((k, 2, 2 * c, o), kernel.dtype)
    paired[:, 0, :c], paired[:, 0, c:], paired[:, 1, :c] = kernel[:, 0], kernel[:, 1], kernel[:, 2]
    return paired


def _column_pair_conv(conv: Any, kernel: np.ndarray, bias: np.ndarray, x: Any, keras: Any) -> Any:
    """The stem's 3x3 stride-2 conv on a 3-channel image with each row's pixel pairs as one
    6-channel pixel (a free reshape): XNNPACK's int8 conv kernels on x86 pad every tap's input
    channels to 8, so 9 taps of 3 channels cost 72 multiply-accumulates per output where 6 taps
    of 6 channels cost 48 (the module docs). Every output channel keeps its weights (the added
    ones are zeros), so its per-channel scale and the int8 values are the same."""
    _, h, w, c = (int(d) for d in x.shape)
    view = keras.layers.Reshape((h, w // 2, 2 * c), name=f"{conv.name}_column_pairs")(x)
    config = {**conv.get_config(), "kernel_size": (3, 2), "strides": (2, 1), "use_bias": True, "trainable": False}
    return _fixed(type(conv).from_config(config), view, [column_pair_kernel(kernel), bias])


def block_kernel(kernel: np.ndarray, stride: int, fine: int, out_block: int) -> np.ndarray | None:
    """A k x k stride-``stride`` conv (TensorFlow SAME padding) rewritten for maps held in
    space-to-depth blocks: it reads ``fine`` x ``fine`` blocks (SpaceToDepth channel order
    ``(dy * fine + dx) * C + c``) and writes ``out_block`` x ``out_block`` blocks (``fine ==
    stride * out_block``), as a stride-1 SAME conv on the block grid. None where that conv
    would need more than one block of context, or any before the first block."""
    k, _, cin, cout = kernel.shape
    if fine != stride * out_block:
        raise ValueError(f"block_kernel: fine blocks {fine} != stride {stride} x out blocks {out_block}")
    pad = max(k - stride, 0) // 2  # SAME on a map divisible by the stride: the rest pads after
    offsets = [stride * p + t - pad for p in range(out_block) for t in range(k)]
    if min(offsets) < 0 or max(offsets) // fine > 1:
        return None  # a 2-wide SAME conv on the block grid pads one block after, none before
    size = max(offsets) // fine + 1
    out = np.zeros((size, size, fine * fine * cin, out_block * out_block * cout), np.float32)
    for py in range(out_block):
        for px in range(out_block):
            o = (py * out_block + px) * cout
            for ky in range(k):
                for kx in range(k):
                    r, c = stride * py + ky - pad, stride * px + kx - pad
                    i = ((r % fine) * fine + c % fine) * cin
                    out[r // fine, c // fine, i:i + cin, o:o + cout] += kernel[ky, kx]
    return out


def pair_permutations(channels: int) -> tuple[np.ndarray, np.ndarray]:
    """The two permutations of a branch's CCW block pair run without the shuffle between them
    (:func:`_paired_ccw`), for a branch of ``channels`` channels (a multiple of 4; q = C/4).

    The first block's input splits into A_lo, A_hi (the identity half's quarters) and B; its
    working half becomes Y. The second block's working half is then ``[A_hi, Y_hi]`` and
    ``half[p]`` is the channel of the shuffled order (what the trained weights expect) at
    position p of it. Its output ``[A_lo, Y_lo, Y']`` feeds one permutation conv in which true
    output channel o reads position ``out[o]``.
    """
    q = channels // 4
    half = np.concatenate([2 * np.arange(q), 2 * np.arange(q) + 1])
    identity_half = [u // 2 if u % 2 == 0 else q + u // 2 for u in range(2 * q)]
    cat = np.concatenate([identity_half, 2 * q + np.argsort(half)])
    return half, cat[shuffle_permutation(channels, 2)]


def quarter_interleave(channels: int) -> np.ndarray:
    """Output channel o of :class:`~lhp_tf.model.ops.QuarterInterleave` reads input channel
    perm[o]: ``out[4m + 2a + b] = x[(2b + a) q + m]``."""
    q = channels // 4
    return np.array([(2 * (o % 2) + (o % 4) // 2) * q + o // 4 for o in range(channels)])


def packed_pair_kernel(out: np.ndarray, g: int) -> np.ndarray:
    """The 0/1 kernel of a CCW pair's closing permutation (``out``, :func:`pair_permutations`)
    on g pixels at a time, reading the concatenation ``[A_lo, Y_lo, Y']`` made on (H, W/g, g*C)
    views: position ``g*q*part + p*width + k`` holds pixel p's channel k of a part (widths q,
    q, 2q; q = C/4); output pixel p's channel o goes to ``p*C + o``."""
    c = len(out)
    q = c // 4
    starts, widths = (0, q, 2 * q), (q, q, 2 * q)
    kernel = np.zeros((1, 1, g * c, g * c), np.float32)
    for p in range(g):
        for o, k in enumerate(out):
            part = 0 if k < q else 1 if k < 2 * q else 2
            kernel[0, 0, g * starts[part] + p * widths[part] + k - starts[part], p * c + o] = 1.0
    return kernel


def _packed_pair_permutation(x: Any, out: np.ndarray, g: int, name: str, keras: Any) -> Any:
    """The closing permutation conv of a CCW pair on the concatenation the ``amx`` form makes on
    g-pixel views (:func:`packed_pair_kernel`), unpacked to (H, W, C) after it."""
    _, h, wg, _ = (int(d) for d in x.shape)
    c = len(out)
    conv = keras.layers.Conv2D(g * c, 1, use_bias=False, trainable=False, name=name)
    y = _fixed(conv, x, [packed_pair_kernel(out, g)])
    return keras.layers.Reshape((h, wg * g, c), name=f"{name}_unpacked")(y)


def _paired_ccw(model: Any, keras: Any, folded: dict[str, Any], max_channels: int, pack: bool,
                transpose_min: int = 1 << 30, tiles: dict[str, int] | None = None,
                upsampled: dict[str, UpsampledWeights] | None = None) -> dict[str, Any]:
    """Two consecutive CCW blocks of a module without the concat, shuffle and split between them.

    Between blocks b and b+1 the graph concatenates the identity half A and the new half Y,
    shuffles (a permutation conv) and splits again: three copies of the whole branch. But the
    second block's working half is half of A and half of Y, and everything it does to that
    half is per channel or a conv on it (the attention FCs, the CRW convs, the depthwise conv):
    so the first block's input is sliced into A_lo, A_hi and B, Y is split into Y_lo and Y_hi,
    the second block works on the concatenation [A_hi, Y_hi] with its weights permuted to
    that order (:func:`pair_permutations`), and one permutation conv after ``[A_lo, Y_lo,
    Y']`` restores the order the fusion and the next module expect. The same arithmetic in
    another channel order; in int8 a same-scale group's range can move a little (it is the
    union of its members' image-averaged ranges, and the removed concatenations were members:
    trained lhp-small, min/max ranges, one fusion output's scale 0.02358 -> 0.02330).
    Returns the :func:`deploy_model` call overrides keyed by layer name; branches wider than
    ``max_channels`` (whose shuffle stays a transpose) or not a multiple of 4 keep their form
    (pairing lhp-small's 192-channel branch as well, closed by the transpose below, measured no
    faster on an AVX2 CPU: in-process loop). From ``transpose_min`` channels on the closing
    permutation is one transpose (:class:`~lhp_tf.model.ops.QuarterInterleave`,
    :data:`PAIR_TRANSPOSE_MIN_CHANNELS`): the concatenation ``[A_lo, Y_lo, Y']`` holds, quarter
    by quarter, the true outputs 4m, 4m + 2, 4m + 1 and 4m + 3 (checked against
    :func:`pair_permutations` when the graph is built).
    XNNPACK copies channel slices pixel by pixel, so the slices and the 3-way concatenation
    cost about what they save (per op, cut out and timed as ``benchmarks/op_profile.py`` does,
    24x24 map: 3 slices 5.1 us against a 2-way split 2.6; the
    concatenation of 6 + 6 + 12 channels 4.5 us against 12 + 12 2.8): lhp-small's 24-channel
    branch saves ~1.3 us per pair, and the whole graph 2 % (lhp-large 4.5 %; ad-hoc in-process
    loop, amx form). The ``amx`` form concatenates ``[A_lo, Y_lo, Y']`` on the views (H, W/g,
    g*C) its packed permutation conv reads (:func:`packed_pair_kernel`: the conv's weights take
    the parts in that order), so each copied run is g pixels long: trained lhp-small,
    ``benchmarks/op_profile.py --models before=A after=B``, the 24x24 concatenation 5.1 -> 2.2
    us, CONCATENATION summed 99.1 -> 82.8 us; whole graph, in-process, 150 interleaved rounds
    with MediaPipe's model (ad-hoc script, not kept), p50 0.933 -> 0.916 ms back to back,
    1.168 -> 1.169 ms right after the other models (no difference there). The same int8 values:
    the two converted files gave identical outputs on 8 random inputs (ad hoc); the test
    checks the kernel against the plain permutation. Two SPLITs (halves, then the identity
    half's quarters) instead of the three SLICEs: 16 ops fewer in lhp-small, the same values,
    no faster (amx 1085 -> 1071 us right after another model, 854 -> 860 back to back; xnnpack
    1261 -> 1270, 1074 -> 1072; ad-hoc in-process loop).
    """
    by_name = {layer.name: layer for layer in model.layers}
    state: dict[tuple[str, int], dict[str, Any]] = {}
    rewrites: dict[str, Any] = {}
    orders: dict[str, dict[int, np.ndarray]] = {}
    for layer in model.layers:
        m = _CCW_SHUFFLE.match(layer.name)
        if not m or int(m.group(2)) % 2:
            continue
        first, second, i = f"{m.group(1)}b{m.group(2)}", f"{m.group(1)}b{int(m.group(2)) + 1}", int(m.group(3))
        names = {"split0": f"{first}_split{i}", "concat0": f"{first}_concat{i}", "split1": f"{second}_split{i}",
                 "concat1": f"{second}_concat{i}", "shuffle1": f"{second}_shuffle{i}", "dw": f"{second}_b{i}_dw",
                 "fc1": f"{second}_sw{i}_fc1_conv", "fc2": f"{second}_sw{i}_fc2_conv",
                 "conv1": f"{second}_crw_conv1_conv", "conv2": f"{second}_crw_conv2_conv"}
        c = int(layer.output.shape[-1])
        transposed = c >= transpose_min
        if (c > max_channels or c % 4 or any(n not in by_name for n in names.values())
                or layer.groups != 2 or by_name[names["shuffle1"]].groups != 2
                or any(names[k] not in folded for k in ("dw", "conv1", "conv2"))
                or any(by_name[names[k]].activation is not keras.activations.linear for k in ("fc1", "fc2"))):
            continue
        half, out = pair_permutations(c)
        orders.setdefault(second, {})[i] = half
        key = (first, i)
        q = c // 4

        def split0(x: Any, key: tuple[str, int] = key, q: int = q) -> list[Any]:
            from lhp_tf.model.ops import ChannelSplit

            a_lo, a_hi, b = ChannelSplit([q, q, 2 * q], name=f"{key[0]}_split{key[1]}")(x)
            state[key] = {"a_lo": a_lo, "a_hi": a_hi}
            return [a_lo, b]  # the identity half goes on in quarters, read by the overrides below

        def concat0(x: list[Any], key: tuple[str, int] = key) -> Any:
            state[key]["y"] = x[1]
            return x[1]

        def split1(x: Any, key: tuple[str, int] = key, q: int = q, name: str = names["split1"]) -> list[Any]:
            from lhp_tf.model.ops import ChannelSplit

            if x is not state[key]["y"]:
                raise LhpError(f"{name}: expected the output of the CCW block before it")
            y_lo, y_hi = ChannelSplit([q, q], name=name)(x)
            state[key]["y_lo"] = y_lo
            return [y_lo, keras.layers.Concatenate(name=f"{name}_working")([state[key]["a_hi"], y_hi])]

        def concat1(x: list[Any], key: tuple[str, int] = key, name: str = names["concat1"],
                    transposed: bool = transposed) -> Any:
            parts = [state[key]["a_lo"], state[key]["y_lo"], x[1]]
            h, w, c = (int(d) for d in x[1].shape[1:])
            g = 1 if transposed or not pack else _pack_factor(x[1].shape, 2 * c, 2 * c)
            state[key]["pack"] = g
            if g > 1:  # concatenated on (H, W/g, g*C) views: g pixels' channels as one run
                parts = [keras.layers.Reshape((h, w // g, g * int(t.shape[-1])), name=f"{name}_packed{k}")(t)
                         for k, t in enumerate(parts)]
            return keras.layers.Concatenate(name=name)(parts)

        def shuffle1(x: Any, out: np.ndarray = out, name: str = names["shuffle1"], transposed: bool = transposed,
                     key: tuple[str, int] = key) -> Any:
            if transposed:
                from lhp_tf.model.ops import QuarterInterleave

                if not np.array_equal(out, quarter_interleave(len(out))):
                    raise LhpError(f"{name}: the pair's closing permutation is not a quarter interleave")
                return QuarterInterleave(name=name)(x)
            g = state[key]["pack"]
            if g > 1:
                return _packed_pair_permutation(x, out, g, name, keras)
            kernel = np.zeros((1, 1, len(out), len(out)), np.float32)
            kernel[0, 0, out, np.arange(len(out))] = 1.0
            return _pointwise(x, kernel, None, name, keras, pack)

        rewrites.update({names["split0"]: split0, names["concat0"]: concat0, layer.name: lambda x: x,
                         names["split1"]: split1, names["concat1"]: concat1, names["shuffle1"]: shuffle1})
        for k, kw in (("dw", "inputs"), ("fc1", "inputs"), ("fc2", "outputs")):
            conv = by_name[names[k]]
            order = np.tile(half, (tiles or {}).get(conv.name, 1)) if kw == "outputs" else half
            rewrites[names[k]] = (lambda x, conv=conv, kw=kw, order=order:
                                  _folded_conv(conv, folded.get(conv.name), x, keras, pack, **{kw: order}))
    for second, halves in orders.items():
        widths: list[int] = []
        while f"{second}_split{len(widths)}" in by_name:
            widths.append(int(by_name[f"{second}_split{len(widths)}"].output[1].shape[-1]))
        offsets = np.cumsum([0, *widths])
        order = np.concatenate([offsets[i] + halves.get(i, np.arange(w)) for i, w in enumerate(widths)])
        for k, kw in (("conv1", "inputs"), ("conv2", "outputs")):
            conv = by_name[f"{second}_crw_{k}_conv"]
            tiled = (upsampled or {}).get(conv.name)
            written = order if tiled is None or kw == "inputs" else tiled.order(order)
            rewrites[conv.name] = (lambda x, conv=conv, kw=kw, order=written:
                                   _folded_conv(conv, folded[conv.name], x, keras, pack, **{kw: order}))
    return rewrites


def _nested_sum(layer: Any, xs: list[Any], keras: Any) -> Any:
    """SCAF's sum for one receiver with the lower-resolution terms added from the coarsest up:
    each term is the source's channel mean times the receiver's weights AT THE SOURCE'S
    resolution, and one nearest x2 upsample per level carries the running sum up (nearest
    upsampling is linear and x2 twice is x4). ``xs``: the receiver's branch first, then its
    terms, the full-size ones (from higher-resolution sources, pooled) as they are."""
    from lhp_tf.model.ops import NearestUpsample

    size = int(xs[0].shape[1])
    full = [t for t in xs if int(t.shape[1]) == size]
    coarse = sorted((t for t in xs if int(t.shape[1]) != size), key=lambda t: int(t.shape[1]))
    if not coarse:
        return layer(xs)

    def up(t: Any, to: int, name: str) -> Any:
        if to % int(t.shape[1]) or int(t.shape[1]) > to:
            raise LhpError(f"{layer.name}: a {int(t.shape[1])}-pixel SCAF term does not upsample to {to}")
        return NearestUpsample(to // int(t.shape[1]), name=name)(t) if to != int(t.shape[1]) else t

    acc = coarse[0]
    for k, t in enumerate(coarse[1:], 1):
        acc = keras.layers.Add(name=f"{layer.name}_coarse{k}")([t, up(acc, int(t.shape[1]), f"{layer.name}_up{k}")])
    return layer([*full, up(acc, size, f"{layer.name}_up")])


def _input_of(layer: Any) -> Any:
    (x,) = layer._inbound_nodes[0].input_tensors
    return x


def _s2d_stem(model: Any, keras: Any, folded: dict[str, Any]) -> dict[str, Any]:
    """The shuffle stem (:mod:`lhp_tf.model.stem`) computed on 4x4 space-to-depth blocks of the
    image, for target ``amx``: ``{layer name: what its call returns, from its input}``, or
    ``{}`` when the model's stem is not that pattern.

    On AMX an int8 conv costs per 16 output pixels whatever its width up to 64 channels (see
    the module docs), so the stem's 48x48 maps are the int8 graph's costliest part. On blocks
    every conv runs on the 24x24 grid: the 3x3 stride-2 conv writes its 48x48 output as 2x2
    blocks (a 2x2 conv, 48 -> 4C channels); each depthwise stride-2 conv and the 1x1 conv after
    it (linear, nothing between) become one 2x2 conv on those blocks; the 1x1 expand becomes
    block-diagonal. The same function up to float rounding.
    """
    from lhp_tf.model.ops import ChannelSplit, SpaceToDepth

    names = {"conv1": "stem_conv1_conv", "split": "stem_split", "dw1": "stem_branch1_dw_dw",
             "pw1": "stem_branch1_pw_conv", "expand": "stem_expand_conv", "dw2": "stem_branch2_dw_dw",
             "pw2": "stem_linear_conv"}
    layers = {layer.name: layer for layer in model.layers}
    if not all(n in layers for n in names.values()):
        return {}
    get = {key: layers[n] for key, n in names.items()}
    conv, dw = keras.layers.Conv2D, keras.layers.DepthwiseConv2D
    conv_keys = [key for key in names if key != "split"]
    shape = tuple(_input_of(get["conv1"]).shape[1:3])
    if (not all(get[k].name in folded and len(get[k]._inbound_nodes) == 1 for k in conv_keys)
            or not isinstance(get["split"], ChannelSplit) or len(get["split"].sizes) != 2
            or None in shape or shape[0] % 4 or shape[1] % 4):
        return {}
    shapes = {k: (type(get[k]), tuple(get[k].kernel_size), tuple(get[k].strides), get[k].padding)
              for k in conv_keys}
    stride2 = (dw, (3, 3), (2, 2), "same")
    pointwise = (conv, (1, 1), (1, 1), "valid")
    if (shapes["conv1"] != (conv, (3, 3), (2, 2), "same") or shapes["dw1"] != stride2 or shapes["dw2"] != stride2
            or any(shapes[k] not in (pointwise, (conv, (1, 1), (1, 1), "same")) for k in ("pw1", "expand", "pw2"))
            or get["dw1"].depth_multiplier != 1 or get["dw2"].depth_multiplier != 1):
        return {}
    halves = list(get["split"]._inbound_nodes[0].output_tensors)
    if (_input_of(get["dw1"]) is not halves[0] or _input_of(get["expand"]) is not halves[1]
            or _producer(_input_of(get["pw1"])) is not folded[get["dw1"].name]
            or _producer(_input_of(get["pw2"])) is not folded[get["dw2"].name]):
        return {}
    weights = {k: _folded_weights(get[k], folded[get[k].name], keras) for k in conv_keys}
    channels = int(get["conv1"].filters)
    first, second = (np.arange(channels) < get["split"].sizes[0]), (np.arange(channels) >= get["split"].sizes[0])

    def merged(dw_key: str, pw_key: str, rows: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """The depthwise conv and the 1x1 after it as one 3x3 kernel (on the rows' channels)."""
        (dk, db), (pk, pb) = weights[dw_key], weights[pw_key]
        kernel = dk[:, :, :, 0, None] * pk[0, 0][None, None]
        if rows is not None:
            full = np.zeros((*kernel.shape[:2], rows.size, kernel.shape[-1]), np.float32)
            full[:, :, rows] = kernel
            kernel = full
        return kernel, pb + db @ pk[0, 0]

    def block_conv(name: str, kernel: np.ndarray, bias: np.ndarray, stride: int, fine: int, out: int) -> Any:
        coarse = block_kernel(kernel, stride, fine, out)
        if coarse is None:  # cannot happen for the 3x3 / 1x1 SAME convs checked above
            raise LhpError(f"{name}: no space-to-depth form")
        layer = keras.layers.Conv2D(coarse.shape[-1], coarse.shape[0], padding="same", trainable=False, name=name)
        return lambda x: _fixed(layer, x, [coarse, np.tile(bias, out * out)])

    expand_kernel, expand_bias = weights["expand"]
    embedded = np.zeros((1, 1, channels, expand_kernel.shape[-1]), np.float32)
    embedded[:, :, second] = expand_kernel
    conv1 = block_conv(get["conv1"].name, *weights["conv1"], 2, 4, 2)
    return {
        get["conv1"].name: lambda x: conv1(SpaceToDepth(4, name="stem_space_to_depth")(x)),
        get["split"].name: lambda x: [x, x],  # both branches read every block channel; their kernels pick
        get["dw1"].name: block_conv(get["pw1"].name, *merged("dw1", "pw1", first), 2, 2, 1),
        get["pw1"].name: lambda x: x,
        get["expand"].name: block_conv(get["expand"].name, embedded, expand_bias, 1, 2, 2),
        get["dw2"].name: block_conv(get["pw2"].name, *merged("dw2", "pw2", None), 2, 2, 1),
        get["pw2"].name: lambda x: x,
    }


def _summed_head(model: Any, keras: Any) -> dict[str, Any]:
    """The MR head (1x1 conv to K maps per branch, bilinear upsample, sum) as one 1x1 conv over
    the concatenated, upsampled branches, for target ``amx``: ``{layer name: what its call
    returns, from its input}``, or ``{}`` when the model has no such head.

    A 1x1 conv commutes with a bilinear resize (its taps sum to 1, so the bias passes too), so
    ``sum_i up_i(conv_i(x_i)) = conv(concat_i(up_i(x_i)))`` with the kernels stacked and the
    biases summed: one int32 accumulation and one rounding instead of requantising ADDs of K
    maps at full size. A resize costs about its output channels (RESIZE_BILINEAR to 24x24,
    int8: 15 us for 68 channels), a branch kept apart its conv, a K-channel resize and an ADD
    of K maps (7.8 us), so branches up to 2K channels are resized first and wider ones keep
    their conv and are added after (lhp-large's 160 and 320). Wider branches are not fed to
    the sum conv through identity rows: the concatenation would give their logits and the
    other branches' features one int8 scale (lhp-small, 20 epochs, held-out drift +0.055 that
    way vs +0.039 with all four branches resized first).
    """
    layers = {layer.name: layer for layer in model.layers}
    add = layers.get("head_out_sum")
    if (type(add) is not keras.layers.Add or len(add._inbound_nodes) != 1
            or len(add._inbound_nodes[0].input_tensors) > 4):  # XNNPACK concatenates up to 4 inputs
        return {}
    consumers = _consumer_counts(model)
    plan: dict[str, Any] = {}
    rows: list[np.ndarray] = []
    summed: list[int] = []  # positions of the Add's inputs that are resized branches
    width, bias = None, np.float32(0.0)
    for k, term in enumerate(add._inbound_nodes[0].input_tensors):
        up = _producer(term)
        if type(up) is keras.layers.UpSampling2D:
            if up.interpolation != "bilinear" or len(up._inbound_nodes) != 1:
                return {}
            term = _input_of(up)
        conv = _producer(term)
        if (type(conv) is not keras.layers.Conv2D or tuple(conv.kernel_size) != (1, 1) or not conv.use_bias
                or conv.activation is not keras.activations.linear or len(conv._inbound_nodes) != 1
                or consumers.get(id(term)) != 1):
            return {}
        kernel, b = np.asarray(conv.kernel)[0, 0], np.asarray(conv.bias)
        if width not in (None, kernel.shape[1]):
            return {}
        width = kernel.shape[1]
        if kernel.shape[0] <= 2 * width:
            plan[conv.name] = lambda x: x
            rows.append(kernel)
            bias = bias + b
            summed.append(k)
    if not summed:
        return {}
    kernel = np.concatenate(rows)[None, None]

    def head_sum(xs: list[Any]) -> Any:
        parts = [xs[k] for k in summed]
        y = keras.layers.Concatenate(name="head_out_concat")(parts) if len(parts) > 1 else parts[0]
        conv = keras.layers.Conv2D(int(width), 1, trainable=False, name="head_out_conv")
        y = _fixed(conv, y, [kernel, np.asarray(bias, np.float32)])
        rest = [x for k, x in enumerate(xs) if k not in summed]
        return keras.layers.Add(name=add.name)([y, *rest]) if rest else y

    plan[add.name] = head_sum
    return plan


def deploy_model(model: Any, target: str = "xnnpack", quant: str = "float", batch_size: int | None = None,
                 layout_rewrites: bool = True) -> Any:
    """``model`` restructured for ``target`` ("xnnpack": CPU; "amx": x86 CPUs whose XNNPACK runs
    int8 on AMX; "npu": Ethos-U class NPUs) and
    ``quant`` ("float", "int8", "int16x8"); same function (float: within 1e-4 on heatmaps).

    ``layout_rewrites=False`` leaves out the rewrites that only lay the same int8 values out
    differently (the CCW pairs, the stem's pixel pairs, row-wise MULs, attention weights tiled
    by their convs, the amx forms): every
    trained conv then appears once, as itself or folded with its BatchNorm
    (:func:`folded_convs`), which is what QAT on the deploy graph trains
    (:mod:`lhp_tf.quantize.deploy_qat`).

    ``model`` must be a functional Keras model built by :mod:`lhp_tf.model`, with or without
    the heatmap activation, at batch 1 or re-called here on a ``batch_size`` input (the
    trained model's dynamic batch). Trained layers are shared with ``model``, except convs
    followed by BatchNorm: those become new frozen convs holding the folded weights.
    """
    from lhp_tf.model.kbackend import keras
    from lhp_tf.model.ops import (
        ChannelMean,
        ChannelShuffle,
        ChannelSplit,
        NearestUpsample,
        PooledChannelMean,
    )

    if target not in TARGETS:
        raise LhpError(f"--target {target!r}: expected one of {', '.join(TARGETS)}")
    stepped_pools = target == "npu" or quant != "float"
    mean_ops = target in MEAN_OP_TARGETS
    shuffle_conv_max = SHUFFLE_CONV_MAX_CHANNELS["float" if quant == "float" else "integer"]

    # SCAF's terms from lower-resolution sources multiply at the source's size and are summed
    # from the coarsest up (:func:`_nested_sum`); their upsamples are deferred to it
    by_name = {layer.name: layer for layer in model.layers}
    nested_ups: set[str] = set()
    nested_adds: set[str] = set()
    for layer in model.layers:
        m = _SCAF_MUL.match(layer.name)
        if m and type(layer) is keras.layers.Multiply and isinstance(by_name.get(f"{m.group(1)}_up"), NearestUpsample):
            nested_ups.add(f"{m.group(1)}_up")
            nested_adds.add(_SCAF_PATH.sub(r"\1_\2_add", m.group(1)))
    # SCAF paths in the paper's order (mean * w, then resize): decided on the original graph
    resize_of: dict[str, Any] = {}
    for layer in model.layers:
        m = _SCAF_MUL.match(layer.name)
        if not m or type(layer) is not keras.layers.Multiply or f"{m.group(1)}_up" in nested_ups:
            continue
        sources = [_producer(t) for t in layer._inbound_nodes[0].input_tensors]
        means = [i for i, s in enumerate(sources) if isinstance(s, ChannelMean)]
        if len(sources) != 2 or len(means) != 1:
            continue  # already resize-first
        names = {f"{m.group(1)}_up", f"{m.group(1)}_down"}
        follow = [lay for lay in model.layers if lay.name in names]
        if len(follow) != 1:
            raise LhpError(f"{layer.name}: expected one resize layer after it ({' or '.join(sorted(names))})")
        resize_of[layer.name] = (follow[0], means[0])
    moved = {lay.name for lay, _ in resize_of.values()}
    # NPU: products with a nearest-upsampled map (CCW's attention weights) broadcast instead
    upsampled_mul = _upsample_then_multiply(model, keras, NearestUpsample) if target == "npu" else {}
    deferred = {up.name for up, _ in upsampled_mul.values()}
    folded = _bn_after_conv(model, keras)
    folded_bns = {bn.name for bn in folded.values()}
    # int8 on AMX: fewer, wider GEMMs (see the module docs)
    amx = (target, quant) == ("amx", "int8") and layout_rewrites
    column_pairs = target in COLUMN_PAIR_TARGETS and quant == "int8" and layout_rewrites
    row_muls = target in ROW_MUL_TARGETS and quant == "int8" and layout_rewrites
    rewrites = {**_s2d_stem(model, keras, folded), **_summed_head(model, keras)} if amx else {}
    tiles = _row_mul_tiles(model, keras) if row_muls else {}
    tiled_weights = target in TILED_WEIGHT_TARGETS and layout_rewrites
    upsampled = {u.conv: u for u in _upsampled_weights(model, keras, folded)} if tiled_weights else {}
    tiled_splits = {u.split: u for u in upsampled.values()}
    tiled_ups = {name for u in upsampled.values() for name in u.ups}
    tiled_muls = {name: f for u in upsampled.values() for name, f in u.muls.items()}
    if quant != "float" and layout_rewrites:  # every shuffle of an NPU graph is a conv, whatever its width
        rewrites.update(_paired_ccw(model, keras, folded, 1 << 30 if target == "npu" else shuffle_conv_max, pack=amx,
                                    transpose_min=PAIR_TRANSPOSE_MIN_CHANNELS[target], tiles=tiles,
                                    upsampled=upsampled))

    # a pooled channel mean is one MEAN of the mean's input on CPUs; for an NPU one strided conv
    # from it, halved on from there for larger pools; either is shared by every pool of that mean;
    # id(mean output) -> (the output, kept so its id stays unique; its input; name; pools)
    means: dict[int, tuple[Any, Any, str, dict[int, Any]]] = {}

    def pooled_mean(x: Any, k: int) -> Any:
        _, source, name, pools = means[id(x)]
        if k not in pools:
            if mean_ops:
                pools[k] = PooledChannelMean(k, name=f"{name}_pool{k}")(source)
            elif k == 2 or k & (k - 1):
                pools[k] = _mean_pool_conv(source, k, f"{name}_pool{k}", keras)
            else:
                pools[k] = _average_step(pooled_mean(x, k // 2), 2, f"{name}_pool{k}", keras)
        return pools[k]

    def resize(layer: Any, x: Any) -> Any:
        k = _pool_factor(layer, keras)
        if k is not None and (stepped_pools or mean_ops) and id(x) in means:
            return pooled_mean(x, k)
        if k is not None:
            return _pool(x, k, layer.name, stepped_pools, keras, POOL_MAX_STEP[target])
        return layer(x)

    def scaf_mul(layer: Any, a: Any, b: Any) -> Any:
        """SCAF's (h, w, 1) x (1, 1, C) product; for an NPU the map first becomes C channels
        through a constant 1x1 conv of ones (exact), so the MUL broadcasts one way only."""
        if target == "npu":
            (m, w) = (a, b) if int(a.shape[-1]) == 1 else (b, a)
            c = int(w.shape[-1])
            if int(m.shape[-1]) == 1 and tuple(w.shape[1:3]) == (1, 1) and c > 1:
                ones = keras.layers.Conv2D(c, 1, use_bias=False, trainable=False, name=f"{layer.name}_bcast")
                return layer([_fixed(ones, m, [np.ones((1, 1, 1, c), np.float32)]), w])
        return layer([a, b])

    def call(layer: Any, *args: Any, **kwargs: Any) -> Any:
        x = args[0]
        if layer.name in rewrites:
            return rewrites[layer.name](x)
        if layer.name in tiles:  # its weights, repeated along channels for a row-wise MUL
            order = np.tile(np.arange(layer.filters), tiles[layer.name])
            return _folded_conv(layer, folded.get(layer.name), x, keras, outputs=order)
        if layer.name in upsampled:  # each part's weights repeated along channels: upsampled along width
            order = upsampled[layer.name].order(np.arange(layer.filters))
            return _folded_conv(layer, folded.get(layer.name), x, keras, pack=amx, outputs=order)
        if layer.name in tiled_splits:
            u = tiled_splits[layer.name]
            return ChannelSplit([c * f for c, f in zip(u.sizes, u.factors, strict=True)], name=layer.name)(x)
        if layer.name in tiled_ups:
            return x  # its input is already repeated along width; the MUL broadcasts it over rows
        if layer.name in tiled_muls:
            return _tiled_weights_mul(layer, x, tiled_muls[layer.name], keras)
        if layer.name in resize_of:
            follow, i = resize_of[layer.name]
            return scaf_mul(layer, resize(follow, x[i]), x[1 - i])
        if _SCAF_MUL.match(layer.name) and type(layer) is keras.layers.Multiply and len(x) == 2:
            return scaf_mul(layer, *x)
        if layer.name in upsampled_mul:
            up, i = upsampled_mul[layer.name]  # x[i] is the upsample's input: it was deferred
            return _broadcast_upsample_mul(x[1 - i], x[i], up.factor, layer.name, keras)
        if layer.name in deferred:
            return x  # upsampled inside the multiply it feeds
        if layer.name in moved:
            return x  # applied before the multiply
        if layer.name in nested_ups:
            return x  # upsampled in the receiver's nested sum
        if layer.name in nested_adds:
            return _nested_sum(layer, x, keras)
        if layer.name in folded:
            return _folded_conv(layer, folded[layer.name], x, keras, pack=amx, column_pairs=column_pairs)
        if layer.name in folded_bns:
            return x  # folded into the conv before it
        if isinstance(layer, ChannelShuffle) and (target == "npu" or int(x.shape[-1]) <= shuffle_conv_max):
            return _shuffle_conv(x, layer.groups, layer.name, keras, pack=amx)
        if isinstance(layer, ChannelMean):  # left out of the graph when only pools read it
            y = layer(x) if mean_ops else _mean_conv(x, layer.name, keras)
            means[id(y)] = (y, x, layer.name, {})
            return y
        if target == "npu" and type(layer) is keras.layers.GlobalAveragePooling2D and layer.keepdims:
            return _global_pool(x, layer.name, keras)
        if _pool_factor(layer, keras) is not None:
            return resize(layer, x)
        if (target == "npu" and type(layer) is keras.layers.UpSampling2D
                and layer.interpolation == "bilinear"):
            s = tuple(layer.size)
            if s[0] != s[1] or s[0] % 2:
                raise LhpError(f"{layer.name}: bilinear x{s} has no exact NPU form (even, square factors only)")
            if s[0] > 2:
                return _exact_bilinear(x, s[0], layer.name, keras)
        if isinstance(layer, NearestUpsample):
            return layer(x)
        if row_muls and type(layer) is keras.layers.Multiply:
            y = _row_broadcast_mul(layer, x, keras)
            if y is not None:
                return y
        return layer(*args, **kwargs)

    inputs = None
    if batch_size is not None:
        inputs = [keras.Input(batch_shape=(batch_size, *model.inputs[0].shape[1:]), name=model.inputs[0].name)]
    try:
        return keras.models.clone_model(keras.Model(model.inputs, model.outputs, name=model.name),
                                        input_tensors=inputs, clone_function=lambda layer: layer, call_function=call)
    except (ValueError, TypeError) as exc:
        raise LhpError(f"deploy graph of {model.name}: {exc}") from exc
