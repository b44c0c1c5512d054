"""Recipes: YAML files validated into typed config objects.

A recipe is a YAML mapping whose sections mirror the dataclasses below. It may name a
``base`` recipe (a path relative to itself, or a list of them); the recipe's keys are merged
over the base's, mapping by mapping. Command-line ``--set section.key=value`` overrides are
applied last and parsed as YAML scalars (``--set model.head=mr``, ``--set train.lr_steps=[5,8]``).

Every error names the key, the file and (where the key came from a file) the line, because a
typo in a 210-epoch recipe should cost seconds, not a run.

This module imports neither TensorFlow nor Keras.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from lhp_tf import kinds
from lhp_tf.errors import LhpError

# Literal types built from the one list of each kind (lhp_tf.kinds).
DatasetFormat = Literal[kinds.DATASET_FORMATS]  # type: ignore[valid-type]
FusionKind = Literal[kinds.FUSION_KINDS]  # type: ignore[valid-type]
HeadKind = Literal[kinds.HEAD_KINDS]  # type: ignore[valid-type]
Loss = Literal[kinds.LOSSES]  # type: ignore[valid-type]
Decoder = Literal[kinds.DECODERS]  # type: ignore[valid-type]
QuantMode = Literal[kinds.QUANT_MODES]  # type: ignore[valid-type]
Calibration = Literal[kinds.CALIBRATIONS]  # type: ignore[valid-type]
Distribute = Literal[kinds.DISTRIBUTE_KINDS]  # type: ignore[valid-type]
OnError = Literal[kinds.ON_ERROR]  # type: ignore[valid-type]
Optimizer = Literal[kinds.OPTIMIZERS]  # type: ignore[valid-type]

#: Landmark count implied by each dataset format (re-exported from lhp_tf.kinds).
NUM_LANDMARKS = kinds.NUM_LANDMARKS


class RecipeError(LhpError, ValueError):
    """A recipe that cannot be used; the message names file, line and key."""


@dataclass
class AugmentConfig:
    """Training-time augmentation, applied as one affine warp per sample (paper section 4.1)."""

    flip: bool = True
    rotation: float = 90.0
    scale: tuple[float, float] = (0.75, 1.25)
    translate: float = 0.05
    photometric: bool = True
    occlusion: float = 0.0
    blur: float = 0.0


@dataclass
class SynthConfig:
    """Synthetic faces generated in the real on-disk layout into ``data.cache_dir`` on first use."""

    num: int = 2000
    seed: int = 0
    image_size: int = 256


@dataclass
class DataConfig:
    format: DatasetFormat = "300w"
    root: str | None = None
    csv_dir: str | None = None
    synthetic: SynthConfig | None = None
    cache_dir: str = ".cache/lhp_tf"
    train_split: str = "train"
    val_split: str = "full"
    eval_splits: tuple[str, ...] | None = None
    on_error: OnError = "stop"
    box_scale: float = 1.25
    heatmap_sigma: float = 1.5
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    shuffle_buffer: int = 2048
    num_parallel_calls: int = -1
    deterministic: bool = False
    #: Training decodes each image once into an in-memory loose crop of cache_size pixels
    #: covering cache_margin x the face crop, so augmentation never re-reads the disk.
    cache_size: int = 176
    cache_margin: float = 1.8


@dataclass
class ModelConfig:
    """Which network to build. ``arch`` names a preset; the other keys override it."""

    arch: str = "lhp-small"
    num_landmarks: int | None = None
    input_size: tuple[int, int] = (96, 96)
    fusion: FusionKind | None = None
    head: HeadKind | None = None
    scaf_ratio: int | None = None
    channels: tuple[int, ...] | None = None
    modules: tuple[int, ...] | None = None
    blocks: tuple[int, ...] | None = None
    reduce_ratio: int | None = None
    stem_channels: int | None = None
    iterative_head: bool | None = None
    fusion_groups: int | None = None
    bottleneck_ratio: int | None = None
    scaf_resize_first: bool | None = None


@dataclass
class TrainConfig:
    epochs: int = 210
    batch_size: int = 64
    optimizer: Optimizer = "adam"
    lr: float = 0.002
    lr_steps: tuple[int, ...] = (170, 200)
    lr_factor: float = 0.1
    weight_decay: float = 0.0
    loss: Loss = "bce"
    seed: int = 0
    steps_per_epoch: int | None = None
    val_every: int = 1
    distribute: Distribute = "none"
    #: validate on the first N faces of ``data.val_split`` each epoch (None: all of them)
    val_samples: int | None = None
    #: seed everything and enable TF op determinism: same seed, same machine, same metrics
    deterministic: bool = True
    #: print the progress line every N steps when not on a terminal
    log_every: int = 20


@dataclass
class EvalConfig:
    decoder: Decoder = "dark"
    flip_test: bool = False
    fr_threshold: float = 0.10
    max_samples: int | None = None


@dataclass
class ExportConfig:
    calib_samples: int = 200
    #: int8 activation ranges: ``learned`` (trained end to end on the int8 simulation from the
    #: ``mse`` table, lhp_tf.quantize.learned_ranges; saved beside the checkpoint by ``lhp train``),
    #: ``mse`` (error-minimising search from each tensor's extremes), ``minmax``
    #: (ai-edge-quantizer's per-image min/max, moving-averaged) or ``auto`` (the one of
    #: ``mse`` and ``minmax`` that moves the landmarks least on augmented training faces)
    calibration: Calibration = "learned"
    #: steps of ``learned`` calibration (each 16 calibration images)
    learned_steps: int = 400
    quant: QuantMode = "int8"


@dataclass
class Recipe:
    name: str = "recipe"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    #: The file this recipe was loaded from (not a YAML key).
    source: str | None = field(default=None, metadata={"internal": True})

    @property
    def num_landmarks(self) -> int:
        return self.model.num_landmarks or NUM_LANDMARKS[self.data.format]

    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML-ready dict of every key (the resolved recipe a run writes)."""
        out = _to_plain(self)
        out.pop("source", None)
        return out

    def hash(self) -> str:
        """Short stable hash of the resolved recipe, embedded in exported models."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def resolve_path(self, value: str) -> Path:
        """Paths in a recipe are relative to the current directory, with ~ and $VARS expanded."""
        return Path(os.path.expandvars(os.path.expanduser(value)))


# ----------------------------------------------------------------------------- loading


class _Origin(dict):
    """Maps a dotted key path to 'file:line' so errors can point at the line that set it."""

    def where(self, path: str, default: str) -> str:
        while path:
            if path in self:
                return self[path]
            path = path.rpartition(".")[0]
        return default


def _compose_with_lines(text: str, filename: str) -> tuple[Any, dict[str, int]]:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise RecipeError(f"{filename}{line}: not valid YAML: {exc}") from None
    except RecursionError:  # PyYAML composes recursively: a few thousand nested [ or {
        raise RecipeError(f"{filename}: not a usable recipe: YAML nested too deeply") from None
    lines: dict[str, int] = {}

    def walk(n: Any, prefix: str) -> None:
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                path = f"{prefix}.{k.value}" if prefix else str(k.value)
                lines[path] = k.start_mark.line + 1
                walk(v, path)

    if node is not None:
        walk(node, "")
    return data, lines


def _merge(base: dict, over: Mapping, origin: _Origin, over_origin: Mapping[str, str], prefix: str) -> dict:
    out = dict(base)
    for k, v in over.items():
        path = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _merge(dict(out[k]), v, origin, over_origin, path)
        else:
            out[k] = v
            for p, w in over_origin.items():
                if p == path or p.startswith(path + "."):
                    origin[p] = w
        if path in over_origin:
            origin[path] = over_origin[path]
    return out


def _load_raw(path: Path, origin: _Origin, seen: tuple[Path, ...]) -> dict:
    path = path.resolve()
    if path in seen:
        chain = " -> ".join(str(p) for p in (*seen, path))
        raise RecipeError(f"{path}: recipe inherits from itself: {chain}")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise RecipeError(f"{path}: recipe file not found") from None
    except OSError as exc:
        raise RecipeError(f"{path}: cannot read recipe: {exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise RecipeError(f"{path}:{line}: recipe is not UTF-8 text (byte {raw[exc.start]:#04x} "
                          f"at offset {exc.start})") from None
    data, lines = _compose_with_lines(text, str(path))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{path}:1: a recipe must be a YAML mapping, got {type(data).__name__}")
    here = {p: f"{path}:{n}" for p, n in lines.items()}
    bases = data.pop("base", None)
    merged: dict = {}
    if bases is not None:
        if isinstance(bases, str):
            bases = [bases]
        if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
            raise RecipeError(f"{here.get('base', path)}: base: expected a path or a list of paths")
        for b in bases:
            bpath = (path.parent / b)
            try:
                found = bpath.is_file()
            except (OSError, ValueError) as exc:  # a name too long, a NUL byte
                raise RecipeError(f"{here.get('base', path)}: base: not a usable path: {exc}") from None
            if not found:
                raise RecipeError(f"{here.get('base', path)}: base: file not found: {bpath}")
            merged = _merge(merged, _load_raw(bpath, origin, (*seen, path)), origin, {}, "")
    return _merge(merged, data, origin, here, "")


def parse_override(item: str) -> tuple[str, Any]:
    """``section.key=value`` with the value parsed as YAML (so lists and numbers work)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"--set {item!r}: expected KEY=VALUE, e.g. --set model.head=mr")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise RecipeError(f"--set {item!r}: value is not valid YAML: {exc}") from None
    return key.strip(), value


def _apply_override(data: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for p in parts[:-1]:
        nxt = node.get(p)
        if nxt is None:
            nxt = node[p] = {}
        if not isinstance(nxt, dict):
            raise RecipeError(f"--set {key}: {p} is not a section")
        node = nxt
    node[parts[-1]] = value


def recipe_file(name_or_path: str | os.PathLike[str]) -> Path:
    """A recipe file: an existing path as given, else the packaged recipe of that name.

    Names are what ``lhp recipes`` lists (``300w``, ``synthetic-300w``,
    ``ablations/wflw-fusion-group``); they work from any folder after ``pip install``.
    """
    from lhp_tf import recipes

    path = Path(name_or_path)
    if path.exists():
        return path
    packaged = recipes.path_of(str(name_or_path))
    if packaged is not None:
        return packaged
    raise RecipeError(f"{path}: recipe file not found, and no packaged recipe has that name "
                      f"(packaged: {', '.join(recipes.names())}; 'lhp recipes' lists them)")


def load_recipe(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> Recipe:
    """Load, inherit, override and validate a recipe (a file, or a packaged recipe's name)."""
    path = recipe_file(path)
    origin = _Origin()
    data = _load_raw(Path(path), origin, ())
    for item in overrides:
        key, value = parse_override(item)
        _apply_override(data, key, value)
        origin[key] = f"--set {item}"
    recipe = from_dict(data, origin=origin, source=str(Path(path)))
    recipe.source = str(Path(path))
    return recipe


def from_dict(data: Mapping[str, Any], origin: Mapping[str, str] | None = None,
              source: str = "<recipe>") -> Recipe:
    """Validate a plain dict (as read from YAML) into a :class:`Recipe`."""
    org = origin if isinstance(origin, _Origin) else _Origin(origin or {})
    recipe = _build(Recipe, data, "", org, source)
    _check_ranges(recipe, org, source)
    _check_consistency(recipe, org, source)
    return recipe


# ----------------------------------------------------------------------------- validation


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}


def _build(cls: type, data: Any, prefix: str, origin: _Origin, source: str) -> Any:
    where = origin.where(prefix, source) if prefix else source
    if not isinstance(data, Mapping):
        raise RecipeError(f"{where}: {prefix or 'recipe'}: expected a mapping, got {_show(data)}")
    hints = typing.get_type_hints(cls)
    known = _fields(cls)
    kwargs = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in known:
            options = ", ".join(sorted(known))
            raise RecipeError(f"{origin.where(path, source)}: unknown key {path!r} (known: {options})")
        kwargs[key] = _coerce(hints[key], value, path, origin, source)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, path: str, origin: _Origin, source: str) -> Any:
    where = origin.where(path, source)
    o = typing.get_origin(tp)
    args = typing.get_args(tp)
    if o in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return _coerce(rest[0], value, path, origin, source)
        errors = []
        for a in rest:
            try:
                return _coerce(a, value, path, origin, source)
            except RecipeError as exc:
                errors.append(str(exc))
        raise RecipeError(errors[0])
    if dataclasses.is_dataclass(tp):
        if value is None:
            return tp()
        return _build(tp, value, path, origin, source)
    if o is Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise RecipeError(f"{where}: {path}: expected one of {choices}, got {_show(value)}")
        return value
    if o is tuple:
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"{where}: {path}: expected a list, got {_show(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{path}[{i}]", origin, source) for i, v in enumerate(value))
        if len(value) != len(args):
            raise RecipeError(f"{where}: {path}: expected a list of {len(args)} values, got {len(value)}")
        return tuple(_coerce(a, v, f"{path}[{i}]", origin, source) for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if tp is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"{where}: {path}: expected true or false, got {_show(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"{where}: {path}: expected an integer, got {_show(value)}")
        return value
    if tp is float:
        if isinstance(value, str):
            # YAML 1.1 reads 1e-3 (no dot) as a string: take any text Python reads as a number
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(f"{where}: {path}: expected a number, got {_show(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise RecipeError(f"{where}: {path}: expected a string, got {_show(value)}")
        return value
    raise TypeError(f"config type {tp!r} at {path} is not supported")


def _show(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _check_consistency(recipe: Recipe, origin: _Origin, source: str) -> None:
    from lhp_tf.model.presets import ArchError, resolve

    m = recipe.model
    if m.num_landmarks is not None and m.num_landmarks <= 0:
        raise RecipeError(f"{origin.where('model.num_landmarks', source)}: model.num_landmarks: must be > 0")

    # One rule for every architecture key (input size included): the preset resolver's.
    try:
        resolve(recipe.model, recipe.num_landmarks)
    except ArchError as exc:
        raise RecipeError(f"{origin.where('model.' + exc.key, source)}: {exc}") from None
    t = recipe.train
    if list(t.lr_steps) != sorted(t.lr_steps):
        raise RecipeError(f"{origin.where('train.lr_steps', source)}: train.lr_steps: must be increasing")


#: Allowed range of every numeric key, ``(low, high, low_open)``: ``low <= value <= high``
#: (``low < value`` when ``low_open``), None for no bound; list keys bound each item. A value
#: outside wastes a run (a zero sigma trains on a zero loss, val_every 0 divides by zero after
#: the first epoch, a negative steps_per_epoch never ends an epoch), so it is refused before
#: TensorFlow starts. tests/test_recipe_ranges.py checks that every numeric key is listed here.
RANGES: dict[str, tuple[float | None, float | None, bool]] = {
    "data.synthetic.num": (1, None, False),
    "data.synthetic.seed": (0, None, False),
    "data.synthetic.image_size": (32, 4096, False),
    "data.box_scale": (0, 10, True),
    "data.heatmap_sigma": (0, 100, True),
    "data.augment.rotation": (0, 180, False),
    "data.augment.scale": (0, 10, True),
    "data.augment.translate": (0, 1, False),
    "data.augment.occlusion": (0, 1, False),
    "data.augment.blur": (0, 1, False),
    "data.shuffle_buffer": (1, None, False),
    "data.num_parallel_calls": (-1, None, False),
    "data.cache_size": (8, 4096, False),
    "data.cache_margin": (1, 10, False),
    "train.epochs": (1, None, False),
    "train.batch_size": (1, None, False),
    "train.lr": (0, 10, True),
    "train.lr_steps": (0, None, False),
    "train.lr_factor": (0, 1, True),
    "train.weight_decay": (0, 1, False),
    "train.seed": (0, 2**32 - 1, False),
    "train.steps_per_epoch": (1, None, False),
    "train.val_every": (1, None, False),
    "train.val_samples": (1, None, False),
    "train.log_every": (1, None, False),
    "eval.fr_threshold": (0, 1, True),
    "eval.max_samples": (1, None, False),
    "export.calib_samples": (1, None, False),
    "export.learned_steps": (1, None, False),
}
#: numeric keys whose rules live elsewhere: the architecture keys in the preset resolver's one
#: rule (``lhp_tf.model.presets.validate``, called by _check_consistency), the landmark count in
#: the data.format cross-check of _check_ranges
CHECKED_ELSEWHERE = ("model.input_size", "model.num_landmarks", "model.scaf_ratio", "model.channels",
                     "model.modules", "model.blocks", "model.reduce_ratio", "model.stem_channels",
                     "model.fusion_groups", "model.bottleneck_ratio")


def numeric_keys(cls: type | None = None, prefix: str = "") -> list[str]:
    """Dotted paths of every int/float key (or list of them) of the recipe schema."""
    cls = cls or Recipe
    out = []
    for name, tp in typing.get_type_hints(cls).items():
        if name not in _fields(cls):
            continue
        path = f"{prefix}.{name}" if prefix else name
        inner = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
        base = inner[0]
        if dataclasses.is_dataclass(base):
            out += numeric_keys(base, path)
        elif base in (int, float) or (typing.get_origin(base) is tuple
                                     and typing.get_args(base)[0] in (int, float)):
            out.append(path)
    return out


def _check_ranges(recipe: Recipe, origin: _Origin, source: str) -> None:
    """Refuse numbers outside :data:`RANGES` and keys that contradict each other."""
    for path, (low, high, low_open) in RANGES.items():
        value: Any = recipe
        for part in path.split("."):
            value = getattr(value, part) if value is not None else None
        if value is None:
            continue
        for v in value if isinstance(value, tuple) else (value,):
            bad = not math.isfinite(v)
            if low is not None:
                bad = bad or (v <= low if low_open else v < low)
            if high is not None:
                bad = bad or v > high
            if bad:
                lo = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
                hi = "" if high is None else f"<= {high:g}"
                rule = " and ".join(r for r in (lo, hi) if r)
                raise RecipeError(f"{origin.where(path, source)}: {path}: must be {rule}, got {v!r}")
    d = recipe.data
    if d.augment.scale[0] > d.augment.scale[1]:
        raise RecipeError(f"{origin.where('data.augment.scale', source)}: data.augment.scale: "
                          f"[low, high] with low <= high, got {list(d.augment.scale)}")
    if d.num_parallel_calls == 0:
        raise RecipeError(f"{origin.where('data.num_parallel_calls', source)}: data.num_parallel_calls: "
                          "must be -1 (autotune) or >= 1, got 0")
    from lhp_tf.data import w300, wflw  # numpy-only readers: the one list of split names

    known = {"300w": w300.SPLITS, "wflw": wflw.SPLITS}[d.format]
    for key, names in (("data.train_split", [d.train_split]), ("data.val_split", [d.val_split]),
                       ("data.eval_splits", list(d.eval_splits or []))):
        for name in names:
            # only names a recipe set: the defaults are 300W's, and a WFLW recipe that never
            # validates needs no val_split
            if key in origin and name not in known:
                raise RecipeError(f"{origin.where(key, source)}: {key}: {d.format} has no split {name!r} "
                                  f"(known: {', '.join(known)})")
    expected = NUM_LANDMARKS[d.format]
    if recipe.model.num_landmarks is not None and recipe.model.num_landmarks != expected:
        raise RecipeError(
            f"{origin.where('model.num_landmarks', source)}: model.num_landmarks: {d.format} faces have "
            f"{expected} landmarks (the data and the flip table are {expected}-point), got "
            f"{recipe.model.num_landmarks}; remove the key or fix data.format")


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj


def dump_recipe(recipe: Recipe) -> str:
    """The resolved recipe as YAML; loading it back gives an equal recipe."""
    return yaml.safe_dump(recipe.to_dict(), sort_keys=False)
