"""The one Keras every model module builds with.

Quantisation-aware training with tensorflow-model-optimization only accepts models built with
``tf_keras`` (Keras 2), while everything else in lhp-tf runs on Keras 3. Model code imports
``keras`` from here, so the same architecture source builds under both: set
``TF_USE_LEGACY_KERAS=1`` before the first import to get ``tf_keras``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

#: True when the model code builds on tf_keras (Keras 2) instead of Keras 3.
LEGACY: bool = os.environ.get("TF_USE_LEGACY_KERAS", "") in ("1", "true", "True")

if LEGACY:
    import tf_keras as keras
else:
    import keras

#: Package name under which every lhp-tf layer is registered (``lhp_tf>ChannelShuffle``).
PACKAGE = "lhp_tf"

T = TypeVar("T")


def register_serializable(cls: type[T]) -> type[T]:
    """Class decorator: register a layer so ``.keras`` files reload it (both Keras versions)."""
    decorator: Callable[[type[T]], type[T]] = keras.saving.register_keras_serializable(
        package=PACKAGE, name=cls.__name__)
    return decorator(cls)


__all__ = ["LEGACY", "PACKAGE", "keras", "register_serializable"]
