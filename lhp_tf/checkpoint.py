"""Crash-safe run state: everything a killed training run needs to resume, in ONE file.

``state.npz`` is the single commit point of a run: the epoch just finished, model weights,
optimizer variables (Adam moments and the step counter), the best weights so far and the
per-epoch history. It is written to a temporary file in the same folder and renamed over the
old one, so a run killed at any moment (``kill -9`` included) finds either the previous or
the new state, never half of one. ``last.keras``, ``best.keras`` and ``metrics.jsonl`` are
views derived from it and are rewritten from it on resume, so they can never disagree with
the state the run continues from.

Data order needs no state: the pipeline's order is a pure function of (seed, epoch).

A run folder has one owner at a time (:class:`RunLock`): a second training into the same
folder is refused instead of interleaving its files with the first's. The lock is a kernel
``flock`` on ``.lock`` (which names the owner's pid and host), so a run killed with ``kill -9``
releases it and never blocks ``--resume``. Temporary files carry their writer's pid and host
(``.{stem}.{pid}@{host}.XXXXXXXX{suffix}``) so the orphans of killed writes can be told from
a live writer's and are removed when the folder is next opened.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import json
import os
import re
import socket
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lhp_tf.errors import LhpError

STATE_FILE = "state.npz"
STATE_VERSION = 1
LOCK_FILE = ".lock"
#: the files a run folder's owner writes (temporary siblings of these without a writer tag
#: come from lhp_tf versions before tagging and are orphans once the folder is locked)
RUN_FILES = ("state.npz", "recipe.yaml", "last.keras", "best.keras", "metrics.jsonl")


class CheckpointError(LhpError):
    """A run folder whose state cannot be used to resume."""


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` on a temporary file next to ``path``, then rename it over ``path``.

    The temporary file keeps ``path``'s suffix because some writers (Keras) insist on it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.{_writer_tag()}.", suffix=path.suffix, dir=path.parent)
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


def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def _writer_tag() -> str:
    """``pid@host`` of this process, as temporary file names carry it."""
    return f"{os.getpid()}@{_host_tag()}"


_TAGGED = re.compile(r"^\.(?P<stem>.+)\.(?P<pid>\d+)@(?P<host>[0-9a-f]{8})\.[a-z0-9_]{8}(?P<suffix>\.[^.]*)?$")
_UNTAGGED = re.compile(r"^\.(?P<stem>[^.]+)\.[a-z0-9_]{8}(?P<suffix>\.[^.]*)?$")


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


def clean_stale_temps(folder: str | os.PathLike[str], before: float | None = None) -> list[Path]:
    """Remove temporary files that killed writers left in ``folder``; returns what was removed.

    A tagged file goes when its writer (pid on this host) is gone; a live writer's stays.
    An untagged one (older lhp_tf) goes when it shadows a run file and is older than
    ``before`` (the moment the caller took the folder's lock: no live writer can own it).
    """
    removed = []
    me = _host_tag()
    for entry in os.scandir(folder):
        if not entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
            continue
        m = _TAGGED.match(entry.name)
        if m is not None:
            stale = m["host"] == me and not pid_alive(int(m["pid"]))
        else:
            m = _UNTAGGED.match(entry.name)
            stale = (m is not None and before is not None and f"{m['stem']}{m['suffix'] or ''}" in RUN_FILES
                     and entry.stat(follow_symlinks=False).st_mtime < before)
        if stale:
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except FileNotFoundError:
                pass
    return removed


class RunLock:
    """Exclusive ownership of a run folder for the life of one training process.

    ``flock`` is released by the kernel when its holder dies, so the lock of a killed run is
    never stale; the file's content (pid, host, start time) only names the owner in the
    refusal message. Locks on network file systems are only as good as their ``flock``.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.fd: int | None = None
        self.removed: list[Path] = []

    def acquire(self) -> RunLock:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LhpError(f"{self.folder}: cannot create the run folder ({exc.strerror or exc})") from None
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as exc:
                raise LhpError(f"{self.path}: cannot create the run folder's lock ({exc.strerror or exc})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                owner = _lock_owner(fd)
                os.close(fd)
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise LhpError(f"{self.path}: cannot lock the run folder ({exc.strerror})") from None
                raise LhpError(f"{self.folder}: run folder is in use by another training ({owner}); wait for "
                               f"it to end or choose another --workdir") from None
            try:  # the previous owner may have removed the file between our open and flock
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        started = time.time()
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": round(started, 3)}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self.fd = fd
        self.removed = clean_stale_temps(self.folder, before=started)
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.unlink(self.path)  # still holding the flock: nobody can take a removed file
        except FileNotFoundError:
            pass
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _lock_owner(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return f"pid {info['pid']} on {info['host']}, since " + time.strftime(
            "%Y-%m-%d %H:%M:%S", time.localtime(float(info["started"])))
    except (ValueError, KeyError, TypeError, OSError):
        return "owner unknown"


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
    """Read ``state.npz``; a missing, truncated or corrupt file is a :class:`CheckpointError`."""
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
        best_nme = meta["best_nme"]
        return RunState(epoch=int(meta["epoch"]), weights=weights, optimizer=opt, best_weights=best,
                        best_nme=float("inf") if best_nme is None else float(best_nme),
                        best_epoch=int(meta["best_epoch"]), history=list(meta["history"]),
                        recipe_hash=str(meta.get("recipe_hash", "")))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no run state to resume from") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, EOFError, zipfile.BadZipFile,
            zlib.error) as exc:  # a truncated zip, a torn member, a meta of the wrong shape
        raise CheckpointError(f"{path}: run state is unreadable ({type(exc).__name__}: {exc})") from None


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
