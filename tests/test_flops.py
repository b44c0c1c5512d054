"""The complexity counter against the official Lite-HRNet figures and the paper's claims.

Counting needs no forward pass, so even 256x192 models are cheap to count.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from functools import cache

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from lhp_tf.config import ModelConfig  # noqa: E402
from lhp_tf.errors import LhpError  # noqa: E402
from lhp_tf.model import flops  # noqa: E402
from lhp_tf.model.flops import Complexity, count_config  # noqa: E402

#: A cheap layout with the official widths (the head ratios depend on widths only).
TINY_40 = dict(modules=(1, 1, 1), blocks=(1, 1, 1), iterative_head=False)


@cache
def _count(arch: str, size: tuple[int, int], k: int, **kw: object) -> Complexity:
    return count_config(ModelConfig(arch=arch, input_size=size, **kw), k)


def _close(value: float, target: float, tol: float) -> bool:
    return abs(value / target - 1) <= tol


@pytest.mark.parametrize("arch,size,k,params,macs", [
    ("lite-hrnet-18", (256, 192), 17, 1.131e6, 242.4e6),
    ("lite-hrnet-30", (256, 192), 17, 1.764e6, 386.2e6),
    ("lite-hrnet-18", (96, 96), 98, 1.134e6, 47.4e6),
])
def test_official_figures(arch: str, size: tuple[int, int], k: int, params: float, macs: float) -> None:
    c = _count(arch, size, k)
    assert _close(c.params, params, 0.01), c.params
    # The official code computes each fusion path from branch 0 twice; its published MACs
    # include that, our clean graph runs each path once.
    assert _close(c.official_conv_macs, macs, 0.02), c.official_conv_macs
    assert c.conv_macs < c.official_conv_macs
    assert sum(c.breakdown.values()) == c.conv_macs
    assert sum(c.breakdown_params.values()) == c.params
    assert set(c.breakdown) == {"stem", "transition", "ccw", "fusion", "head"}


def test_official_fusion_share_at_96() -> None:
    c = _count("lite-hrnet-18", (96, 96), 98)
    duplicate = c.official_conv_macs - c.conv_macs
    assert _close(c.breakdown["fusion"] + duplicate, 30.7e6, 0.02)
    assert _close(c.breakdown_params["fusion"], 0.706e6, 0.01)


@pytest.mark.slow
@pytest.mark.parametrize("arch,params,mflops", [("lhp-large", 1.51e6, 30.27e6),
                                                ("lhp-small", 0.37e6, 10.25e6)])
def test_lite_hrnet_plus_presets_match_the_paper(arch: str, params: float, mflops: float) -> None:
    c = _count(arch, (96, 96), 98)
    assert _close(c.params, params, 0.03), c.params
    assert _close(c.mmcv_flops, mflops, 0.03), c.mmcv_flops
    assert c.mmcv_flops > c.conv_macs


def test_scaf_cuts_the_fusion_cost() -> None:
    pointwise = _count("lite-hrnet-18", (96, 96), 98)
    scaf = _count("lite-hrnet-18", (96, 96), 98, fusion="scaf")
    conv_cut = 1 - scaf.breakdown["fusion"] / pointwise.breakdown["fusion"]
    mmcv_cut = 1 - scaf.breakdown_mmcv["fusion"] / pointwise.breakdown_mmcv["fusion"]
    # The paper: "reduce the entire computational complexity of the fusion block by about 80%".
    assert conv_cut >= 0.80 and mmcv_cut >= 0.80, (conv_cut, mmcv_cut)
    # Everything outside the fusion blocks is untouched.
    for t in ("stem", "transition", "ccw", "head"):
        assert scaf.breakdown[t] == pointwise.breakdown[t]


def test_mr_head_costs_1_875_times_v1() -> None:
    v1 = _count("lite-hrnet-18", (96, 96), 98, head="v1", **TINY_40)
    mr = _count("lite-hrnet-18", (96, 96), 98, head="mr", **TINY_40)
    v2 = _count("lite-hrnet-18", (96, 96), 98, head="v2", **TINY_40)
    assert mr.breakdown["head"] / v1.breakdown["head"] == pytest.approx(1.875, rel=1e-9)
    assert v2.breakdown["head"] > 10 * mr.breakdown["head"]
    assert mr.breakdown["ccw"] == v1.breakdown["ccw"]


def test_scaf_resize_first_is_cheaper_not_different_in_convs() -> None:
    paper = _count("lhp-small", (96, 96), 98, **TINY_40)
    fast = _count("lhp-small", (96, 96), 98, scaf_resize_first=True, **TINY_40)
    assert fast.conv_macs == paper.conv_macs and fast.params == paper.params
    assert fast.mmcv_flops < paper.mmcv_flops


@pytest.mark.slow
def test_cli_model_form_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert flops.main(["--model", "lhp-small", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("params", "conv_macs", "mmcv_flops", "breakdown"):
        assert key in out
    assert set(out["breakdown"]) == {"stem", "transition", "ccw", "fusion", "head"}
    assert sum(out["breakdown"].values()) == out["conv_macs"]
    assert out == _count("lhp-small", (96, 96), 98).to_dict() | {"input_size": [96, 96]}


def _recipe(tmp_path: os.PathLike[str]) -> str:
    path = os.path.join(tmp_path, "r.yaml")
    with open(path, "w") as f:
        f.write("data:\n  format: 300w\nmodel:\n  arch: lhp-small\n  input_size: [64, 64]\n")
    return path


def test_cli_recipe_form_with_overrides(tmp_path: os.PathLike[str],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    argv = [_recipe(tmp_path), "--set", "model.modules=[1,1,1]", "--fusion", "pointwise",
            "--head", "v1", "--input-size", "64x96", "--num-landmarks", "17"]
    expected = _count("lhp-small", (64, 96), 17, modules=(1, 1, 1), fusion="pointwise", head="v1")
    assert flops.main([*argv, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["input_size"] == [64, 96] and out["num_landmarks"] == 17
    assert (out["params"], out["conv_macs"], out["mmcv_flops"]) == (
        expected.params, expected.conv_macs, expected.mmcv_flops)
    assert flops.main(argv) == 0
    table = capsys.readouterr().out
    assert "landmarks 17" in table and "fusion" in table and f"{expected.params:,}" in table


@pytest.mark.parametrize("argv,match", [
    ([], "exactly one"),
    (["--model", "lite-hrnet-18", "--input-size", "100x96"], "input_size"),
    (["--model", "lite-hrnet-18", "--input-size", "big"], "HxW"),
    (["--model", "no-such-net"], "unknown architecture"),
    (["--model", "lite-hrnet-18", "--set", "model.head=v1"], "needs a recipe"),
])
def test_cli_errors(argv: list[str], match: str) -> None:
    with pytest.raises(LhpError, match=match):
        flops.main(argv)


def test_counting_rules_on_a_hand_sized_layer() -> None:
    from lhp_tf.model.kbackend import keras

    inp = keras.Input((8, 8, 4))
    x = keras.layers.Conv2D(6, 3, padding="same", use_bias=True, name="stem_c")(inp)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    x = keras.layers.AveragePooling2D(2, name="head_pool")(x)
    model = keras.Model(inp, x)
    c = flops.count(model)
    conv = 3 * 3 * 4 * 6 * 8 * 8
    assert c.conv_macs == conv
    assert c.mmcv_flops == conv + 6 * 64 + 2 * 6 * 64 + 6 * 64 + 6 * 64
    assert c.params == 3 * 3 * 4 * 6 + 6 + 2 * 6
    assert replace(c).breakdown["stem"] == conv
