"""Horizontal-flip landmark permutations (iBUG-68 and WFLW-98).

Index ``i`` of a mirrored face is point ``p[i]`` of the original. Both tables are
involutions. Numpy only: the device side uses them for flip-test inference.
"""

from __future__ import annotations

import numpy as np

from lhp_tf.errors import LhpError


def _perm68() -> list[int]:
    p = list(range(16, -1, -1))                      # jaw
    p += list(range(26, 16, -1))                     # brows
    p += [27, 28, 29, 30]                            # nose bridge
    p += [35, 34, 33, 32, 31]                        # nostrils
    p += [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]  # eyes
    p += list(range(54, 47, -1)) + list(range(59, 54, -1))  # outer lips
    p += list(range(64, 59, -1)) + [67, 66, 65]      # inner lips
    return p


def _perm98() -> list[int]:
    p = list(range(32, -1, -1))                      # contour
    p += [46, 45, 44, 43, 42, 50, 49, 48, 47]        # right brow -> left brow
    p += [37, 36, 35, 34, 33, 41, 40, 39, 38]        # left brow -> right brow
    p += [51, 52, 53, 54]                            # nose bridge
    p += list(range(59, 54, -1))                     # nostrils
    p += list(range(72, 67, -1)) + [75, 74, 73]      # right eye -> left eye
    p += list(range(64, 59, -1)) + [67, 66, 65]      # left eye -> right eye
    p += list(range(82, 75, -1)) + list(range(87, 82, -1))  # outer lips
    p += list(range(92, 87, -1)) + [95, 94, 93]      # inner lips
    p += [97, 96]                                    # pupils
    return p


_TABLES = {68: np.array(_perm68(), np.int32), 98: np.array(_perm98(), np.int32)}


def flip_permutation(num_landmarks: int) -> np.ndarray:
    """The mirror permutation for a known landmark scheme (68 or 98 points)."""
    try:
        return _TABLES[num_landmarks].copy()
    except KeyError:
        raise LhpError(f"no horizontal-flip table for {num_landmarks} landmarks (known: 68, 98); "
                       "turn off data.augment.flip and eval.flip_test for a custom scheme") from None


def flip_landmarks(landmarks: np.ndarray, width: int) -> np.ndarray:
    """Landmarks of the mirrored image (``x -> width - 1 - x``), re-ordered by the permutation."""
    lm = np.asarray(landmarks, np.float32)
    perm = flip_permutation(lm.shape[-2])
    out = lm[..., perm, :].copy()
    out[..., 0] = (width - 1) - out[..., 0]
    return out


def has_flip_table(num_landmarks: int) -> bool:
    """Whether :func:`flip_permutation` knows this landmark count."""
    return num_landmarks in _TABLES
