"""The pose stage's output for one image: one record type, whether predicted, cached or read from labels."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class PoseResult:
    """The pose stage's output for one image, whether predicted, cached or read from labels.

    keypoints: (36, 3) float32, x, y in original-image pixels, confidence.
    heatmaps: (36, h, w) float32 in [0, 1] (or uint8 when quantised), None when not kept.
    segments: (13, H, W) uint8 {0, 1}, None when derived later from keypoints.
    """
    keypoints: np.ndarray
    heatmaps: np.ndarray | None = None
    segments: np.ndarray | None = None
    image_size: tuple[int, int] = (0, 0)  # (width, height) in pixels
    extra: dict = field(default_factory=dict)
