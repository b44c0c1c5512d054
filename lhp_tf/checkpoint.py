"""Crash-safe run state: everything a killed training run needs to resume, in ONE file.

``state.npz`` is the single commit point of a run: the epoch just finished, model weights,
optimizer variables (Adam moments and the step counter), the best weights so far and the
per-epoch history. It is written to a temporary file in the same folder and renamed over the
old one, so a run killed at any moment (``kill -9`` included) finds either the previous or
the new state, never half of one. ``last.keras``, ``best.keras`` and ``metrics.jsonl`` are
views derived from it and are rewritten from it on resume, so they can never disagree with
the state the run continues from.

Data order needs no state: the pipeline's order is a pure function of (seed, epoch).
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lhp_tf.errors import LhpError

STATE_FILE = "state.npz"
STATE_VERSION = 1


class CheckpointError(LhpError):
    """A run folder whose state cannot be used to resume."""


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` on a temporary file next to ``path``, then rename it over ``path``.

    The temporary file keeps ``path``'s suffix because some writers (Keras) insist on it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the result is an ordinary file
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def save_keras(model: Any, path: str | os.PathLike[str]) -> None:
    """``model.save`` to ``path`` atomically (a ``.keras`` zip is never left half-written)."""
    def write(tmp: str) -> None:
        os.unlink(tmp)  # Keras refuses to overwrite silently in some versions
        model.save(tmp)

    atomic_write(path, write)


@dataclass
class RunState:
    """What ``state.npz`` holds. ``epoch`` counts finished epochs (resume starts there)."""

    epoch: int
    weights: list[np.ndarray]
    optimizer: list[np.ndarray]
    best_weights: list[np.ndarray] | None = None
    best_nme: float = float("inf")
    best_epoch: int = -1
    history: list[dict[str, Any]] = field(default_factory=list)
    recipe_hash: str = ""


def save_state(path: str | os.PathLike[str], state: RunState) -> None:
    """Write ``state`` atomically (one ``os.replace``: the run's commit point)."""
    arrays: dict[str, np.ndarray] = {}
    for i, w in enumerate(state.weights):
        arrays[f"w{i}"] = np.asarray(w)
    for i, v in enumerate(state.optimizer):
        arrays[f"o{i}"] = np.asarray(v)
    for i, w in enumerate(state.best_weights or []):
        arrays[f"b{i}"] = np.asarray(w)
    meta = {
        "version": STATE_VERSION,
        "epoch": state.epoch,
        "num_weights": len(state.weights),
        "num_optimizer": len(state.optimizer),
        "num_best": len(state.best_weights or []),
        "best_nme": state.best_nme if np.isfinite(state.best_nme) else None,
        "best_epoch": state.best_epoch,
        "history": state.history,
        "recipe_hash": state.recipe_hash,
    }
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(buf.getvalue()))


def load_state(path: str | os.PathLike[str]) -> RunState:
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(bytes(z["meta"]).decode())
            if meta.get("version") != STATE_VERSION:
                raise CheckpointError(f"{path}: state version {meta.get('version')} is not "
                                      f"{STATE_VERSION}; this lhp_tf cannot resume it")
            weights = [z[f"w{i}"] for i in range(meta["num_weights"])]
            opt = [z[f"o{i}"] for i in range(meta["num_optimizer"])]
            best = [z[f"b{i}"] for i in range(meta["num_best"])] or None
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no run state to resume from") from None
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{path}: run state is unreadable ({exc})") from None
    best_nme = meta["best_nme"]
    return RunState(epoch=int(meta["epoch"]), weights=weights, optimizer=opt, best_weights=best,
                    best_nme=float("inf") if best_nme is None else float(best_nme),
                    best_epoch=int(meta["best_epoch"]), history=list(meta["history"]),
                    recipe_hash=str(meta.get("recipe_hash", "")))


def assign_all(variables: Sequence[Any], values: Sequence[np.ndarray], what: str,
               source: str | os.PathLike[str]) -> None:
    """Assign saved arrays to variables, refusing a mismatch (another architecture or optimizer)."""
    if len(variables) != len(values):
        raise CheckpointError(f"{source}: saved {what} has {len(values)} tensors, the current run has "
                              f"{len(variables)} (was the recipe's model or optimizer changed?)")
    for var, val in zip(variables, values, strict=True):
        if tuple(var.shape) != tuple(val.shape):
            raise CheckpointError(f"{source}: saved {what} tensor {getattr(var, 'path', var.name)} has "
                                  f"shape {tuple(val.shape)}, the current run has {tuple(var.shape)}")
        var.assign(val)
