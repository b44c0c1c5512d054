"""Keras model -> TensorFlow SavedModel folder (for TF Serving and other converters).

A SavedModel is a folder, so "atomic" means: export into a temporary sibling folder, then
swap it in with renames. A failed export leaves the previous folder (or nothing) in place.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any


def export_saved_model(model: Any, output: str | os.PathLike[str]) -> Path:
    """Export ``model`` to the folder ``output`` (replacing an existing one only on success)."""
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    old = out.parent / f".{out.name}.old"
    try:
        target = tmp / "model"
        model.export(str(target), format="tf_saved_model", verbose=False)
        if out.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
        os.replace(target, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return out
