"""What a landmark model is: its architecture, its heatmap codec and its landmark scheme.

A :class:`ModelSpec` is made once from the recipe when training starts, travels inside the
Keras checkpoint (``LandmarkNet.get_config`` returns it, as keras-hub's backbones return their
constructor arguments) and, whole, inside the .tflite metadata under ``spec``. Everything
downstream reads it from the model file it has: export needs no recipe beside the checkpoint,
and a board needs nothing beside the .tflite to crop, decode and flip-test exactly as training
and ``lhp eval`` did.

Numpy only: the board imports this module.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from lhp_tf.codec import HeatmapCodec
from lhp_tf.errors import LhpError
from lhp_tf.kinds import ACTIVATION, DATASET_FORMATS
from lhp_tf.model.presets import ArchSpec

if TYPE_CHECKING:
    from lhp_tf.config import Recipe

#: version of the ``to_dict`` layout; a reader refuses a newer one with a clear message
SPEC_VERSION = 1


@dataclass(frozen=True)
class ModelSpec:
    """The resolved architecture, the heatmap codec, the landmark scheme and the crop rule.

    ``dataset_format`` names the landmark scheme (``300w``: iBUG-68, ``wflw``: WFLW-98);
    ``flip_permutation`` maps landmark i of a mirrored face to its original (None only for a
    scheme without a flip table, which recipes do not allow today: ``model.num_landmarks`` must
    match the format); ``box_scale`` enlarges the face box into the crop.
    """

    arch: ArchSpec
    codec: HeatmapCodec
    dataset_format: str
    flip_permutation: tuple[int, ...] | None
    box_scale: float

    def __post_init__(self) -> None:
        if self.codec.input_size != tuple(self.arch.input_size):
            raise LhpError(f"spec: codec input size {self.codec.input_size} differs from the "
                           f"architecture's {self.arch.input_size}")
        if self.dataset_format not in DATASET_FORMATS:
            raise LhpError(f"spec: dataset_format {self.dataset_format!r}: expected one of "
                           f"{', '.join(DATASET_FORMATS)}")
        perm = self.flip_permutation
        if perm is not None and sorted(perm) != list(range(self.arch.num_landmarks)):
            raise LhpError(f"spec: flip_permutation is not a permutation of {self.arch.num_landmarks} landmarks")
        if not self.box_scale > 0:
            raise LhpError(f"spec: box_scale must be > 0, got {self.box_scale}")

    @property
    def num_landmarks(self) -> int:
        return self.arch.num_landmarks

    @property
    def input_size(self) -> tuple[int, int]:
        return self.codec.input_size

    def flip_array(self) -> np.ndarray | None:
        return None if self.flip_permutation is None else np.asarray(self.flip_permutation, np.int64)

    @classmethod
    def from_recipe(cls, recipe: Recipe) -> ModelSpec:
        """The spec a run of ``recipe`` trains (and so the one its checkpoints carry)."""
        from lhp_tf.data.flip import flip_permutation, has_flip_table
        from lhp_tf.model.presets import resolve

        arch = resolve(recipe.model, recipe.num_landmarks)
        k = arch.num_landmarks
        codec = HeatmapCodec(input_size=arch.input_size, sigma=float(recipe.data.heatmap_sigma),
                             activation=ACTIVATION[recipe.train.loss], decoder=recipe.eval.decoder)
        perm = tuple(int(v) for v in flip_permutation(k)) if has_flip_table(k) else None
        return cls(arch=arch, codec=codec, dataset_format=recipe.data.format, flip_permutation=perm,
                   box_scale=float(recipe.data.box_scale))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready and complete: :meth:`from_dict` gives back an equal spec."""
        return {"version": SPEC_VERSION, "arch": self.arch.to_dict(), "codec": self.codec.to_dict(),
                "dataset_format": self.dataset_format,
                "flip_permutation": None if self.flip_permutation is None else list(self.flip_permutation),
                "box_scale": self.box_scale}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "spec") -> ModelSpec:
        if not isinstance(data, Mapping):
            raise LhpError(f"{where}: the model spec is a {type(data).__name__}, expected a mapping")
        version = data.get("version")
        if version != SPEC_VERSION:
            raise LhpError(f"{where}: model spec version {version!r}; this lhp-tf reads version "
                           f"{SPEC_VERSION} (upgrade lhp-tf, or re-export the model with this one)")
        expected = {f.name for f in dataclasses.fields(cls)} | {"version"}
        missing = sorted(expected - set(data))
        unknown = sorted(set(data) - expected)
        if missing or unknown:
            raise LhpError(f"{where}: model spec " + "; ".join(
                part for part in (f"missing {', '.join(missing)}" if missing else "",
                                  f"unknown {', '.join(unknown)}" if unknown else "") if part))
        perm = data["flip_permutation"]
        try:
            return cls(arch=ArchSpec.from_dict(data["arch"], f"{where}: arch"),
                       codec=HeatmapCodec.from_dict(data["codec"], f"{where}: codec"),
                       dataset_format=str(data["dataset_format"]),
                       flip_permutation=None if perm is None else tuple(int(v) for v in perm),
                       box_scale=float(data["box_scale"]))
        except (TypeError, ValueError, AttributeError, IndexError) as exc:
            raise LhpError(f"{where}: invalid model spec ({exc})") from None

    def differences(self, other: ModelSpec) -> list[str]:
        """Dotted names of the fields where ``other`` differs (for "checkpoint vs recipe" errors)."""
        mine, theirs = _flatten(self.to_dict()), _flatten(other.to_dict())
        return sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
