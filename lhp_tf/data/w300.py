"""300W reader: the official folder tree of images and ``.pts`` files, or HRNet-Facial CSVs.

``.pts`` coordinates are 1-based pixels; we subtract 1 (0-based everywhere in lhp_tf). The
HRNet-Facial CSV lists were generated from the same ``.pts`` values, so they get the same
shift. The face box is the landmarks' bounding box (no box is distributed with 300W).
This module imports neither TensorFlow nor Keras.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lhp_tf.data.sample import (
    ProblemLog,
    Sample,
    box_problem,
    image_problem,
    landmarks_box,
    parse_floats,
)

NUM_POINTS = 68
FOLDERS: dict[str, tuple[str, ...]] = {
    "train": ("afw", "helen/trainset", "lfpw/trainset"),
    "common": ("helen/testset", "lfpw/testset"),
    "challenging": ("ibug",),
    "test": ("300W/01_Indoor", "300W/02_Outdoor"),
}
FOLDERS["full"] = FOLDERS["common"] + FOLDERS["challenging"]
SPLITS = ("train", "common", "challenging", "full", "test")
IMAGE_EXTS = (".jpg", ".png", ".jpeg", ".JPG", ".PNG", ".JPEG")
#: HRNet-Facial list file per split.
CSV_FILES = {
    "train": "face_landmarks_300w_train.csv",
    "full": "face_landmarks_300w_valid.csv",
    "common": "face_landmarks_300w_valid_common.csv",
    "challenging": "face_landmarks_300w_valid_challenge.csv",
    "test": "face_landmarks_300w_test.csv",
}


def parse_pts(path: Path, log: ProblemLog) -> np.ndarray | None:
    """The 68 points of a ``.pts`` file, 0-based; problems name the file and line."""
    file = str(path)
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        log.report(file, None, f"unreadable annotation: {exc}")
        return None
    header: dict[str, str] = {}
    n = 0
    while n < len(lines) and lines[n].strip() != "{":
        key, _, value = lines[n].partition(":")
        if lines[n].strip():
            header[key.strip()] = value.strip()
        n += 1
    if n == len(lines):
        log.report(file, n, "bad .pts: no '{' line opening the point list")
        return None
    declared = header.get("n_points")
    if declared is not None and declared != str(NUM_POINTS):
        log.report(file, 2, f"wrong point count: n_points is {declared!r}, expected {NUM_POINTS}")
        return None
    points = []
    first = n + 2  # 1-based line number of the first point
    for i, text in enumerate(lines[n + 1:]):
        if text.strip() == "}":
            break
        fields = text.split()
        if len(fields) != 2:
            log.report(file, first + i, f"bad point: expected 'x y', got {text.strip()!r}")
            return None
        xy = parse_floats(fields, file, first + i, log, "the point")
        if xy is None:
            return None
        points.append(xy)
    else:
        log.report(file, len(lines), "bad .pts: no '}' line closing the point list")
        return None
    if len(points) != NUM_POINTS:
        log.report(file, first + len(points), f"wrong point count: {len(points)} points, expected {NUM_POINTS}")
        return None
    return np.array(points, np.float32) - 1.0


def find_image(pts: Path) -> Path | None:
    for ext in IMAGE_EXTS:
        p = pts.with_suffix(ext)
        if p.is_file():
            return p
    return None


def read_folder(folder: Path, log: ProblemLog, check_images: bool = True) -> list[Sample]:
    """Every ``.pts`` face in one folder (absent folder: none)."""
    if not folder.is_dir():
        return []
    out = []
    files = sorted(folder.glob("*.pts"))
    if not files:
        log.report(str(folder), None, "empty annotation list: the folder holds no .pts files")
    for pts in files:
        lm = parse_pts(pts, log)
        if lm is None:
            continue
        problem = box_problem(landmarks_box(lm))
        if problem is not None:
            log.report(str(pts), None, f"bad landmarks: all points on one line ({problem})")
            continue
        image = find_image(pts)
        if image is None:
            if check_images:
                log.report(str(pts), None, f"missing image: no {pts.stem}.jpg/.png beside the annotation")
                continue
            image = pts.with_suffix(".jpg")
        out.append(Sample(str(image), lm, landmarks_box(lm), None, f"{pts}:1"))
    return out


def read_split(root: Path, split: str, log: ProblemLog, check_images: bool = True) -> list[Sample]:
    """Samples of one 300W split from the official tree."""
    if split not in FOLDERS:
        raise ValueError(f"unknown 300W split {split!r}")
    out: list[Sample] = []
    for folder in FOLDERS[split]:
        out += read_folder(root / folder, log, check_images)
    return out


def read_csv(csv_dir: Path, root: Path, split: str, log: ProblemLog, check_images: bool = True) -> list[Sample]:
    """Samples of one split from an HRNet-Facial list (image names relative to ``root``)."""
    file = csv_dir / CSV_FILES[split]
    if not file.is_file():
        return []
    expected = 4 + 2 * NUM_POINTS
    out = []
    rows = 0
    with open(file, encoding="utf-8", errors="replace") as fh:
        for n, text in enumerate(fh, start=1):
            fields = [f.strip() for f in text.strip().split(",")]
            if n == 1 and fields and fields[0] == "image_name":
                continue
            if not text.strip():
                continue
            rows += 1
            if len(fields) != expected:
                log.report(str(file), n, f"wrong number of fields: expected {expected} (image_name, scale, "
                                         f"center_w, center_h, 68 x/y pairs), got {len(fields)}")
                continue
            values = parse_floats(fields[1:], str(file), n, log, "the row")
            if values is None:
                continue
            lm = values[3:].reshape(NUM_POINTS, 2).astype(np.float32) - 1.0
            problem = box_problem(landmarks_box(lm))
            if problem is not None:
                log.report(str(file), n, f"bad landmarks: all points on one line ({problem})")
                continue
            image = root / fields[0]
            problem = image_problem(image) if check_images else None
            if problem is not None:
                log.report(str(file), n, problem)
                continue
            out.append(Sample(str(image), lm, landmarks_box(lm), None, f"{file}:{n}"))
    if rows == 0:
        log.report(str(file), None, "empty annotation list: the file holds no face rows")
    return out
