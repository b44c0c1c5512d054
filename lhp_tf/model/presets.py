"""Named architectures and the resolution of a recipe's ``model`` section into an ArchSpec.

Official layouts (the Lite-HRNet paper and its released configs): ``lite-hrnet-18`` has
(2, 4, 2) modules per stage, ``lite-hrnet-30`` (3, 8, 3); both use widths (40, 80, 160, 320),
two CCW blocks per module, CRW reduce ratio 8, pointwise fusion, the iterative head and a v1
output conv.

Lite-HRNet Plus (``lhp-large``, ``lhp-small``): the paper gives only the totals at 96x96 with
98 landmarks (1.51M params / 30.27 mmcv-style MFLOPs and 0.37M / 10.25) and that SCAF and the
MR head replace the fusion and the output module; it publishes no widths, module counts or r.
``python tools/search_lhp_presets.py`` finds the layouts: for families of (widths, stem width,
SCAF ratio r, iterative head on/off; large: widths 40.., stem 32, r 4/8; small: widths
16/20/24/30.., stem 16, r 2/4/8) it counts built Keras graphs with
:mod:`lhp_tf.model.flops`, extrapolates exactly to every modules-per-stage tuple up to
(4, 8, 4) (costs add up per module) and prints the candidates closest to both figures.

* ``lhp-large``: exactly the Lite-HRNet-30 layout ((3, 8, 3) modules, widths 40..320, stem 32,
  CRW ratio 8) with SCAF r = 4 and the MR head on the stage outputs (no iterative head):
  1.493M params (-1.1%), 30.19 mmcv MFLOPs (-0.3%). The paper-order SCAF (multiply, then
  resize) is what makes the FLOPs land: Lite-HRNet-30's layout without fusion holds about
  0.61M parameters and SCAF's per-merge FCs at r = 4 add about 0.89M (docs/FACTS.md, section 2),
  which predicted this layout from the parameter count alone.
* ``lhp-small``: no official layout fits; the closest of the 4 candidates within 3% is widths
  (24, 48, 96, 192), stem 16, modules (2, 3, 1), SCAF r = 2, iterative head kept, MR head:
  0.369M params (-0.3%), 10.22 mmcv MFLOPs (-0.3%). (Runner-up: widths 24.., modules
  (1, 1, 4), r = 8, no iterative head, 0.367M / 10.41.)

The paper's own settings remain unknown; both presets are labelled as our reconstruction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lhp_tf.errors import LhpError
from lhp_tf.kinds import FUSION_KINDS, HEAD_KINDS

if TYPE_CHECKING:  # the board reads ArchSpec from .tflite metadata without the recipe machinery
    from lhp_tf.config import ModelConfig


class ArchError(LhpError):
    """A layout that cannot build; ``key`` is the ``model.`` recipe key at fault."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key

#: The shuffle stem's total stride (two stride-2 steps): the heatmaps' stride relative to the input.
STEM_STRIDE = 4

#: Block types, in network order; every layer name starts with one of them (the FLOPs
#: breakdown and the QAT weight transfer rely on it).
BLOCK_TYPES = ("stem", "transition", "ccw", "fusion", "head")


@dataclass(frozen=True)
class Layout:
    """What a preset fixes (defaults: the official Lite-HRNet-18); recipe keys of the same name override it."""

    stem_channels: int = 32
    channels: tuple[int, ...] = (40, 80, 160, 320)
    modules: tuple[int, ...] = (2, 4, 2)
    blocks: tuple[int, ...] = (2, 2, 2)
    reduce_ratio: int = 8
    fusion: str = "pointwise"
    scaf_ratio: int = 4
    scaf_resize_first: bool = False
    fusion_groups: int = 4
    bottleneck_ratio: int = 4
    head: str = "v1"
    iterative_head: bool = True


@dataclass(frozen=True)
class ArchSpec(Layout):
    """Everything :func:`lhp_tf.model.network.build_model` needs, fully resolved."""

    name: str = ""
    num_landmarks: int = 0
    input_size: tuple[int, int] = (96, 96)

    @property
    def num_stages(self) -> int:
        return len(self.modules)

    @property
    def input_multiple(self) -> int:
        """Input sides must divide by this: the stem's stride 4 and one halving per stage."""
        return STEM_STRIDE * 2 ** self.num_stages

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (tuples as lists): what a checkpoint and a .tflite carry."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "arch") -> ArchSpec:
        """The inverse of :meth:`to_dict`, validated (:func:`validate`)."""
        if not isinstance(data, Mapping):
            raise LhpError(f"{where}: expected a mapping of architecture fields, got {type(data).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise LhpError(f"{where}: unknown architecture field(s) {', '.join(unknown)} "
                           "(written by a newer lhp-tf?)")
        try:
            spec = cls(**{k: (tuple(int(x) for x in v) if isinstance(v, list) else v) for k, v in data.items()})
            validate(spec)
        except (TypeError, ValueError, IndexError) as exc:
            raise LhpError(f"{where}: invalid architecture ({exc})") from None
        return spec


PRESETS: dict[str, Layout] = {
    "lite-hrnet-18": Layout(modules=(2, 4, 2)),
    "lite-hrnet-30": Layout(modules=(3, 8, 3)),
    "lhp-large": Layout(modules=(3, 8, 3), fusion="scaf", scaf_ratio=4, head="mr",
                         iterative_head=False),
    "lhp-small": Layout(stem_channels=16, channels=(24, 48, 96, 192), modules=(2, 3, 1),
                         fusion="scaf", scaf_ratio=2, head="mr", iterative_head=True),
}

#: ModelConfig keys that override the preset field of the same name.
_OVERRIDES = tuple(f.name for f in dataclasses.fields(Layout))


def resolve(cfg: ModelConfig, num_landmarks: int) -> ArchSpec:
    """The preset named by ``cfg.arch`` with every non-None override of ``cfg`` applied."""
    if cfg.arch not in PRESETS:
        raise ArchError("arch", f"model.arch: unknown architecture {cfg.arch!r} "
                        f"(known: {', '.join(sorted(PRESETS))})")
    values = dataclasses.asdict(PRESETS[cfg.arch])
    for key in _OVERRIDES:
        value = getattr(cfg, key, None)
        if value is not None:
            values[key] = tuple(value) if isinstance(value, list) else value
    k = cfg.num_landmarks or num_landmarks
    spec = ArchSpec(name=cfg.arch, num_landmarks=int(k),
                    input_size=(int(cfg.input_size[0]), int(cfg.input_size[1])), **values)
    validate(spec)
    return spec


def pinned(cfg: ModelConfig, num_landmarks: int) -> ModelConfig:
    """``cfg`` with every architecture key filled in from its preset.

    A run folder stores this form, so its checkpoint still builds after a preset changes.
    """
    spec = resolve(cfg, num_landmarks)
    return dataclasses.replace(cfg, **{key: getattr(spec, key) for key in _OVERRIDES})


def validate(spec: ArchSpec) -> None:
    """Reject layouts that cannot build, naming the recipe key at fault."""
    def bad(key: str, why: str) -> ArchError:
        return ArchError(key, f"model.{key}: {why} (arch {spec.name})")

    n = spec.num_stages
    if n < 1:
        raise bad("modules", "need at least one stage")
    if len(spec.channels) != n + 1:
        raise bad("channels", f"{n} stages need {n + 1} branch widths, got {len(spec.channels)}")
    if len(spec.blocks) != n:
        raise bad("blocks", f"need one entry per stage ({n}), got {len(spec.blocks)}")
    if any(c <= 0 or c % 2 for c in spec.channels):
        raise bad("channels", f"widths must be positive and even (CCW halves them), got {spec.channels}")
    if spec.stem_channels <= 0 or spec.stem_channels % 2:
        raise bad("stem_channels", f"must be positive and even, got {spec.stem_channels}")
    if any(m < 1 for m in spec.modules) or any(b < 1 for b in spec.blocks):
        raise bad("modules", "modules and blocks per stage must be >= 1")
    if spec.fusion not in FUSION_KINDS:
        raise bad("fusion", f"expected one of {', '.join(FUSION_KINDS)}, got {spec.fusion!r}")
    if spec.head not in HEAD_KINDS:
        raise bad("head", f"expected one of {', '.join(HEAD_KINDS)}, got {spec.head!r}")
    for key in ("reduce_ratio", "scaf_ratio", "fusion_groups", "bottleneck_ratio"):
        if getattr(spec, key) < 1:
            raise bad(key, f"must be >= 1, got {getattr(spec, key)}")
    if spec.fusion == "group" and any(c % spec.fusion_groups for c in spec.channels):
        raise bad("fusion_groups", f"every width must divide into {spec.fusion_groups} groups, "
                  f"got {spec.channels}")
    if spec.num_landmarks <= 0:
        raise bad("num_landmarks", f"must be > 0, got {spec.num_landmarks}")
    stride = spec.input_multiple
    h, w = spec.input_size
    if h <= 0 or w <= 0 or h % stride or w % stride:
        raise bad("input_size", f"height and width must be positive multiples of {stride} "
                  f"(the stem and {n} halvings), got {h}x{w}")
