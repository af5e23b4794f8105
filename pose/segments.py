"""The 13 body-part segments rasterised from keypoints (quadrilaterals of keypoints, pose.keypoints.SEGMENTS)."""
from __future__ import annotations

import cv2
import numpy as np

from .keypoints import NUM_SEGMENTS, SEGMENTS

_SEG_INDEX = np.asarray(SEGMENTS, dtype=np.int64)  # (13, 4)
_SHIFT = 4  # sub-pixel bits for cv2.fillPoly


def segment_valid(keypoints: np.ndarray, conf_threshold: float = 0.5) -> np.ndarray:
    """(..., 13) bool: a segment is drawn only when all four of its keypoints have confidence >= threshold."""
    conf = np.asarray(keypoints)[..., 2]
    return (conf[..., _SEG_INDEX] >= conf_threshold).all(axis=-1)


def rasterise(keypoints: np.ndarray, size: tuple[int, int], conf_threshold: float = 0.5) -> np.ndarray:
    """Fill each segment's quadrilateral: keypoints (36, 3) in pixels, size (height, width) -> uint8 (13, H, W) of 0/1.

    Pixel centres sit at integer coordinates. A segment with any keypoint below ``conf_threshold`` is blank.
    """
    height, width = int(size[0]), int(size[1])
    kps = np.asarray(keypoints, dtype=np.float64)
    out = np.zeros((NUM_SEGMENTS, height, width), dtype=np.uint8)
    valid = segment_valid(kps, conf_threshold)
    quads = np.round(kps[_SEG_INDEX, :2] * (1 << _SHIFT)).astype(np.int32)  # (13, 4, 2) fixed point
    for s in np.flatnonzero(valid):
        cv2.fillPoly(out[s], [quads[s]], 1, lineType=cv2.LINE_8, shift=_SHIFT)
    return out


def rasterise_batch(keypoints: np.ndarray, size: tuple[int, int], conf_threshold: float = 0.5) -> np.ndarray:
    """Batch form of :func:`rasterise`: (N, 36, 3) -> uint8 (N, 13, H, W)."""
    kps = np.asarray(keypoints)
    out = np.zeros((len(kps), NUM_SEGMENTS) + (int(size[0]), int(size[1])), dtype=np.uint8)
    for i in range(len(kps)):
        out[i] = rasterise(kps[i], size, conf_threshold)
    return out
