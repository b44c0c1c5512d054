"""The graph every exporter starts from: the trained network at a fixed batch, in heatmap space.

Training builds the network with a dynamic batch and outputs heatmap logits. Deployment wants
neither: a dynamic batch adds SHAPE/RESHAPE ops that stop XNNPACK from taking the graph
(REFERENCE section 6), and a board should read heatmaps in [0, 1] without knowing which loss
was used. So the network is rebuilt from the recipe with ``batch_size=1``, the checkpoint's
weights are copied over tensor by tensor (same builder, same order), and the recipe's heatmap
activation is appended (``with_heatmap_activation``).
"""

from __future__ import annotations

import os
from typing import Any

from lhp_tf.config import Recipe
from lhp_tf.errors import LhpError


def load_checkpoint(checkpoint: str | os.PathLike[str]) -> Any:
    """The Keras model saved at ``checkpoint`` (custom layers registered)."""
    from lhp_tf.model.network import load_model

    try:
        return load_model(checkpoint)
    except LhpError:
        raise
    except (OSError, ValueError) as exc:
        raise LhpError(f"{checkpoint}: cannot load the checkpoint ({exc})") from exc


def copy_weights(source: Any, target: Any, where: str) -> None:
    """``target.set_weights(source.get_weights())`` with a clear error on an architecture mismatch."""
    src, dst = source.get_weights(), target.weights
    if len(src) != len(dst):
        raise LhpError(f"{where}: the checkpoint has {len(src)} weight tensors, the recipe's model has "
                       f"{len(dst)}: was it trained with another recipe? (pass --recipe)")
    for value, var in zip(src, dst):
        if tuple(value.shape) != tuple(var.shape):
            raise LhpError(f"{where}: weight {getattr(var, 'path', var.name)} has shape {tuple(value.shape)} "
                           f"in the checkpoint and {tuple(var.shape)} in the recipe's model (pass --recipe)")
    target.set_weights(src)


def inference_model(trained: Any, recipe: Recipe, batch_size: int | None = 1,
                    where: str = "<model>") -> Any:
    """``trained`` rebuilt at ``batch_size`` (None: dynamic) with the recipe's heatmap activation."""
    from lhp_tf.model.network import build_model, with_heatmap_activation

    fixed = build_model(recipe.model, recipe.num_landmarks, batch_size=batch_size)
    copy_weights(trained, fixed, where)
    return with_heatmap_activation(fixed, recipe.train.loss)


def heatmap_activation(recipe: Recipe) -> str:
    """The metadata name of the activation ``with_heatmap_activation`` appends for this recipe."""
    return "sigmoid" if recipe.train.loss == "bce" else "none"
