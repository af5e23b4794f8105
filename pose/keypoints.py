"""The 36-keypoint vehicle model (Ansari et al. 2018, as used by PAMTRI): the one definition.

Keypoints 0-17 lie on the vehicle's left side, 18-35 on its right side; ``k + 18`` mirrors ``k``.
Indices are 0-based. Everything else in pamtri imports these names; no index list is repeated.
"""
from __future__ import annotations

import numpy as np

NUM_KEYPOINTS = 36
NUM_SIDE = 18

_SIDE_NAMES = (
    "rear_wheel", "front_wheel",
    "front_arch_front_bottom", "front_arch_front_upper", "front_arch_rear_upper", "front_arch_rear_bottom",
    "rear_arch_front_bottom", "rear_arch_front_upper", "rear_arch_rear_upper", "rear_arch_rear_bottom",
    "back_bottom_corner", "back_upper_corner", "back_windshield_base", "roof_rear_corner",
    "roof_front_corner", "front_windshield_base", "front_upper_corner", "front_bottom_corner",
)
KEYPOINT_NAMES: tuple[str, ...] = tuple(f"left_{n}" for n in _SIDE_NAMES) + tuple(f"right_{n}" for n in _SIDE_NAMES)

FLIP_PAIRS: tuple[tuple[int, int], ...] = tuple((k, k + NUM_SIDE) for k in range(NUM_SIDE))

# FLIP_INDEX[k] is the keypoint that k becomes under a horizontal flip: flipped = kps[..., FLIP_INDEX, :].
FLIP_INDEX: tuple[int, ...] = tuple(k + NUM_SIDE if k < NUM_SIDE else k - NUM_SIDE for k in range(NUM_KEYPOINTS))

# left side front / middle / rear, right side front / middle / rear, back face, trunk, back windshield, roof,
# front windshield, hood, front face
SEGMENTS: tuple[tuple[int, int, int, int], ...] = (
    (5, 15, 16, 17), (5, 6, 12, 15), (6, 10, 11, 12),
    (23, 33, 34, 35), (23, 24, 30, 33), (24, 28, 29, 30),
    (10, 11, 29, 28), (11, 12, 30, 29), (12, 13, 31, 30), (13, 14, 32, 31), (14, 15, 33, 32),
    (15, 16, 34, 33), (16, 17, 35, 34),
)
NUM_SEGMENTS = len(SEGMENTS)


def _segment_flip() -> tuple[int, ...]:
    """Derive the segment permutation of a horizontal flip from FLIP_INDEX (sets of corners match)."""
    by_corners = {frozenset(s): i for i, s in enumerate(SEGMENTS)}
    return tuple(by_corners[frozenset(FLIP_INDEX[k] for k in s)] for s in SEGMENTS)


# SEGMENT_FLIP[s] is the segment that s becomes under a horizontal flip: flipped = segs[SEGMENT_FLIP].
SEGMENT_FLIP: tuple[int, ...] = _segment_flip()

PCK_GROUPS: dict[str, tuple[int, ...]] = {
    "wheel": (0, 1, 18, 19),
    "fender": tuple(range(2, 10)) + tuple(range(20, 28)),
    "back": (10, 11, 28, 29),
    "front": (16, 17, 34, 35),
    "back_windshield": (12, 13, 30, 31),
    "front_windshield": (14, 15, 32, 33),
}
PCK_GROUP_TITLES: dict[str, str] = {
    "wheel": "Wheel", "fender": "Fender", "back": "Back", "front": "Front",
    "back_windshield": "Back windshield", "front_windshield": "Front windshield",
}


def keypoint_group(k: int) -> str | None:
    """Name of the PCK group keypoint ``k`` belongs to (None for keypoints in no group)."""
    for name, idx in PCK_GROUPS.items():
        if k in idx:
            return name
    return None


def flip_keypoints(kps: np.ndarray, width: float) -> np.ndarray:
    """Mirror keypoints (..., 36, >=2) in pixels across an image of ``width`` pixels and swap left/right.

    Pixel convention: x is the continuous coordinate of pixel centres at 0..width-1, so x -> width-1-x.
    """
    out = np.asarray(kps)[..., FLIP_INDEX, :].copy()
    out[..., 0] = (width - 1) - out[..., 0]
    return out
