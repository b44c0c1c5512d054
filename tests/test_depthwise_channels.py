"""benchmarks/depthwise_channels.py: its chains are what it says it times, and it prints a row each."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from benchmark_modules import load_benchmark


def test_int8_chain_is_the_depthwise_convs_alone_in_int8() -> None:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    dw = load_benchmark("depthwise_channels")
    for int8 in (True, False):
        it = Interpreter(model_content=dw._convert(dw.depthwise_chain(8, 12, 3), int8),
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        it.allocate_tensors()
        ops = Counter(op["op_name"] for op in it._get_ops_details())
        assert ops == {"DEPTHWISE_CONV_2D": 3}
        (inp,), (out,) = it.get_input_details(), it.get_output_details()
        assert tuple(inp["shape"]) == tuple(out["shape"]) == (1, 8, 8, 12)
        assert inp["dtype"] == out["dtype"] == (np.int8 if int8 else np.float32)


def test_prints_a_row_per_channel_count(capsys) -> None:
    dw = load_benchmark("depthwise_channels")
    assert dw.main(["--channels", "4", "12", "--size", "8", "--blocks", "2", "--rounds", "2", "--reps", "2"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.split()[:1] in (["4"], ["12"])]
    assert [r[0] for r in rows] == ["4", "12"]
    assert all(float(r[1]) > 0 and float(r[2]) > 0 and r[3].endswith("x") for r in rows)


def test_a_non_positive_size_is_one_line_and_exit_2(capsys) -> None:
    dw = load_benchmark("depthwise_channels")
    with pytest.raises(SystemExit) as exc:
        dw.main(["--blocks", "0"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith("must be positive")
