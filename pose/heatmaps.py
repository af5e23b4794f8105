"""Heatmap codec. Coordinates are in heatmap cells: the centre of cell (row i, column j) is x=j, y=i."""
from __future__ import annotations

import numpy as np


def encode(xy: np.ndarray, visible: np.ndarray, size: tuple[int, int], sigma: float = 2.0
           ) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian targets (peak 1 at the sub-cell position): xy (N, K, 2) cells, visible (N, K), size (H, W)
    -> heatmaps (N, K, H, W) float32, weights (N, K) float32.

    A keypoint that is not visible, or whose centre lies outside the grid, gets an all-zero heatmap and
    weight 0, so the weighted MSE ignores it.
    """
    xy = np.asarray(xy, dtype=np.float32)
    vis = np.asarray(visible).astype(bool)
    h, w = int(size[0]), int(size[1])
    inside = (xy[..., 0] >= -0.5) & (xy[..., 0] <= w - 0.5) & (xy[..., 1] >= -0.5) & (xy[..., 1] <= h - 0.5)
    weights = (vis & inside & np.isfinite(xy).all(-1)).astype(np.float32)
    xs = np.arange(w, dtype=np.float32)
    ys = np.arange(h, dtype=np.float32)
    safe = np.nan_to_num(xy)
    gx = np.exp(-((xs - safe[..., 0:1]) ** 2) / (2 * sigma ** 2))  # (N, K, W)
    gy = np.exp(-((ys - safe[..., 1:2]) ** 2) / (2 * sigma ** 2))  # (N, K, H)
    heatmaps = gy[..., :, None] * gx[..., None, :] * weights[..., None, None]
    return heatmaps.astype(np.float32), weights
