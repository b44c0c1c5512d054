"""How much of each preset's batch-1 float TFLite graph XNNPACK takes.

Converts ``build_model(..., batch_size=1)`` plus the BCE sigmoid with
``tf.lite.TFLiteConverter.from_keras_model`` and counts delegated nodes with
:func:`lhp_tf.runtime.op_delegation`. Slow (minutes per preset on 2 cores): not a unit test.

    python benchmarks/tflite_delegation.py lhp-small lhp-large
"""

from __future__ import annotations

import collections
import contextlib
import io
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv: list[str]) -> int:
    import tensorflow as tf

    from lhp_tf.config import ModelConfig
    from lhp_tf.model.network import build_model, with_heatmap_activation
    from lhp_tf.runtime import load_interpreter, op_delegation

    for arch in argv or ["lhp-small", "lhp-large"]:
        t0 = time.perf_counter()
        model = with_heatmap_activation(build_model(ModelConfig(arch=arch), 98, batch_size=1), "bce")
        with contextlib.redirect_stdout(io.StringIO()):  # the export lists every captured variable
            buf = tf.lite.TFLiteConverter.from_keras_model(model).convert()
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, f"{arch}.tflite")
            with open(path, "wb") as f:
                f.write(buf)
            counts = op_delegation(path)
            interpreter, _ = load_interpreter(path, xnnpack=False)
            ops = collections.Counter(op["op_name"] for op in interpreter._get_ops_details())
        print(f"{arch}: {counts['delegated']} of {counts['total']} nodes delegated to XNNPACK "
              f"({len(buf) / 1e6:.2f} MB, {time.perf_counter() - t0:.0f} s); ops: {dict(ops)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
