"""The deploy graph computes the trained function and has the structure its target needs."""

from __future__ import annotations

import os
import re

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from lhp_tf.converters.deploy import (  # noqa: E402
    PAIR_TRANSPOSE_MIN_CHANNELS,
    bilinear_taps,
    block_kernel,
    column_pair_kernel,
    deploy_model,
    packed_pair_kernel,
    pair_permutations,
    quarter_interleave,
    shuffle_permutation,
)

from lhp_tf.config import ModelConfig  # noqa: E402
from lhp_tf.errors import LhpError  # noqa: E402
from lhp_tf.model.network import build_model, with_heatmap_activation  # noqa: E402

TINY = dict(arch="lhp-small", input_size=(64, 64), channels=(8, 16, 32, 64), stem_channels=16,
            modules=(1, 1, 1), blocks=(1, 1, 1))


def randomize(model, seed: int = 0) -> None:
    """Weights with trained-like magnitudes (He-scaled convs, BN stats away from 0/1): the
    initial std of 0.001 would make every activation nearly 0 and any rewrite look exact."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        if type(layer).__name__ == "BatchNormalization":
            g, b, mean, var = (w.shape for w in weights)
            new = [rng.uniform(0.5, 1.5, g), rng.normal(0, 0.1, b), rng.normal(0, 0.2, mean), rng.uniform(0.5, 2, var)]
        else:
            new = []
            for w in weights:
                fan = np.prod(w.shape[:2]) if type(layer).__name__ == "DepthwiseConv2D" else np.prod(w.shape[:-1])
                new.append(rng.normal(0, np.sqrt(2 / fan), w.shape) if w.ndim > 1 else rng.normal(0, 0.1, w.shape))
        layer.set_weights([w.astype(np.float32) for w in new])


@pytest.fixture(scope="module", params=[False, True], ids=["paper-order", "resize-first"])
def trained(request):
    model = build_model(ModelConfig(**TINY, scaf_resize_first=request.param), 98, batch_size=1)
    randomize(model)
    return model


def _images(n: int = 2) -> np.ndarray:
    return np.random.default_rng(1).random((n, 64, 64, 3), dtype=np.float32)


def test_permutation_and_taps() -> None:
    np.testing.assert_array_equal(shuffle_permutation(6, 2), [0, 3, 1, 4, 2, 5])
    np.testing.assert_allclose(bilinear_taps(4), [0.125, 0.25, 0.25, 0.25, 0.125])


@pytest.mark.parametrize("target,quant", [("xnnpack", "float"), ("xnnpack", "int8"), ("amx", "int8"), ("npu", "int8")])
def test_same_function_and_target_structure(trained, target: str, quant: str) -> None:
    from lhp_tf.model.kbackend import keras
    from lhp_tf.model.ops import (
        ChannelMean,
        ChannelShuffle,
        NearestUpsample,
        PooledChannelMean,
        SpaceToDepth,
    )

    deployed = deploy_model(trained, target, quant)
    x = _images(1)
    ref = np.asarray(trained(x, training=False))
    got = np.asarray(deployed(x, training=False))
    assert np.abs(ref).max() > 1.0  # real activations, not ~0
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
    layers = deployed.layers
    # narrow shuffles became permutation convs (up to 32 channels in float, 160 in int8), wide
    # ones stay the (rank-4) layer
    wide = [int(la.output.shape[-1]) for la in layers if isinstance(la, ChannelShuffle)]
    assert wide == ([64] if (target, quant) == ("xnnpack", "float") else [])
    pools = [la for la in layers if type(la) is keras.layers.AveragePooling2D]
    strides = [max(la.strides) for la in layers if type(la) is keras.layers.DepthwiseConv2D]
    if quant == "float" and target == "xnnpack":
        assert pools and max(strides) == 2  # AVERAGE_POOL_2D kept in float; stride-2 depthwise of the backbone
    else:  # pools became depthwise steps: 2x2 for an NPU (Vela's stride limit), 4x4 first on CPUs
        assert not pools and max(strides) == (2 if target == "npu" else 4)
    # SCAF's channel means: on CPUs MEAN ops, a pooled one a single MEAN over a view of the
    # mean's input; for an NPU (no MEAN over depth) 1x1 convs, a pooled one a strided conv from
    # the mean's input. Either way the top branch's full-size mean, read only by pools, is gone
    mean_ops = [la.name for la in layers if isinstance(la, ChannelMean)]
    mean_pools = [la.name for la in layers if isinstance(la, PooledChannelMean)]
    mean_convs = [la.name for la in layers if type(la) is keras.layers.Conv2D and la.filters == 1
                  and tuple(la.kernel_size) == (1, 1) and re.search(r"_mean\d+$", la.name)]
    pooled_convs = [la for la in layers if type(la) is keras.layers.Conv2D and la.filters == 1
                    and tuple(la.kernel_size) == tuple(la.strides) == (2, 2)]
    cpu = target != "npu"
    assert (bool(mean_ops), bool(mean_pools), bool(mean_convs), bool(pooled_convs)) == (cpu, cpu, not cpu, not cpu)
    assert not [n for n in mean_ops + mean_convs if n.endswith("_mean0")], mean_ops + mean_convs
    # an NPU gets global average pools as depthwise steps (fewer Vela cycles than MEAN in lhp-small)
    gaps = [la for la in layers if type(la) is keras.layers.GlobalAveragePooling2D]
    assert bool(gaps) == (target != "npu")
    # CCW's attention weights multiply without being upsampled in full: an NPU broadcasts them;
    # CPU graphs have the conv computing them repeat each branch's weights along width, and
    # the MUL broadcasts those rows (no CONCATENATION)
    assert not [la for la in layers if isinstance(la, NearestUpsample) and "_crw_up" in la.name]
    crw_rows = [la.name for la in layers if re.search(r"_crw_mul\d+_rows$", la.name)]
    crw_cols = [la.name for la in layers if re.search(r"_crw_mul\d+_cols", la.name)]  # the NPU's width copies
    assert crw_rows and bool(crw_cols) == (target == "npu"), (crw_rows, crw_cols)
    # every conv -> BN pair is one conv with bias
    assert not [la for la in layers if type(la) is keras.layers.BatchNormalization]
    # int8 on AMX: the stem runs on 4x4 space-to-depth blocks of the image, its depthwise convs
    # merged into the 1x1 convs after them; narrow 1x1 convs take pixel pairs (or fours) as one
    amx = target == "amx"
    blocks = [la for la in layers if isinstance(la, SpaceToDepth)]
    stem_dw = [la for la in layers if type(la) is keras.layers.DepthwiseConv2D and la.name.startswith("stem_")]
    assert (len(blocks), len(stem_dw)) == ((1, 0) if amx else (0, 2))
    packed = [la.name for la in layers if la.name.endswith("_packed")]
    assert bool(packed) == amx
    # int8 on other CPUs: the stem's 3x3 stride-2 conv reads the image's pixel pairs as one pixel
    pairs = [la.name for la in layers if la.name.endswith("_column_pairs")]
    assert pairs == (["stem_conv1_conv_column_pairs"] if (target, quant) == ("xnnpack", "int8") else [])
    ups = [tuple(la.size) for la in layers if type(la) is keras.layers.UpSampling2D]
    assert max(s[0] for s in ups) == (2 if target == "npu" else 8)
    # SCAF resize-first for higher-resolution sources: a pooled one-channel map times the weights
    for la in layers:
        if la.name.startswith("fusion_") and la.name.endswith("_mul"):
            node = la._inbound_nodes[-1]  # this deploy call (the layer is shared with `trained`)
            shapes = [tuple(t.shape) for t in node.input_tensors]
            out = tuple(node.output_tensors[0].shape)
            assert sorted(s[1] for s in shapes) == [1, out[1]], (la.name, shapes)
            # for an NPU the map is broadcast by a conv first: Vela splits a two-way broadcast
            # MUL into an ADD and a MUL
            assert min(s[-1] for s in shapes) == (out[-1] if target == "npu" else 1), (la.name, shapes)
            # a lower-resolution source's term is taken at the source's size (branch j is 16 >> j
            # pixels wide here), summed into the receiver's from the coarsest up
            i, j = (int(v) for v in re.search(r"_(\d+)from(\d+)_mul$", la.name).groups())
            assert out[1] == 16 >> max(i, j), (la.name, out)
    coarse = sorted(la.name for la in layers if re.search(r"_add_coarse\d$", la.name))
    assert coarse == ["fusion_s1m0_0_add_coarse1", "fusion_s2m0_0_add_coarse1", "fusion_s2m0_0_add_coarse2",
                      "fusion_s2m0_1_add_coarse1"]


@pytest.mark.parametrize("target", ["xnnpack", "amx", "npu"])
def test_int8_ccw_pairs_skip_the_shuffle_between_them(target: str) -> None:
    """Two CCW blocks of a module run without the concat, shuffle and split between them: the
    second block works on [A_hi, Y_hi] with weights permuted to that order, and one
    permutation after it restores the order (a wrong permutation moves the outputs): a 1x1
    conv, or on CPUs without AMX from 48 channels on one transpose (the 64-channel branch)."""
    from lhp_tf.model.kbackend import keras
    from lhp_tf.model.ops import QuarterInterleave

    model = build_model(ModelConfig(**{**TINY, "blocks": (2, 2, 2)}), 98, batch_size=1)
    randomize(model, seed=5)
    deployed = deploy_model(model, target, "int8")
    x = _images(1)
    np.testing.assert_allclose(np.asarray(deployed(x)), np.asarray(model(x)), atol=1e-4, rtol=0)
    layers = {la.name: la for la in deployed.layers}
    for s, branches in enumerate((2, 3, 4)):
        for i in range(branches):
            assert f"ccw_s{s}m0b0_shuffle{i}" not in layers and f"ccw_s{s}m0b0_concat{i}" not in layers
            assert f"ccw_s{s}m0b1_split{i}_working" in layers
            closing = type(layers[f"ccw_s{s}m0b1_shuffle{i}"])
            wide = TINY["channels"][i] >= PAIR_TRANSPOSE_MIN_CHANNELS[target]
            assert closing is (QuarterInterleave if wide else keras.layers.Conv2D), (target, s, i)
            # the amx form concatenates the closing permutation's input on pixel-pair views (the
            # 16x16 top branch packs; 8x8 maps are under AMX_MIN_PIXELS)
            packed = f"ccw_s{s}m0b1_concat{i}_packed0" in layers
            assert packed == (target == "amx" and i == 0), (target, s, i)
        # the paired block's cross-resolution weights also come tiled from its permuted conv2
        assert f"ccw_s{s}m0b1_crw_mul0_rows" in layers, (target, s)
    assert target != "xnnpack" or TINY["channels"][3] >= PAIR_TRANSPOSE_MIN_CHANNELS[target] > TINY["channels"][2]
    half, out = pair_permutations(8)
    np.testing.assert_array_equal(half, [0, 2, 1, 3])
    # on g-pixel views: the concatenation of the packed parts, then the packed kernel, is the
    # plain concatenation permuted, pixel by pixel
    q = 6
    _, out24 = pair_permutations(4 * q)
    parts = [np.random.default_rng(k).normal(size=(3, 8, w)) for k, w in enumerate((q, q, 2 * q))]
    plain = np.concatenate(parts, -1)[..., out24]
    for g in (2, 4):
        packed = np.concatenate([t.reshape(3, 8 // g, -1) for t in parts], -1) @ packed_pair_kernel(out24, g)[0, 0]
        np.testing.assert_array_equal(packed.reshape(3, 8, 4 * q), plain)
    assert sorted(out) == list(range(8))
    for c in (8, 24, 48, 192):
        np.testing.assert_array_equal(pair_permutations(c)[1], quarter_interleave(c))
    x = np.random.default_rng(1).normal(size=(2, 3, 5, 48)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(QuarterInterleave()(x)), x[..., quarter_interleave(48)])


@pytest.mark.parametrize("landmarks,kept,added", [(98, [], False), (10, ["head_out3"], True)])
def test_int8_head_sums_in_one_conv(landmarks: int, kept: list[str], added: bool) -> None:
    """Branches up to twice as wide as the landmark count are resized first and summed by one
    1x1 conv over their concatenation; wider ones keep their conv and are added after."""
    from lhp_tf.model.kbackend import keras

    model = build_model(ModelConfig(**TINY), landmarks, batch_size=1)
    randomize(model, seed=3)
    deployed = deploy_model(model, "amx", "int8")
    x = _images(1)
    np.testing.assert_allclose(np.asarray(deployed(x)), np.asarray(model(x)), atol=1e-4, rtol=0)
    convs = sorted(la.name for la in deployed.layers if la.name.startswith("head_out") and type(la) is keras.layers.Conv2D)
    assert convs == [*kept, "head_out_conv"]  # the iterative head gives (8, 8, 16, 32) channels
    adds = [la for la in deployed.layers if type(la) is keras.layers.Add and la.name.startswith("head_out")]
    assert bool(adds) == added


def test_int8_cpu_graphs_multiply_per_channel_weights_row_by_row() -> None:
    """A (24, 24, C) map times (1, 1, C) weights: in int8 CPU graphs one row at a time, the
    weights concatenated along the row; the same values. Float and NPU graphs keep the MUL."""
    from lhp_tf.model.kbackend import keras

    x = keras.Input(batch_shape=(1, 24, 24, 12))
    w = keras.layers.GlobalAveragePooling2D(keepdims=True)(x)
    w = keras.layers.Conv2D(12, 1, activation="sigmoid")(w)
    model = keras.Model(x, keras.layers.Multiply(name="sw_mul")([x, w]))
    randomize(model, seed=5)
    image = np.random.default_rng(2).normal(size=(1, 24, 24, 12)).astype(np.float32)
    for target, quant, rows in (("amx", "int8", True), ("xnnpack", "int8", True), ("npu", "int8", False),
                                ("xnnpack", "float", False)):
        deployed = deploy_model(model, target, quant)
        np.testing.assert_allclose(np.asarray(deployed(image)), np.asarray(model(image)), atol=1e-6, rtol=0)
        assert any(la.name == "sw_mul_rows" for la in deployed.layers) == rows


def test_int8_row_weights_come_tiled_from_their_conv(tmp_path) -> None:
    """When the weights are a linear 1x1 conv then an activation, the conv writes them once per
    pixel of a row (its output channels tiled): no concatenation, the very same int8 values as
    the plain MUL of a graph without layout rewrites."""
    from lhp_tf.model.kbackend import keras

    x = keras.Input(batch_shape=(1, 24, 24, 3))
    y = keras.layers.Conv2D(12, 3, padding="same", name="first")(x)
    w = keras.layers.GlobalAveragePooling2D(keepdims=True)(y)
    w = keras.layers.Conv2D(12, 1, name="fc2_conv")(w)
    w = keras.layers.Activation("sigmoid", name="fc2_sigmoid")(w)
    model = keras.Model(x, keras.layers.Multiply(name="sw_mul")([y, w]))
    randomize(model, seed=6)
    images = np.random.default_rng(4).random((4, 24, 24, 3), dtype=np.float32)
    tiled = deploy_model(model, "amx", "int8")
    np.testing.assert_allclose(np.asarray(tiled(images[:1])), np.asarray(model(images[:1])), atol=1e-5, rtol=0)
    names = [la.name for la in tiled.layers]
    assert "sw_mul_rows" in names and not [n for n in names if "_tile" in n], names
    conv = next(la for la in tiled.layers if la.name == "fc2_conv")
    np.testing.assert_array_equal(np.asarray(conv.kernel), np.tile(np.asarray(model.get_layer("fc2_conv").kernel), 24))
    plain = _int8_output(deploy_model(model, "amx", "int8", layout_rewrites=False), images, tmp_path / "plain.tflite")
    got = _int8_output(tiled, images, tmp_path / "tiled.tflite")
    assert len(np.unique(got)) > 20
    np.testing.assert_array_equal(got, plain)


def test_upsampled_weights_come_tiled_from_their_conv(tmp_path) -> None:
    """CCW's cross-resolution weights (conv -> BN -> sigmoid -> split -> nearest upsample ->
    MUL): in CPU graphs the conv repeats each part's channels x``factor`` (the part
    upsampled along width) and the MUL broadcasts them over rows: no upsample, no
    concatenation, the very same int8 values as without layout rewrites."""
    from lhp_tf.converters.deploy import UpsampledWeights

    from lhp_tf.model.kbackend import keras
    from lhp_tf.model.ops import ChannelSplit, NearestUpsample

    order = UpsampledWeights("c", [2, 3], [4, 1], "s", set(), {}).order(np.arange(5))
    np.testing.assert_array_equal(order, [0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 4])
    x = keras.Input(batch_shape=(1, 16, 16, 3))
    hi = keras.layers.Conv2D(4, 3, padding="same", name="first")(x)
    lo = keras.layers.AveragePooling2D(4, name="pool")(hi)
    w = keras.layers.Conv2D(10, 1, use_bias=False, name="crw_conv2_conv")(keras.layers.Concatenate()([lo, lo]))
    w = keras.layers.BatchNormalization(name="crw_conv2_bn")(w)
    w = keras.layers.Activation("sigmoid", name="crw_sigmoid")(w)
    w_hi, w_lo = ChannelSplit([4, 6], name="crw_split")(w)
    y_hi = keras.layers.Multiply(name="crw_mul0")([hi, NearestUpsample(4, name="crw_up0")(w_hi)])
    y_lo = keras.layers.Multiply(name="crw_mul1")([keras.layers.Concatenate()([lo, lo[..., :2]]), w_lo])
    model = keras.Model(x, [y_hi, y_lo])
    randomize(model, seed=8)
    images = np.random.default_rng(5).random((4, 16, 16, 3), dtype=np.float32)
    for target, quant in (("amx", "int8"), ("xnnpack", "int8"), ("xnnpack", "float")):
        tiled = deploy_model(model, target, quant)
        for got, ref in zip(tiled(images[:1]), model(images[:1]), strict=True):
            np.testing.assert_allclose(np.asarray(got), np.asarray(ref), atol=1e-5, rtol=0)
        names = [la.name for la in tiled.layers]
        assert "crw_mul0_rows" in names and "crw_up0" not in names and "crw_mul1_rows" not in names, names
        conv = next(la for la in tiled.layers if la.name == "crw_conv2_conv")
        assert conv.filters == 4 * 4 + 6
    single = keras.Model(x, y_hi)
    got = _int8_output(deploy_model(single, "xnnpack", "int8"), images, tmp_path / "tiled.tflite")
    plain = _int8_output(deploy_model(single, "xnnpack", "int8", layout_rewrites=False), images, tmp_path / "plain.tflite")
    assert len(np.unique(got)) > 20
    np.testing.assert_array_equal(got, plain)


def _int8_output(deployed, images: np.ndarray, path) -> np.ndarray:
    """The int8 output tensor of ``deployed`` quantised on ``images``, for the first image."""
    from lhp_tf.converters import quantizer
    from lhp_tf.converters.tflite import float_tflite

    from lhp_tf.runtime import TFLiteModel

    data = float_tflite(deployed)
    path.write_bytes(quantizer.quantize(data, quantizer.calibrate(data, images)))
    interpreter = TFLiteModel(path).interpreter
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"],
                           (np.round(images[:1] * 255) - 128).astype(np.int8))
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def test_amx_packed_pointwise_conv_gives_the_same_int8_values(tmp_path) -> None:
    """A 1x1 conv on pixel pairs (AMX form) quantises to the very int8 values of the plain one."""
    from lhp_tf.model.kbackend import keras

    x = keras.Input(batch_shape=(1, 24, 24, 3))
    y = keras.layers.Conv2D(8, 3, padding="same", name="first")(x)
    y = keras.layers.Conv2D(16, 1, use_bias=False, name="pw_conv")(y)
    y = keras.layers.BatchNormalization(name="pw_bn")(y)
    model = keras.Model(x, keras.layers.ReLU(name="pw_relu")(y))
    randomize(model, seed=7)
    images = np.random.default_rng(3).random((4, 24, 24, 3), dtype=np.float32)
    outputs = {}
    for target in ("amx", "xnnpack"):
        deployed = deploy_model(model, target, "int8")
        assert any(la.name == "pw_conv_packed" for la in deployed.layers) == (target == "amx")
        outputs[target] = _int8_output(deployed, images, tmp_path / f"{target}.tflite")
    assert len(np.unique(outputs["amx"])) > 20  # real values, not a clipped map
    np.testing.assert_array_equal(outputs["amx"], outputs["xnnpack"])


@pytest.mark.parametrize("shape", [(1, 8, 8, 3), (1, 7, 12, 2), (2, 6, 4, 1)])
def test_column_pair_kernel_is_the_conv_on_pixel_pairs(shape: tuple[int, ...]) -> None:
    import tensorflow as tf

    rng = np.random.default_rng(sum(shape))
    kernel = rng.normal(size=(3, 3, shape[-1], 5)).astype(np.float32)
    x = rng.normal(size=shape).astype(np.float32)
    ref = tf.nn.conv2d(x, kernel, 2, "SAME").numpy()
    n, h, w, c = shape
    got = tf.nn.conv2d(x.reshape(n, h, w // 2, 2 * c), column_pair_kernel(kernel), (2, 1), "SAME").numpy()
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)


def test_column_pair_conv_gives_the_same_int8_values(tmp_path) -> None:
    """The stem conv on pixel pairs (int8 CPU form) quantises to the very int8 values of the
    plain conv (the NPU form keeps that): its added weights are zeros."""
    from lhp_tf.model.kbackend import keras

    x = keras.Input(batch_shape=(1, 24, 24, 3))
    y = keras.layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
    y = keras.layers.BatchNormalization(name="stem_bn")(y)
    model = keras.Model(x, keras.layers.ReLU(name="stem_relu")(y))
    randomize(model, seed=5)
    images = np.random.default_rng(4).random((4, 24, 24, 3), dtype=np.float32)
    outputs = {}
    for target in ("xnnpack", "npu"):
        deployed = deploy_model(model, target, "int8")
        assert any(la.name == "stem_conv_column_pairs" for la in deployed.layers) == (target == "xnnpack")
        outputs[target] = _int8_output(deployed, images, tmp_path / f"{target}.tflite")
    assert len(np.unique(outputs["npu"])) > 20
    np.testing.assert_array_equal(outputs["xnnpack"], outputs["npu"])


@pytest.mark.parametrize("k,stride,out_block", [(3, 2, 2), (3, 2, 1), (1, 1, 2), (2, 2, 1), (3, 1, 2)])
def test_block_kernel_is_the_conv_on_space_to_depth_blocks(k: int, stride: int, out_block: int) -> None:
    import tensorflow as tf

    rng = np.random.default_rng(k * 10 + stride)
    fine = stride * out_block
    kernel = rng.normal(size=(k, k, 3, 5)).astype(np.float32)
    x = rng.normal(size=(1, 4 * fine, 4 * fine, 3)).astype(np.float32)
    ref = tf.nn.conv2d(x, kernel, stride, "SAME").numpy()
    coarse = block_kernel(kernel, stride, fine, out_block)
    if k - stride > 1:  # SAME pads before the first pixel: no block form
        assert coarse is None
        return
    got = tf.nn.conv2d(tf.nn.space_to_depth(x, fine), coarse, 1, "SAME")
    got = tf.nn.depth_to_space(got, out_block).numpy() if out_block > 1 else got.numpy()
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("h,w", [(24, 24), (6, 4), (5, 5), (1, 1)])
def test_global_pool_as_depthwise_steps(h: int, w: int) -> None:
    from lhp_tf.converters.deploy import _global_pool

    from lhp_tf.model.kbackend import keras

    x = keras.Input(batch_shape=(1, h, w, 3))
    model = keras.Model(x, _global_pool(x, "gap", keras))
    v = np.random.default_rng(0).random((1, h, w, 3), dtype=np.float32)
    np.testing.assert_allclose(np.asarray(model(v)), v.mean(axis=(1, 2), keepdims=True), atol=1e-6)


@pytest.mark.parametrize("s", [2, 4])
@pytest.mark.parametrize("upsample_first", [False, True])
def test_npu_multiplies_an_upsampled_map_by_broadcasting(s: int, upsample_first: bool) -> None:
    """x * nearest_upsample(w) on a non-square map, either input order: same product, no full
    upsample of w left in the npu form."""
    from lhp_tf.model.kbackend import keras
    from lhp_tf.model.ops import NearestUpsample

    x = keras.Input(batch_shape=(1, 2 * s, 3 * s, 4))
    up = NearestUpsample(s, name="up")(keras.layers.AveragePooling2D(s, name="pool")(x))
    y = keras.layers.Multiply(name="mul")([up, x] if upsample_first else [x, up])
    model = keras.Model(x, y)
    deployed = deploy_model(model, "npu", "float")
    assert not [la for la in deployed.layers if isinstance(la, NearestUpsample)]
    v = np.random.default_rng(0).random((1, 2 * s, 3 * s, 4), dtype=np.float32)
    np.testing.assert_allclose(np.asarray(deployed(v)), np.asarray(model(v)), atol=1e-6)


def test_shares_the_trained_weights(trained) -> None:
    deployed = deploy_model(with_heatmap_activation(trained, "bce"), "npu", "int8")
    assert deployed.get_layer("head_out0") is trained.get_layer("head_out0")
    assert deployed.get_layer("head_sigmoid") is not None


def test_bad_target(trained) -> None:
    with pytest.raises(LhpError, match="--target 'gpu'"):
        deploy_model(trained, "gpu")


@pytest.mark.slow
def test_tflite_forms_are_rank4_delegated_and_npu_clean(tmp_path) -> None:
    """Float xnnpack form: fully delegated and equal to Keras; int8 npu form (with CCW block
    pairs, as the amx one): Vela puts every op on Ethos-U55, no rank > 4 and no float op; int8
    amx form: no float op, fully delegated."""
    from lhp_tf.converters import quantizer
    from lhp_tf.converters.tflite import float_tflite

    from lhp_tf.npu_check import is_float_op, max_rank, run_vela, static_check
    from lhp_tf.runtime import TFLiteModel, op_delegation
    from lhp_tf.tflite_graph import read_graph

    model = with_heatmap_activation(build_model(ModelConfig(**TINY), 98, batch_size=1), "bce")
    randomize(model)
    x = _images(1)
    float_path = tmp_path / "float.tflite"
    float_path.write_bytes(float_tflite(deploy_model(model, "xnnpack", "float")))
    assert max_rank(float_path) == 4
    counts = op_delegation(float_path)
    assert counts["delegated"] == counts["total"], counts
    got = TFLiteModel(float_path).interpreter
    got.set_tensor(got.get_input_details()[0]["index"], x)
    got.invoke()
    out = got.get_tensor(got.get_output_details()[0]["index"])
    np.testing.assert_allclose(out, np.asarray(model(x, training=False)), atol=1e-4, rtol=0)

    # the integer forms on a two-blocks-per-module model (their CCW block pairs)
    paired = with_heatmap_activation(build_model(ModelConfig(**{**TINY, "blocks": (2, 2, 2)}), 98, batch_size=1), "bce")
    randomize(paired)
    int8_path = tmp_path / "npu_int8.tflite"
    npu_float = float_tflite(deploy_model(paired, "npu", "int8"))
    int8_path.write_bytes(quantizer.quantize(npu_float, quantizer.calibrate(npu_float, _images(4))))
    assert max_rank(int8_path) == 4
    assert static_check(int8_path) == []
    graph = read_graph(int8_path)
    assert not [op.op for op in graph.operators if is_float_op(graph, op)]
    counts = op_delegation(int8_path)
    assert counts["delegated"] == counts["total"], counts
    report = run_vela(int8_path, "ethos-u55-256")
    assert report.cpu_ops == 0, report.fallbacks

    # the CPU int8 forms: AMX (stem on space-to-depth blocks, packed 1x1 convs) and the default
    # (the 64-channel pair closed by a transpose): integer only, rank 4, every node on XNNPACK
    for target, marker in (("amx", "SPACE_TO_DEPTH"), ("xnnpack", "TRANSPOSE")):
        cpu_path = tmp_path / f"{target}_int8.tflite"
        cpu_float = float_tflite(deploy_model(paired, target, "int8"))
        cpu_path.write_bytes(quantizer.quantize(cpu_float, quantizer.calibrate(cpu_float, _images(4))))
        graph = read_graph(cpu_path)
        assert marker in [op.op for op in graph.operators], target
        assert not [op.op for op in graph.operators if is_float_op(graph, op)]
        assert max_rank(cpu_path) == 4
        counts = op_delegation(cpu_path)
        assert counts["delegated"] == counts["total"], (target, counts)
