"""Heatmap losses: MSE and BCE (on logits), weighted per landmark.

The model outputs heatmap *logits* (CONTRACTS: no activation), so BCE is computed with
``sigmoid_cross_entropy_with_logits`` (numerically stable, and the sigmoid is appended only at
export time) while MSE compares the raw outputs with the Gaussian targets directly.

Each loss returns one value *per sample* (shape ``(B,)``): a distribution strategy averages
per-sample losses over the *global* batch (``tf.nn.compute_average_loss``), which a scalar mean
computed per replica would get wrong.

Per-landmark weights come from the pipeline's ``{"heatmap", "weight"}`` targets (0 for a
landmark that left the crop, for example); a sample's loss is the weighted mean over its
landmarks' per-pixel mean, normalised by the number of landmarks so that the scale does not
depend on how many points are visible.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lhp_tf.kinds import LOSSES


def _per_landmark(kind: str, target: Any, logits: Any) -> Any:
    import tensorflow as tf

    target = tf.cast(target, logits.dtype)
    if kind == "bce":
        pixel = tf.nn.sigmoid_cross_entropy_with_logits(labels=target, logits=logits)
    elif kind == "mse":
        pixel = tf.square(logits - target)
    else:
        raise ValueError(f"unknown heatmap loss {kind!r} (known: {', '.join(LOSSES)})")
    return tf.reduce_mean(pixel, axis=(1, 2))  # (B, K)


def per_sample_loss(kind: str, targets: dict[str, Any], logits: Any) -> Any:
    """Loss of each sample, shape ``(B,)``.

    ``targets`` is the pipeline's dict: ``heatmap (B,h,w,K)`` and ``weight (B,K)``;
    ``logits`` the model output ``(B,h,w,K)``.
    """
    import tensorflow as tf

    per_k = _per_landmark(kind, targets["heatmap"], logits)
    weight = tf.cast(targets["weight"], per_k.dtype)
    return tf.reduce_mean(per_k * weight, axis=-1)


def heatmap_loss(kind: str) -> Callable[[dict[str, Any], Any], Any]:
    """The per-sample loss function named by ``train.loss``."""
    if kind not in LOSSES:
        raise ValueError(f"unknown heatmap loss {kind!r} (known: {', '.join(LOSSES)})")

    def loss(targets: dict[str, Any], logits: Any) -> Any:
        return per_sample_loss(kind, targets, logits)

    loss.__name__ = f"{kind}_heatmap_loss"
    return loss
