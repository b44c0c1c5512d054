"""lhp npu-check: the static constraint check and Vela's report on a toy int8 graph."""

from __future__ import annotations

import pytest

from lhp_tf import npu_check
from lhp_tf.errors import LhpError


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    from tflite_toys import write_npu_toy

    return write_npu_toy(tmp_path_factory.mktemp("npu") / "toy_int8.tflite")


def test_static_check_finds_rank5_and_known_fallbacks(toy):
    assert npu_check.max_rank(toy) == 5
    found = {(f.op, f.reason.split(" ")[0]) for f in npu_check.static_check(toy)}
    assert ("TRANSPOSE", "rank-5") in found
    assert ("MEAN", "MEAN") in found
    assert ("DEPTHWISE_CONV_2D", "stride") in found
    assert ("RESIZE_BILINEAR", "RESIZE_BILINEAR") in found
    flagged = {f.op for f in npu_check.static_check(toy)}
    assert "CONV_2D" not in flagged and "ADD" not in flagged


def test_vela_report_lists_cpu_fallbacks_with_reasons(toy):
    u55 = npu_check.run_vela(toy, "ethos-u55-256")
    ops = {f.op: f.reason for f in u55.fallbacks}
    assert set(ops) == {"MEAN", "DEPTHWISE_CONV_2D", "RESIZE_BILINEAR"}
    assert "depth" in ops["MEAN"] and "stride" in ops["DEPTHWISE_CONV_2D"]
    assert u55.cpu_ops == 3 and u55.total_ops == 10 and 0 < u55.npu_share < 1
    assert u55.inference_ms is not None and u55.inference_ms > 0
    u85 = npu_check.run_vela(toy, "ethos-u85-256")
    assert [f.op for f in u85.fallbacks] == ["MEAN"]  # U85 takes the stride-4 conv and the x4 resize


def test_cli_prints_report_and_strict_exit(toy, capsys):
    assert npu_check.main([str(toy), "--accel", "ethos-u55-256"]) == 0
    out = capsys.readouterr().out
    assert "rank-5 tensor" in out and "ethos-u55-256: 7/10 ops on the NPU" in out and "CPU: MEAN" in out
    assert npu_check.main([str(toy), "--static", "--strict"]) == 1
    assert "0 float op(s)" in capsys.readouterr().out


def test_not_a_model(tmp_path):
    bad = tmp_path / "x.tflite"
    bad.write_bytes(b"not a flatbuffer at all")
    with pytest.raises(LhpError, match="x.tflite: not a TFLite model"):
        npu_check.static_check(bad)
