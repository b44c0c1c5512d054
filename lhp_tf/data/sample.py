"""One annotated face, and how bad annotations are reported.

Every reader produces :class:`Sample` objects and reports problems through a
:class:`ProblemLog`, so ``data.on_error`` (stop | skip) behaves the same for WFLW, 300W
and the HRNet CSV lists. This module imports neither TensorFlow nor Keras.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lhp_tf.errors import LhpError

#: Largest coordinate (or other annotation number) accepted, in pixels. Samples store float32,
#: in which 1e39 becomes infinity; a value this large is a corrupt file, not a face.
MAX_VALUE = 1e6


class DataError(LhpError):
    """A dataset file that cannot be used; the message names the file and the line."""


@dataclass
class Sample:
    """One face: its image, landmarks in 0-based image pixels, face box and origin."""

    image_path: str
    landmarks: np.ndarray
    box: np.ndarray
    attributes: dict[str, int] | None = None
    source: str = ""

    def __post_init__(self) -> None:
        self.landmarks = np.asarray(self.landmarks, np.float32).reshape(-1, 2)
        self.box = np.asarray(self.box, np.float32).reshape(4)


@dataclass
class Problem:
    """One bad annotation or image, as ``lhp data check --json`` prints it."""

    file: str
    line: int | None
    error: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.error}"

    def to_dict(self) -> dict:
        return {"file": self.file, "line": self.line, "error": self.error}


@dataclass
class ProblemLog:
    """Collects problems; in ``stop`` mode the first one raises :class:`DataError`."""

    on_error: str = "stop"
    problems: list[Problem] = field(default_factory=list)

    def report(self, file: str, line: int | None, error: str) -> None:
        problem = Problem(str(file), line, error)
        if self.on_error == "stop":
            raise DataError(str(problem))
        self.problems.append(problem)

    def summary(self) -> str:
        """'skipped N samples: 3 x missing image, ...' (empty when nothing was skipped)."""
        if not self.problems:
            return ""
        kinds = Counter(p.error.split(":")[0] for p in self.problems)
        parts = ", ".join(f"{n} x {k}" for k, n in kinds.most_common())
        return f"skipped {len(self.problems)} samples: {parts}"


def parse_floats(fields: list[str], file: str, line: int, log: ProblemLog, what: str) -> np.ndarray | None:
    """Floats from text fields; garbage and NaN/inf are reported instead of propagated."""
    # plain Python checks: called once per point (95,200 times for 1,400 .pts files), where
    # numpy's per-call overhead dominated reading a split
    try:
        floats = [float(f) for f in fields]
    except ValueError:
        bad = next(f for f in fields if not _is_float(f))
        log.report(file, line, f"bad number: {what} has {bad!r}, not a number")
        return None
    if not all(math.isfinite(v) for v in floats):
        log.report(file, line, f"bad number: {what} contains NaN or infinity")
        return None
    big = [abs(v) > MAX_VALUE for v in floats]
    if any(big):
        log.report(file, line, f"bad number: {what} has {fields[big.index(True)]!r}, beyond "
                               f"+-{MAX_VALUE:g} pixels (no image is that large)")
        return None
    return np.array(floats, np.float64)


def image_problem(path: Path) -> str | None:
    """Why ``path`` cannot be an annotation's image (None: it is a file).

    A mutated or hand-edited line can hold a name too long for the file system or a NUL byte;
    ``Path.is_file`` raises on those instead of answering False.
    """
    try:
        if path.is_file():
            return None
    except (OSError, ValueError) as exc:
        shown = str(path) if len(str(path)) <= 200 else str(path)[:200] + "..."
        return f"bad image path: {shown} ({exc.__class__.__name__}: {getattr(exc, 'strerror', None) or exc})"
    return f"missing image: {path}"


def box_problem(box: np.ndarray) -> str | None:
    """Why a face box cannot be cropped (None: it has an area)."""
    if box[2] <= box[0] or box[3] <= box[1]:
        return f"bad box: face rectangle {np.round(box, 3).tolist()} is empty"
    return None


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def landmarks_box(landmarks: np.ndarray) -> np.ndarray:
    """The landmarks' bounding box (the usual 300W face box)."""
    lo = landmarks.min(axis=0)
    hi = landmarks.max(axis=0)
    return np.array([lo[0], lo[1], hi[0], hi[1]], np.float32)
