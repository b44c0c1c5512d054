"""Float .tflite -> integer (lhp_tf.converters.quantizer): range passes, op selection, ranking,
mixed int16, and the rule that quantisation uses public APIs only."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
from lhp_tf.converters import quantizer
from lhp_tf.converters.passes import add_signature, run_passes
from tflite_toys import FLOAT32, build_graph

from lhp_tf.errors import LhpError
from lhp_tf.tflite_graph import read_graph

ROOT = Path(__file__).resolve().parents[1]


def _sigmoid_gate() -> bytes:
    """x -> LOGISTIC -> s; out = s * x: a gate whose sigmoid sees a narrow input."""
    g = build_graph([("x", FLOAT32, None), ("gate", FLOAT32, None), ("out", FLOAT32, None)],
                    [("LOGISTIC", [0], [1]), ("MUL", [1, 0], [2])], [0], [2])
    return run_passes(g, [add_signature])


def _inputs(n: int = 16, spread: float = 0.01) -> np.ndarray:
    return (np.random.default_rng(0).standard_normal((n, 4)) * spread).astype(np.float32)


def test_int8_model_is_integer_with_int8_io_and_int16_ops_on_request() -> None:
    model = _sigmoid_gate()
    table = quantizer.calibrate(model, _inputs(), "minmax")
    int8 = quantizer.quantize(model, table)
    graph = read_graph(int8)
    assert not [t.name for t in graph.tensors if t.dtype == "float32"]
    assert graph.tensors[graph.inputs[0]].dtype == "int8" and graph.tensors[graph.outputs[0]].dtype == "int8"
    assert quantizer.int16_ops(int8) == []
    gates = quantizer.select_ops(model, ["LOGISTIC"])
    assert gates == ["gate"]
    mixed = quantizer.quantize(model, table, gates)
    assert quantizer.int16_ops(mixed) == ["gate"]
    assert not [t.name for t in read_graph(mixed).tensors if t.dtype == "float32"]


def test_ranking_puts_the_sigmoid_int8_cannot_resolve_first() -> None:
    """sigmoid(+-0.01) = 0.5 +- 0.0025: below int8 LOGISTIC's 1/256 step, the gate's signal is gone."""
    model = _sigmoid_gate()
    images = _inputs()
    table = quantizer.calibrate(model, images, "minmax")
    ranked = quantizer.rank_ops(model, table, images)
    assert ranked[0].name == "gate" and ranked[0].op == "LOGISTIC"
    assert ranked[0].noise_to_signal > 0.3 > ranked[-1].noise_to_signal


def test_int16_matches_exact_ops_even_with_fused_names_and_metacharacters() -> None:
    """Names with regex metacharacters, and one op's name a prefix of another's fused name."""
    g = build_graph([("x", FLOAT32, None), ("a+(1)", FLOAT32, None), ("a+(1);b", FLOAT32, None)],
                    [("LOGISTIC", [0], [1]), ("LOGISTIC", [1], [2])], [0], [2])
    model = run_passes(g, [add_signature])
    table = quantizer.calibrate(model, _inputs(), "minmax")
    assert quantizer.int16_ops(quantizer.quantize(model, table, ["a+(1)"])) == ["a+(1)"]
    assert quantizer.int16_ops(quantizer.quantize(model, table, ["a+(1);b"])) == ["a+(1);b"]
    with pytest.raises(LhpError, match="no op writes nothing"):
        quantizer.quantize(model, table, ["nothing"])


def test_select_ops_by_type_regex_and_errors() -> None:
    model = _sigmoid_gate()
    assert quantizer.select_ops(model, ["@^out$"]) == ["out"]
    assert quantizer.select_ops(model, ["MUL@out", "LOGISTIC"]) == ["gate", "out"]
    with pytest.raises(LhpError, match="picks no op"):
        quantizer.select_ops(model, ["TANH"])
    with pytest.raises(LhpError, match="bad regular expression"):
        quantizer.select_ops(model, ["@("])


def test_ranges_input_by_contract_output_and_int16_by_extremes() -> None:
    """Input: [0, 1] (images / 255); output: its extremes (peaks never clipped); mse searches
    down from the extremes; int16 ops get the extremes back."""
    images = _inputs(32, 1.0)
    images[0, 0] = 40.0  # one outlier stretches the extremes
    model = _sigmoid_gate()

    def ranges(table: dict) -> dict[str, tuple[float, float]]:
        return {k: (float(np.ravel(v["min"])[0]), float(np.ravel(v["max"])[0])) for k, v in table.items()}

    minmax = quantizer.calibrate(model, images, "minmax")
    mse = quantizer.calibrate(model, images, "mse")
    gate = 1.0 / (1.0 + np.exp(-images))
    for table in (minmax, mse):
        r = ranges(table)
        assert r["x"] == quantizer.INPUT_RANGE
        assert r["out"] == pytest.approx(((gate * images).min(), (gate * images).max()), rel=1e-5)
        assert table.calibrated["gate"] == pytest.approx((gate.min(), gate.max()), rel=1e-5)
    assert ranges(minmax)["gate"][1] < gate.max()  # AEQ's averaged per-image maxima
    assert ranges(mse)["gate"] == pytest.approx(mse.calibrated["gate"])  # nothing worth clipping
    assert ranges(minmax.widest(["gate"]))["gate"] == pytest.approx(minmax.calibrated["gate"])
    assert ranges(minmax.widest(["gate"]))["x"] == ranges(minmax)["x"]


def test_one_calibration_pass_gives_aeqs_own_table_and_the_extremes() -> None:
    """Our update function (moving average + running extremes, on floats) reproduces AEQ's own
    calibration exactly: if AEQ changes its smoothing, this fails."""
    from ai_edge_quantizer.calibrator import CalibrationMode

    model = _sigmoid_gate()
    images = _inputs(24, 1.0)
    ours = quantizer._calibration_pass(model, images)
    with quantizer._quiet():
        theirs = quantizer._quantizer(model).calibrate(quantizer._feed(images),
                                                       mode=CalibrationMode.CALIBRATION_PROFILER_BASED)
    assert set(ours) == set(theirs)
    for name, qsv in theirs.items():
        for key in ("min", "max"):
            assert float(np.ravel(ours[name][key])[0]) == pytest.approx(float(np.ravel(qsv[key])[0]), rel=1e-6)
    assert ours.calibrated["x"] == pytest.approx((images.min(), images.max()), rel=1e-6)
    gate = 1.0 / (1.0 + np.exp(-images))
    assert ours.calibrated["gate"] == pytest.approx((gate.min(), gate.max()), rel=1e-5)


def test_histogram_search_matches_the_search_on_raw_values() -> None:
    """The MSE search on a histogram picks the scale a search over the raw values picks."""
    rng = np.random.default_rng(1)
    for x in (np.maximum(rng.standard_t(3, 50_000), 0.0), rng.normal(0.0, 1.0, 50_000), rng.uniform(-1, 3, 50_000)):
        lo, hi = float(x.min()), float(x.max())
        raw = [quantizer._quantisation_mse(x, min(lo, 0.0) * s, max(hi, 0.0) * s) for s in quantizer.SCALES]
        picked = quantizer.best_scale(x, lo, hi)
        assert raw[list(quantizer.SCALES).index(picked)] <= min(raw) * 1.02


def test_widen_for_xnnpack_only_touches_ranges_xnnpack_cannot_requantise() -> None:
    w = np.full((1, 1, 1, 1), 1.0, np.float32)
    graph = quantizer.FloatGraph(ops=[("CONV_2D", [0, 1], [2]), ("CONV_2D", [0, 1], [3])],
                                 names=["in", "w", "dead", "live"], constants={1: w}, inputs=[0], outputs=[2, 3])
    table = quantizer.RangeTable({name: {"min": np.array([[lo]], np.float32), "max": np.array([[hi]], np.float32)}
                                  for name, lo, hi in (("in", -10.0, 10.0), ("dead", 0.0, 1e-6), ("live", 0.0, 5.0))})
    assert quantizer.widen_for_xnnpack(table, graph) == 1
    in_scale = 20.0 / 255
    dead_scale = float(table["dead"]["max"].ravel()[0]) / 255
    assert in_scale * (1.0 / 127) / dead_scale < quantizer.XNNPACK_MAX_REQUANT
    assert float(table["live"]["max"].ravel()[0]) == 5.0


def _table(ranges: dict[str, tuple[float, float]]) -> quantizer.RangeTable:
    return quantizer.RangeTable({name: {"min": np.array([lo], np.float32), "max": np.array([hi], np.float32)}
                                 for name, (lo, hi) in ranges.items()})


def test_share_ranges_joins_what_int8_holds_at_one_scale() -> None:
    """A CCW-like join: block input -> SPLIT -> (kept half, worked half -> MUL) -> CONCATENATION,
    and a sigmoid's copies concatenated (a nearest upsample): each group gets one range."""
    names = ["x", "axis", "a", "b", "m", "cat", "g", "s", "up"]
    ops = [("SPLIT", [1, 0], [2, 3]), ("MUL", [3, 3], [4]), ("CONCATENATION", [2, 4], [5]),
           ("LOGISTIC", [5], [6]), ("SLICE", [6], [7]), ("CONCATENATION", [7, 7], [8])]
    graph = quantizer.FloatGraph(ops=ops, names=names, constants={}, inputs=[], outputs=[8])
    table = _table({"x": (0.0, 6.0), "a": (0.0, 5.0), "b": (0.0, 6.0), "m": (-2.0, 3.0), "cat": (-1.0, 7.0),
                    "g": quantizer.LOGISTIC_RANGE, "s": (0.2, 0.9), "up": (0.1, 0.8)})
    assert quantizer.share_ranges(table, graph) == 5 + 2
    for name in ("x", "a", "b", "m", "cat"):
        assert table.range(name) == pytest.approx((-2.0, 7.0)), name
    for name in ("g", "s", "up"):  # a LOGISTIC's copies take its fixed range
        assert table.range(name) == pytest.approx(quantizer.LOGISTIC_RANGE), name
    # a LOGISTIC's copies may calibrate past int8's fixed range (they are copies); a value a free
    # op writes into the group may not: that group is left alone (its QUANTIZEs stay)
    ops = [("LOGISTIC", [0], [1]), ("SLICE", [1], [2]), ("MUL", [0, 0], [3]), ("CONCATENATION", [2, 3], [4])]
    graph = quantizer.FloatGraph(ops=ops, names=["x", "g", "s", "m", "cat"], constants={}, inputs=[], outputs=[4])
    for m, shared in (((0.0, 0.5), True), ((0.0, 1.5), False)):
        table = _table({"x": (-1.0, 1.0), "g": (0.0, 0.9998), "s": (0.0, 0.9998), "m": m, "cat": (0.0, 1.2)})
        quantizer.share_ranges(table, graph)
        assert (table.range("cat") == pytest.approx(quantizer.LOGISTIC_RANGE)) == shared
        assert table.range("m") == (pytest.approx(quantizer.LOGISTIC_RANGE) if shared else m)


def _split_join() -> bytes:
    """Float .tflite of CCW's two joins: x (1, 4, 4, 4) -> SPLIT -> concat(first half, second half
    squared); sigmoid -> SPLIT -> concat(copies) (a nearest upsample); their product."""
    from lhp_tf.converters.tflite import float_tflite

    from lhp_tf.model.kbackend import keras
    from lhp_tf.model.ops import ChannelSplit

    x = keras.Input(batch_shape=(1, 4, 4, 4))
    a, b = ChannelSplit([2, 2])(x)
    y = keras.layers.Concatenate()([a, keras.layers.Multiply()([b, b])])
    g, _ = ChannelSplit([2, 2])(keras.layers.Activation("sigmoid")(y))
    g = ChannelSplit([1, 1])(g)[0]
    copies = keras.layers.Concatenate()([g, g, g, g])
    return float_tflite(keras.Model(x, keras.layers.Multiply()([y, copies])))


def test_shared_ranges_leave_no_requantising_quantize() -> None:
    """Both CCW joins quantised through AEQ: with AEQ's own ranges each gets a requantising
    QUANTIZE; with shared ranges and the identity-QUANTIZE pass none is left."""
    from lhp_tf.converters.passes import drop_identity_quantize

    raw = _split_join()
    images = np.random.default_rng(0).random((16, 4, 4, 4), dtype=np.float32)  # the [0, 1] image contract
    plain = quantizer.quantize(raw, quantizer._calibration_pass(raw, images))
    assert [op.op for op in read_graph(plain).operators].count("QUANTIZE") >= 1
    shared = quantizer.quantize(raw, quantizer.calibrate(raw, images))
    # AEQ still writes one between the sigmoid's SPLIT and the copies' CONCATENATION, now a copy
    assert [op.op for op in read_graph(shared).operators].count("QUANTIZE") >= 1
    ops = [op.op for op in read_graph(run_passes(shared, [drop_identity_quantize])).operators]
    assert "QUANTIZE" not in ops and "CONCATENATION" in ops


def test_bad_calibration_inputs_are_clear() -> None:
    with pytest.raises(LhpError, match="calibration 'histogram'"):
        quantizer.calibrate(_sigmoid_gate(), _inputs(), "histogram")
    with pytest.raises(LhpError, match="at least one image"):
        quantizer.calibrate(_sigmoid_gate(), _inputs(0), "mse")


#: module prefixes that are TensorFlow's (or Keras') internals, not its public API
PRIVATE = ("tensorflow.python", "tensorflow.lite.python", "tensorflow.lite.tools", "tensorflow.compiler",
           "tensorflow.core", "keras.src", "tf_keras.src")
#: the libraries whose ``_underscore`` modules and names are private too
THIRD_PARTY = ("tensorflow", "keras", "tf_keras", "tensorflow_model_optimization", "ai_edge_", "tflite_runtime")


def _private_uses(path: Path) -> list[str]:
    """Imports of private modules, ``_private`` attributes of converter-like objects, and
    assignments that replace a method (monkeypatching) in one source file."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        found += [f"{path.name}:{node.lineno} imports {n}" for n in names if n.startswith(PRIVATE) or (
            n.startswith(THIRD_PARTY) and any(part.startswith("_") for part in n.split(".")[1:]))]
        if isinstance(node, ast.Attribute) and node.attr.startswith("_experimental"):
            found.append(f"{path.name}:{node.lineno} uses .{node.attr}")
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Attribute) and target.attr in ("convert", "quantize", "calibrate"):
                    found.append(f"{path.name}:{node.lineno} replaces .{target.attr}")
    return found


def test_quantisation_code_uses_no_private_tensorflow_api() -> None:
    files = sorted((ROOT / "converters").glob("*.py")) + sorted((ROOT / "quantize").glob("*.py"))
    assert len(files) > 10
    assert [use for f in files for use in _private_uses(f)] == []


def test_the_private_api_check_catches_what_it_must(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from tensorflow.python.framework import convert_to_constants\n"
                   "from tensorflow.lite.python import convert as c\n"
                   "import tensorflow.lite.tools.flatbuffer_utils\n"
                   "converter._experimental_calibrate_only = True\n"
                   "converter.convert = lambda: None\n"
                   "from ai_edge_quantizer.utils import _private\n"
                   "from lhp_tf.model.ops import _steps\n")
    assert {int(use.split(":")[1].split()[0]) for use in _private_uses(bad)} == {1, 2, 3, 4, 5, 6}


def test_permutation_conv_keeps_its_input_scale_and_copies_bit_for_bit() -> None:
    """The deploy graph's channel shuffle (a 1x1 0/1 conv) shares its input's range, so its int8
    output is its input reordered exactly; the same kernel with a fused ReLU is not a copy."""
    from ai_edge_litert.interpreter import Interpreter
    from lhp_tf.converters.deploy import shuffle_permutation
    from lhp_tf.converters.tflite import float_tflite

    from lhp_tf.model.kbackend import keras

    perm = shuffle_permutation(8, 2)
    kernel = np.zeros((1, 1, 8, 8), np.float32)
    kernel[0, 0, perm, np.arange(8)] = 1.0
    assert quantizer.is_permutation_conv([kernel.transpose(3, 0, 1, 2)])
    assert not quantizer.is_permutation_conv([2 * kernel.transpose(3, 0, 1, 2)])
    assert not quantizer.is_permutation_conv([kernel.transpose(3, 0, 1, 2), np.ones(8, np.float32)])

    def model(activation: str | None) -> bytes:
        """A CCW-like block: its worked half shrunk 10x, so the concatenation's own range is
        narrower than the group's (the block input's) that share_ranges gives it."""
        from lhp_tf.model.ops import ChannelSplit

        x = keras.Input(batch_shape=(1, 6, 6, 4))
        mix = keras.layers.Conv2D(8, 3, padding="same", name="mix")
        a, b = ChannelSplit([4, 4])(mix(x))
        kernel_mix, bias_mix = mix.get_weights()
        mix.set_weights([kernel_mix * np.r_[np.ones(4), np.full(4, 10.0)].astype(np.float32), bias_mix])
        y = keras.layers.Concatenate(name="cat")([a, keras.layers.Rescaling(0.1)(b)])
        shuffle = keras.layers.Conv2D(8, 1, use_bias=False, activation=activation, name="shuffle")
        z = shuffle(y)
        shuffle.set_weights([kernel])
        return float_tflite(keras.Model(x, keras.layers.Conv2D(3, 1, name="out")(z)))

    keras.utils.set_random_seed(0)
    raw = model(None)
    assert len(quantizer.FloatGraph.read(raw).permutations) == 1
    assert not quantizer.FloatGraph.read(model("relu")).permutations
    images = np.random.default_rng(0).random((8, 6, 6, 4), dtype=np.float32)
    data = quantizer.quantize(raw, quantizer.calibrate(raw, images))
    it = Interpreter(model_content=data, experimental_preserve_all_tensors=True)
    it.allocate_tensors()
    details = {d["name"]: d for d in it.get_tensor_details()}
    maps = {n.split("_")[0]: d for n, d in details.items() if tuple(d["shape"]) == (1, 6, 6, 8)}
    cat, shuffled = maps["cat"], maps["shuffle"]  # the shuffle's input and output
    assert cat["quantization"] == shuffled["quantization"]
    src = it.get_input_details()[0]
    scale, zero = src["quantization"]
    it.set_tensor(src["index"], np.clip(np.round(images[:1] / scale + zero), -128, 127).astype(np.int8))
    it.invoke()
    np.testing.assert_array_equal(it.get_tensor(shuffled["index"]), it.get_tensor(cat["index"])[..., perm])


def test_auto_calibration_keeps_the_candidate_closer_to_float() -> None:
    """``auto`` builds the min/max and the MSE tables and keeps the one whose int8 landmarks
    move least from float's; the kept table is the one that method gives alone."""
    from lhp_tf.converters.tflite import float_tflite

    from lhp_tf.model.kbackend import keras

    keras.utils.set_random_seed(0)
    x = keras.Input(batch_shape=(1, 6, 6, 4))
    y = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    raw = float_tflite(keras.Model(x, keras.layers.Conv2D(3, 1)(y)))
    images = np.random.default_rng(0).random((16, 6, 6, 4), dtype=np.float32)
    table = quantizer.calibrate(raw, images, "auto")
    assert set(table.errors) == {"minmax", "mse"}
    assert table.method == min(table.errors, key=table.errors.__getitem__)
    alone = quantizer.calibrate(raw, images, table.method)
    assert alone.method == table.method and not alone.errors
    assert {n: alone.range(n) for n in alone} == {n: table.range(n) for n in table}
    probe = images[-quantizer.PROBE_IMAGES:]
    reference = quantizer.landmark_shift(raw, probe)
    assert reference.shape == (len(probe), 3, 2)
    for method, error in table.errors.items():
        got = quantizer.landmark_shift(quantizer.quantize(raw, quantizer.calibrate(raw, images, method)), probe, reference)
        assert got == pytest.approx(error) and got > 0


def test_widen_for_bias_keeps_every_int32_bias_in_range() -> None:
    """A conv reading a tensor that calibrated to almost nothing gets an input range its bias fits."""
    kernel = np.array([[0.5, -0.25], [0.01, 0.02]], np.float32).reshape(2, 1, 1, 2)
    bias = np.array([3.0, -2.0], np.float32)
    graph = quantizer.FloatGraph(ops=[("CONV_2D", [0, 1, 2], [3]), ("CONV_2D", [4, 1, 2], [5])],
                                 names=["dead", "w", "b", "out", "live", "out2"], constants={1: kernel, 2: bias},
                                 inputs=[0, 4], outputs=[3, 5])
    table = _table({"dead": (0.0, 1e-12), "out": (-2.0, 3.0), "live": (0.0, 4.0), "out2": (-2.0, 3.0)})
    assert quantizer.widen_for_bias(table, graph) == 1
    scale = quantizer._int8_scale(*table.range("dead"))
    w_scale = np.abs(kernel).reshape(2, -1).max(1) / 127.0
    assert np.max(np.abs(bias) / (scale * w_scale)) <= quantizer.BIAS_LIMIT * 1.0001
    assert table.range("dead")[0] == 0.0  # zeros still quantise exactly
    assert table.range("live") == (0.0, 4.0)
    assert quantizer.widen_for_bias(table, graph) == 0


def test_a_conv_behind_a_dead_relu_outputs_its_bias_in_int8() -> None:
    """End to end: a ReLU that is always off feeds a conv with a bias; int8 must output the bias
    (before ``widen_for_bias`` ai-edge-quantizer saturated it in int32 and the conv output a
    wrong constant, as two SCAF attention FCs of the trained lhp-large did)."""
    from ai_edge_litert.interpreter import Interpreter
    from lhp_tf.converters.tflite import float_tflite

    from lhp_tf.model.kbackend import keras

    x = keras.Input((4, 4, 3), batch_size=1)
    dead = keras.layers.Conv2D(2, 1, activation="relu", name="dead")(x)
    out = keras.layers.Conv2D(3, 1, name="fc")(dead)
    model = keras.Model(x, out)
    model.get_layer("dead").set_weights([np.full((1, 1, 3, 2), 0.1, np.float32), np.full(2, -10.0, np.float32)])
    fc_bias = np.array([0.8, -1.5, 2.5], np.float32)
    model.get_layer("fc").set_weights([np.full((1, 1, 2, 3), 0.3, np.float32), fc_bias])
    float_model = float_tflite(model)
    images = np.random.default_rng(0).random((8, 4, 4, 3), np.float32)
    int8 = quantizer.quantize(float_model, quantizer.calibrate(float_model, images, "minmax"))
    it = Interpreter(model_content=int8)
    it.allocate_tensors()
    src, dst = it.get_input_details()[0], it.get_output_details()[0]
    scale, zero = src["quantization"]
    it.set_tensor(src["index"], np.clip(np.round(images[:1] / scale + zero), -128, 127).astype(np.int8))
    it.invoke()
    out_scale, out_zero = dst["quantization"]
    got = (it.get_tensor(dst["index"]).astype(np.float32) - out_zero) * out_scale
    np.testing.assert_allclose(got, np.broadcast_to(fc_bias, got.shape), atol=2 * out_scale)


def test_int8_copies_of_int16_tensors_keep_their_int8_scale_and_the_bias_follows() -> None:
    """Mixed precision: a conv kept in int16 feeds an int8 conv with a bias. The int8 copy of
    the int16 tensor must have the scale pure int8 gives it (not the int16 extent), and the int8
    conv's bias must follow the new input scale, so the int8 conv computes what it does in the
    pure int8 model."""
    from ai_edge_litert.interpreter import Interpreter
    from lhp_tf.converters.tflite import float_tflite

    from lhp_tf.model.kbackend import keras

    x = keras.Input((4, 4, 3), batch_size=1)
    model = keras.Model(x, keras.layers.Conv2D(3, 1, name="late")(keras.layers.Conv2D(4, 1, name="early")(x)))
    rng = np.random.default_rng(0)
    model.get_layer("early").set_weights([rng.normal(size=(1, 1, 3, 4)).astype(np.float32), np.zeros(4, np.float32)])
    model.get_layer("late").set_weights([rng.normal(size=(1, 1, 4, 3)).astype(np.float32),
                                         np.array([1.0, -2.0, 0.5], np.float32)])
    float_model = float_tflite(model)
    images = rng.random((40, 4, 4, 3)).astype(np.float32)
    images[0] *= 20.0  # one outlier image: the extent is far wider than the averaged range
    table = quantizer.calibrate(float_model, images, "minmax")
    early = quantizer.select_ops(float_model, ["@early"])
    mixed = quantizer.quantize(float_model, table, early)
    pure = quantizer.quantize(float_model, table)
    assert quantizer.int16_ops(mixed) == early

    def run(data: bytes, image: np.ndarray) -> tuple[np.ndarray, dict, float]:
        it = Interpreter(model_content=data)
        it.allocate_tensors()
        src, dst = it.get_input_details()[0], it.get_output_details()[0]
        scale, zero = src["quantization"]
        info = np.iinfo(src["dtype"])
        it.set_tensor(src["index"], np.clip(np.round(image[None] / scale + zero), info.min, info.max).astype(src["dtype"]))
        it.invoke()
        scales = {d["name"]: d["quantization"] for d in it.get_tensor_details() if d["dtype"] == np.int8}
        out_scale, out_zero = dst["quantization"]
        return (it.get_tensor(dst["index"]).astype(np.float32) - out_zero) * out_scale, scales, out_scale

    got, scales, step = run(mixed, images[5])
    want, pure_scales, _ = run(pure, images[5])
    name = early[0]
    copies = [q for n, q in scales.items() if n != name and name in n]  # the QUANTIZE's int8 output
    assert copies and all(q == pytest.approx(pure_scales[name], rel=1e-6) for q in copies)
    np.testing.assert_allclose(got, want, atol=2 * step)


def test_a_layer_s_range_goes_on_the_value_it_computes_not_on_a_copy() -> None:
    """A layer whose last op is a reshape (PooledChannelMean: RESHAPE, MEAN, RESHAPE) maps to
    its MEAN's output: the conversion gives a group of copies the union of what the free ops
    write into it, so a range written on the copy would be dropped. A layer of copies only maps
    to its last tensor; the converter's fused name (a ReLU scope on its conv) counts as the
    ReLU's."""
    names = ["x", "pool_1/Reshape", "pool_1/Mean", "pool_1/Reshape_1", "relu_1/Relu;conv_1/conv",
             "relu_1/Relu;unpacked_1/Reshape", "shuffle_1/transpose"]
    graph = quantizer.FloatGraph(
        ops=[("RESHAPE", [0], [1]), ("MEAN", [1], [2]), ("RESHAPE", [2], [3]), ("CONV_2D", [3], [4]),
             ("RESHAPE", [4], [5]), ("TRANSPOSE", [5], [6])],
        names=names, constants={}, inputs=[0], outputs=[6])
    assert graph.tensors_by_layer(["pool", "relu", "shuffle"]) == {
        "pool": "pool_1/Mean", "relu": "relu_1/Relu;conv_1/conv", "shuffle": "shuffle_1/transpose"}
