"""Find the recipe a checkpoint was trained with, so converting needs only the checkpoint path.

``python -m lhp_tf.train RECIPE --workdir DIR`` writes the resolved recipe to
``DIR/recipe.yaml`` next to ``DIR/best.keras`` and ``DIR/last.keras``. The checkpoint carries
its own model spec (architecture, codec, landmark scheme); the recipe adds what a model file
cannot hold: where the training images are (int8 calibration, QAT) and the run's name.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from lhp_tf.config import Recipe, load_recipe
from lhp_tf.errors import LhpError

#: File name of the resolved recipe inside a run folder.
RUN_RECIPE = "recipe.yaml"


def recipe_path_for(checkpoint: str | os.PathLike[str]) -> Path:
    """Where the run folder keeps the recipe of ``checkpoint`` (it may not exist)."""
    return Path(checkpoint).parent / RUN_RECIPE


def find_recipe(checkpoint: str | os.PathLike[str], recipe: str | os.PathLike[str] | None = None,
                overrides: Sequence[str] = (), required: bool = True) -> Recipe | None:
    """The recipe of ``checkpoint``: ``recipe`` when given, else ``recipe.yaml`` beside it.

    With ``required=False`` a checkpoint without a recipe beside it gives None (its own spec
    is enough to convert it to float).
    """
    ckpt = Path(checkpoint)
    if not ckpt.exists():
        raise LhpError(f"{ckpt}: checkpoint not found")
    if recipe is not None:
        return load_recipe(recipe, overrides)
    found = recipe_path_for(ckpt)
    if not found.is_file():
        if not required:
            return None
        raise LhpError(f"{ckpt}: no {RUN_RECIPE} beside this checkpoint (looked for {found}); "
                       "pass the recipe it was trained with: --recipe RECIPE.yaml")
    return load_recipe(found, overrides)
