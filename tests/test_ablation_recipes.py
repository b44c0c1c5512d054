"""The Table 2a ablation recipes compare fusion blocks at the paper's cost, not just swap them.

Kato et al., Table 2a, put each fusion block in a network of about 30 mmcv-style MFLOPs (96x96,
WFLW, 98 landmarks). Swapping the fusion on the lhp-large layout alone lands at 38-66 MFLOPs, so
the recipes shrink the branch widths (``tools/search_lhp_presets.py --target table2a``). These
tests count the built Keras graph of each recipe; no forward pass.
"""

from __future__ import annotations

import os
import re
from functools import cache
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from lhp_tf.config import ModelConfig, load_recipe  # noqa: E402
from lhp_tf.model.flops import Complexity, count_config  # noqa: E402
from lhp_tf.model.presets import ArchSpec, resolve  # noqa: E402

RECIPES = Path(__file__).resolve().parents[1] / "recipes"

#: recipe -> (fusion the row names, the paper's mmcv-style FLOPs for that row)
TABLE_2A = {
    "wflw.yaml": ("scaf", 30.27e6),
    "ablations/wflw-fusion-pointwise.yaml": ("pointwise", 29.67e6),
    "ablations/wflw-fusion-bottleneck.yaml": ("bottleneck", 29.29e6),
    "ablations/wflw-fusion-group.yaml": ("group", 29.31e6),
}
ABLATIONS = sorted(n for n in TABLE_2A if n.startswith("ablations/"))
TOLERANCE = 0.03


def _spec(name: str) -> ArchSpec:
    recipe = load_recipe(RECIPES / name)
    return resolve(recipe.model, recipe.num_landmarks)


@cache
def _count(name: str) -> Complexity:
    """Count the recipe's model; built without initialising variables (the count reads only
    layer types and shapes), which saves a third of the build time."""
    import keras

    recipe = load_recipe(RECIPES / name)
    with keras.StatelessScope():
        return count_config(recipe.model, recipe.num_landmarks)


@pytest.mark.parametrize("name", sorted(TABLE_2A))
def test_row_uses_the_named_fusion_in_the_paper_setting(name: str) -> None:
    spec = _spec(name)
    fusion, _ = TABLE_2A[name]
    assert spec.fusion == fusion
    assert (spec.head, spec.input_size, spec.num_landmarks) == ("mr", (96, 96), 98)
    # Same family as lhp-large: only the fusion and the branch widths may differ.
    large = _spec("wflw.yaml")
    assert (spec.modules, spec.blocks, spec.stem_channels, spec.reduce_ratio,
            spec.iterative_head) == (large.modules, large.blocks, large.stem_channels,
                                     large.reduce_ratio, large.iterative_head)


def test_scaf_row_is_the_lhp_large_preset() -> None:
    """The SCAF row's cost is tests/test_flops.py's lhp-large check; not built twice here."""
    assert _spec("wflw.yaml") == resolve(ModelConfig(arch="lhp-large"), 98)


@pytest.mark.slow
@pytest.mark.parametrize("name", ABLATIONS)
def test_row_costs_what_the_paper_reports(name: str) -> None:
    _, target = TABLE_2A[name]
    c = _count(name)
    assert abs(c.mmcv_flops / target - 1) <= TOLERANCE, (
        f"{name}: {c.mmcv_flops / 1e6:.2f} mmcv MFLOPs, paper {target / 1e6:.2f}")


@pytest.mark.slow
@pytest.mark.parametrize("name", ABLATIONS)
def test_recipe_comment_states_the_measured_cost(name: str) -> None:
    """The figures written in the recipe's header are the ones the graph has today."""
    text = (RECIPES / name).read_text()
    stated = re.search(r"Measured: ([\d.]+)M params, ([\d.]+) mmcv MFLOPs", text)
    assert stated, f"{name}: header should state 'Measured: N.NNNM params, N.NN mmcv MFLOPs'"
    c = _count(name)
    assert float(stated.group(1)) == pytest.approx(c.params / 1e6, abs=0.0005)
    assert float(stated.group(2)) == pytest.approx(c.mmcv_flops / 1e6, abs=0.005)
