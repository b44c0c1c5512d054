"""Building, naming, serialising and exporting the Lite-HRNet family.

Tiny layouts (one module per stage, one CCW block, narrow widths) keep this fast; they contain
every op type of the full presets, which only repeat them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from lhp_tf.config import ModelConfig  # noqa: E402
from lhp_tf.errors import LhpError  # noqa: E402
from lhp_tf.model.flops import count  # noqa: E402
from lhp_tf.model.network import (  # noqa: E402
    BLOCK_TYPES,
    build_model,
    load_model,
    with_heatmap_activation,
)
from lhp_tf.model.presets import PRESETS, resolve  # noqa: E402

TINY = dict(channels=(8, 16, 32, 64), stem_channels=16, modules=(1, 1, 1), blocks=(1, 1, 1))


def tiny(**kw: object) -> ModelConfig:
    return ModelConfig(**{"arch": "lhp-small", "input_size": (64, 64), **TINY, **kw})


def _images(n: int, h: int = 64, w: int = 64) -> np.ndarray:
    return np.random.default_rng(1).random((n, h, w, 3), dtype=np.float32)


def test_presets_resolve_with_overrides() -> None:
    assert set(PRESETS) >= {"lite-hrnet-18", "lite-hrnet-30", "lhp-large", "lhp-small"}
    spec = resolve(ModelConfig(arch="lite-hrnet-30"), 17)
    assert (spec.modules, spec.channels, spec.fusion, spec.head) == ((3, 8, 3), (40, 80, 160, 320), "pointwise", "v1")
    assert spec.iterative_head and spec.reduce_ratio == 8 and spec.num_landmarks == 17
    large = resolve(ModelConfig(arch="lhp-large"), 98)
    assert (large.fusion, large.head) == ("scaf", "mr")
    over = resolve(ModelConfig(arch="lhp-large", head="v1", fusion="group", num_landmarks=5,
                               channels=(16, 32, 64, 128)), 98)
    assert (over.head, over.fusion, over.num_landmarks, over.channels) == ("v1", "group", 5, (16, 32, 64, 128))


@pytest.mark.parametrize("kw,match", [
    (dict(arch="nope"), "model.arch"),
    (dict(channels=(8, 16, 32)), "model.channels"),
    (dict(channels=(8, 16, 32, 63)), "even"),
    (dict(blocks=(1, 1)), "model.blocks"),
    (dict(input_size=(96, 80)), "model.input_size"),
    (dict(fusion="group", fusion_groups=5), "model.fusion_groups"),
    (dict(scaf_ratio=0), "model.scaf_ratio"),
])
def test_bad_layouts_are_reported(kw: dict, match: str) -> None:
    with pytest.raises(LhpError, match=match):
        resolve(ModelConfig(**{"arch": "lhp-small", **kw}), 98)


def test_forward_shapes_names_and_init() -> None:
    model = build_model(tiny(), 98)
    y = np.asarray(model(_images(2), training=False))
    assert y.shape == (2, 16, 16, 98) and np.isfinite(y).all()
    assert model.inputs[0].shape[1:] == (64, 64, 3)
    for layer in model.layers[1:]:
        assert layer.name.startswith(BLOCK_TYPES), layer.name
    kinds = {layer.name.split("_")[0].rstrip("0123456789") for layer in model.layers[1:]}
    assert kinds == set(BLOCK_TYPES)
    convs = [w for layer in model.layers if type(layer).__name__ == "Conv2D"
             for w in [layer.kernel] if int(np.prod(w.shape)) >= 2000]
    stds = [float(np.std(np.asarray(w))) for w in convs]
    assert convs and all(0.0007 < s < 0.0013 for s in stds), stds
    gammas = [np.asarray(layer.gamma) for layer in model.layers if type(layer).__name__ == "BatchNormalization"]
    assert gammas and all((g == 1).all() for g in gammas)


@pytest.mark.parametrize("fusion,head,iterative", [
    ("pointwise", "v1", True), ("bottleneck", "v2", False), ("group", "mr", True), ("scaf", "v2", True),
])
def test_every_fusion_and_head_builds(fusion: str, head: str, iterative: bool) -> None:
    model = build_model(tiny(fusion=fusion, head=head, iterative_head=iterative), 7, batch_size=1)
    y = np.asarray(model(_images(1), training=False))
    assert y.shape == (1, 16, 16, 7) and np.isfinite(y).all()
    c = count(model)
    assert c.breakdown["fusion"] > 0 or fusion == "scaf"


def test_scaf_resize_first_computes_the_same_function() -> None:
    paper = build_model(tiny(fusion="scaf"), 6)
    fast = build_model(tiny(fusion="scaf", scaf_resize_first=True), 6)
    rng = np.random.default_rng(2)
    for layer in paper.layers:
        weights = [(rng.normal(0, 0.2, w.shape) if w.ndim == 4 else rng.uniform(0.5, 1.5, w.shape))
                   .astype("float32") for w in layer.get_weights()]
        if weights:  # same layer names in both orders, only their wiring differs
            layer.set_weights(weights)
            fast.get_layer(layer.name).set_weights(weights)
    x = _images(1)
    a, b = np.asarray(paper(x, training=False)), np.asarray(fast(x, training=False))
    assert np.abs(a).max() > 1e-3
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(a).max())


def test_heatmap_activation() -> None:
    model = build_model(tiny(), 5)
    x = _images(1)
    logits = np.asarray(model(x, training=False))
    bce = with_heatmap_activation(model, "bce")
    np.testing.assert_allclose(np.asarray(bce(x, training=False)), 1 / (1 + np.exp(-logits)), rtol=1e-5, atol=1e-6)
    assert bce.layers[-1].name.startswith("head")
    assert with_heatmap_activation(model, "mse") is model
    with pytest.raises(LhpError, match="train.loss"):
        with_heatmap_activation(model, "l1")


@pytest.mark.slow
def test_keras_file_round_trip(tmp_path: Path) -> None:
    model = with_heatmap_activation(build_model(tiny(fusion="scaf", head="mr"), 9), "bce")
    path = tmp_path / "m.keras"
    model.save(path)
    again = load_model(path)
    x = _images(2)
    np.testing.assert_array_equal(np.asarray(model(x, training=False)), np.asarray(again(x, training=False)))
    with pytest.raises(LhpError, match="not found"):
        load_model(tmp_path / "missing.keras")


#: (config overrides, TFLite op count of the batch-1 graph with the sigmoid appended)
TFLITE_CASES = [
    (dict(fusion="scaf", head="mr", iterative_head=False), 365),
    (dict(fusion="group", head="v2", iterative_head=True), 515),
]


@pytest.mark.slow
@pytest.mark.parametrize("overrides,num_ops", TFLITE_CASES)
def test_tflite_batch1_graph_is_fully_delegated(tmp_path: Path, overrides: dict, num_ops: int) -> None:
    import tensorflow as tf

    from lhp_tf.runtime import load_interpreter, op_delegation

    model = with_heatmap_activation(build_model(tiny(**overrides), 98, batch_size=1), "bce")
    path = tmp_path / "m.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    counts = op_delegation(path)
    assert (counts["total"], counts["delegated"]) == (num_ops, num_ops), counts
    interpreter, _ = load_interpreter(path, xnnpack=False)
    names = {op["op_name"] for op in interpreter._get_ops_details()}
    assert not names & {"TILE", "RESIZE_NEAREST_NEIGHBOR", "SPLIT_V", "SHAPE", "GATHER"}, names
    # The TFLite graph computes what Keras computes.
    interpreter, _ = load_interpreter(path)
    x = _images(1)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(got, np.asarray(model(x, training=False)), atol=1e-5)


@pytest.mark.slow
def test_same_source_builds_under_tf_keras() -> None:
    """QAT (tensorflow-model-optimization) needs tf_keras: the architecture must build there too."""
    code = textwrap.dedent("""
        import numpy as np
        from lhp_tf.config import ModelConfig
        from lhp_tf.model import kbackend
        from lhp_tf.model.network import build_model, with_heatmap_activation
        from lhp_tf.model.flops import count
        assert kbackend.LEGACY and kbackend.keras.__name__ == "tf_keras"
        cfg = ModelConfig(arch="lhp-small", input_size=(64, 64), channels=(8, 16, 32, 64),
                          stem_channels=16, modules=(1, 1, 1), blocks=(1, 1, 1))
        m = with_heatmap_activation(build_model(cfg, 98, batch_size=1), "bce")
        assert type(m).__module__.startswith("tf_keras"), type(m).__module__
        y = m(np.zeros((1, 64, 64, 3), np.float32), training=False).numpy()
        assert y.shape == (1, 16, 16, 98)
        print("PARAMS", count(m).params, "MMCV", count(m).mmcv_flops)
        print("NAMES", ",".join(sorted(layer.name for layer in m.layers if layer.weights)))
    """)
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(t for t in proc.stdout.splitlines() if t.startswith("PARAMS"))
    model = with_heatmap_activation(build_model(tiny(), 98), "bce")
    keras3 = count(model)
    assert line == f"PARAMS {keras3.params} MMCV {keras3.mmcv_flops}"
    # Same weighted layer names in both Keras versions: the QAT weight transfer matches by name.
    names = next(t for t in proc.stdout.splitlines() if t.startswith("NAMES "))[6:].split(",")
    assert names == sorted(layer.name for layer in model.layers if layer.weights)
