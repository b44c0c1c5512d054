"""Device-side modules must import without TensorFlow or Keras (a board has neither)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

DEVICE_MODULES = ("lhp_tf", "lhp_tf.bench", "lhp_tf.runtime", "lhp_tf.metrics", "lhp_tf.decode",
                  "lhp_tf.codec", "lhp_tf.spec", "lhp_tf.kinds", "lhp_tf.errors", "lhp_tf.quiet",
                  "lhp_tf.recipes", "lhp_tf.tflite_metadata", "lhp_tf.tflite_graph", "lhp_tf.npu_check",
                  "lhp_tf.data.flip", "lhp_tf.data.crop")
#: a board has numpy and an interpreter only (PyYAML is a training-side dependency)
FORBIDDEN = ("tensorflow", "keras", "tf_keras", "yaml")


def test_device_modules_do_not_import_tensorflow():
    missing = [m for m in DEVICE_MODULES if importlib.util.find_spec(m) is None]
    assert not missing, f"device modules renamed or gone: {', '.join(missing)}"
    code = (f"import sys\nfor m in {DEVICE_MODULES!r}: __import__(m)\n"
            f"print(sorted({{n.split('.')[0] for n in sys.modules}} & set({FORBIDDEN!r})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", f"device modules imported {proc.stdout.strip()}"
