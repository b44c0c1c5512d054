"""A freshly built, untrained run folder (checkpoint + recipe) for benchmarks whose figures do
not depend on trained weights: latency, conversion time, per-op cost."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: int8 export of untrained runs timed for speed: the ranges change no op, so the learned ones
#: (minutes of training per checkpoint) are skipped for the MSE search's
UNTRAINED_EXPORT = ("export.calib_samples=32", "export.calibration=mse")


def untrained_run(tmp: Path, arch: str = "lhp-small", overrides: Sequence[str] = ()) -> Path:
    """``tmp/ARCH/best.keras`` with its ``recipe.yaml`` (the synthetic recipe, 64 faces cached
    under ``tmp``); returns the checkpoint path."""
    from lhp_tf.config import dump_recipe, load_recipe
    from lhp_tf.model.network import LandmarkNet
    from lhp_tf.spec import ModelSpec

    recipe = load_recipe(REPO / "recipes" / "synthetic-300w.yaml",
                         [f"model.arch={arch}", f"data.cache_dir={tmp / 'cache'}", "data.synthetic.num=64", *overrides])
    run = tmp / arch
    run.mkdir()
    LandmarkNet(ModelSpec.from_recipe(recipe)).save(run / "best.keras")
    (run / "recipe.yaml").write_text(dump_recipe(recipe))
    return run / "best.keras"
