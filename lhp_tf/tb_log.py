"""TensorBoard scalars without the ``tensorboard`` package.

``tf.summary.scalar`` lives in the tensorboard package, which TensorFlow 2.21 no longer pulls
in (and which a training box does not need: the event files are read by a TensorBoard
anywhere). Core TensorFlow's ``tf.summary.write`` with the ``scalars`` plugin metadata writes
exactly what ``tf.summary.scalar`` would, so runs are viewable with ``tensorboard --logdir``.
"""

from __future__ import annotations

import os
from typing import Any


class ScalarLog:
    """An event-file writer for scalar series (``train/loss``, ``epoch/val_nme``...)."""

    def __init__(self, logdir: str | os.PathLike[str]) -> None:
        import tensorflow as tf
        from tensorflow.core.framework import summary_pb2

        self._tf = tf
        self._writer = tf.summary.create_file_writer(str(logdir))
        meta = summary_pb2.SummaryMetadata()
        meta.plugin_data.plugin_name = "scalars"
        self._meta = meta.SerializeToString()

    def scalar(self, tag: str, value: float, step: Any) -> None:
        tf = self._tf
        with self._writer.as_default():
            tf.summary.write(tag, tf.constant(float(value), tf.float32), step=tf.cast(step, tf.int64),
                             metadata=self._meta)

    def flush(self) -> None:
        self._writer.flush()
