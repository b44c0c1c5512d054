"""``train.distribute`` -> a ``tf.distribute`` strategy.

One training loop serves all three: ``none`` is TensorFlow's default (single-device) strategy,
so the loop always runs inside ``strategy.scope()`` and ``strategy.run`` and there is no
second code path to drift out of sync.

- ``none``: the default strategy (one device).
- ``mirrored``: ``MirroredStrategy`` over the local GPUs (or over every logical CPU device when
  there is no GPU, which is how the tests exercise it).
- ``multi_worker``: ``MultiWorkerMirroredStrategy``; the cluster comes from ``TF_CONFIG``.
"""

from __future__ import annotations

import json
import os
from typing import Any

from lhp_tf.errors import LhpError
from lhp_tf.kinds import DISTRIBUTE_KINDS as KINDS


def make_strategy(kind: str) -> Any:
    import tensorflow as tf

    if kind == "none":
        return tf.distribute.get_strategy()
    if kind == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    if kind == "multi_worker":
        raw = os.environ.get("TF_CONFIG")
        if raw:
            try:
                json.loads(raw)
            except json.JSONDecodeError as exc:
                raise LhpError(f"TF_CONFIG: not valid JSON ({exc})") from None
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise LhpError(f"train.distribute: expected one of {', '.join(KINDS)}, got {kind!r}")


def is_chief() -> bool:
    """Whether this process writes the run folder (worker 0, or the only process)."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return True
    config = json.loads(raw)
    task = config.get("task", {})
    if "chief" in config.get("cluster", {}):
        return task.get("type") == "chief"
    return task.get("type", "worker") == "worker" and int(task.get("index", 0)) == 0
