"""WFLW reader: the official annotation lines (207 fields) and the test-subset lists.

A line is 196 coordinates (x0 y0 ... x97 y97, 0-based pixels), the face rectangle
(x_min y_min x_max y_max), six 0/1 attributes and the image path relative to
``WFLW_images/``. The six test subsets come from the attribute columns; when the official
``list_98pt_test_<subset>.txt`` files are present they must list the same faces, and a
disagreement is reported as a problem. This module imports neither TensorFlow nor Keras.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lhp_tf.data.sample import ProblemLog, Sample, box_problem, image_problem, parse_floats

NUM_POINTS = 98
NUM_FIELDS = 2 * NUM_POINTS + 4 + 6 + 1
#: Attribute columns, in file order, named as the test subsets are.
ATTRIBUTES = ("largepose", "expression", "illumination", "makeup", "occlusion", "blur")
SPLITS = ("train", "test", *ATTRIBUTES)

ANNOTATIONS = "WFLW_annotations"
IMAGES = "WFLW_images"
SPLIT_DIR = "list_98pt_rect_attr_train_test"
SUBSET_DIR = "list_98pt_test"


def annotation_file(root: Path, split: str) -> Path:
    """Where a split's lines live (train/test file, or a subset list)."""
    if split in ("train", "test"):
        return root / ANNOTATIONS / SPLIT_DIR / f"list_98pt_rect_attr_{split}.txt"
    return root / ANNOTATIONS / SUBSET_DIR / f"list_98pt_test_{split}.txt"


def parse_line(text: str, file: str, line: int, images: Path, log: ProblemLog,
               check_images: bool = True) -> Sample | None:
    """One annotation line -> Sample (None after reporting a problem in skip mode)."""
    fields = text.split()
    if len(fields) != NUM_FIELDS:
        log.report(file, line, f"wrong number of fields: expected {NUM_FIELDS} (196 coordinates, "
                               f"4 box, 6 attributes, image path), got {len(fields)}")
        return None
    values = parse_floats(fields[:NUM_FIELDS - 1], file, line, log, "the line")
    if values is None:
        return None
    attrs = values[200:206]
    if not np.all((attrs == 0) | (attrs == 1)):
        log.report(file, line, f"bad attribute: the six attribute columns must be 0 or 1, got {attrs.tolist()}")
        return None
    box = values[196:200]
    problem = box_problem(box)
    if problem is not None:
        log.report(file, line, problem)
        return None
    path = images / fields[-1]
    problem = image_problem(path) if check_images else None
    if problem is not None:
        log.report(file, line, problem)
        return None
    return Sample(image_path=str(path), landmarks=values[:196].reshape(NUM_POINTS, 2), box=box,
                  attributes={k: int(v) for k, v in zip(ATTRIBUTES, attrs, strict=True)}, source=f"{file}:{line}")


def read_lines(file: Path, images: Path, log: ProblemLog, check_images: bool = True) -> list[Sample]:
    """Every sample of one annotation file; an absent file is an empty split."""
    if not file.is_file():
        return []
    out = []
    lines = 0
    with open(file, encoding="utf-8", errors="replace") as fh:
        for n, text in enumerate(fh, start=1):
            if not text.strip():
                continue
            lines += 1
            s = parse_line(text, str(file), n, images, log, check_images)
            if s is not None:
                out.append(s)
    if lines == 0:
        log.report(str(file), None, "empty annotation list: the file holds no face lines")
    return out


def _key(s: Sample) -> tuple:
    return (Path(s.image_path).as_posix(), tuple(np.round(s.landmarks.ravel(), 3).tolist()))


def read_split(root: Path, split: str, log: ProblemLog, check_images: bool = True) -> list[Sample]:
    """Samples of ``train``, ``test`` or one of the six test subsets."""
    if split not in SPLITS:
        raise ValueError(f"unknown WFLW split {split!r}")
    images = root / IMAGES
    if split in ("train", "test"):
        return read_lines(annotation_file(root, split), images, log, check_images)
    test = read_lines(annotation_file(root, "test"), images, log, check_images)
    from_attr = [s for s in test if s.attributes and s.attributes[split]]
    list_file = annotation_file(root, split)
    if list_file.is_file():
        listed = read_lines(list_file, images, log, check_images)
        a = {_key(s) for s in from_attr}
        b = {_key(s) for s in listed}
        if a != b:
            log.report(str(list_file), None,
                       f"subset disagreement: {len(b - a)} faces listed here lack the {split!r} attribute "
                       f"in the test file, {len(a - b)} faces with the attribute are not listed")
    return from_attr
