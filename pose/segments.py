"""The 13 body-part segments rasterised from keypoints (quadrilaterals of keypoints, pose.keypoints.SEGMENTS)."""
from __future__ import annotations

import cv2
import numpy as np
import torch

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


def rasterise_tensor(keypoints: torch.Tensor, size: tuple[int, int], conf_threshold: float = 0.5) -> torch.Tensor:
    """:func:`rasterise_batch` with tensor operations (traceable: the one-graph ONNX export runs it): (N, 36, 3)
    keypoints in pixels -> float (N, 13, H, W) of 0/1, on the keypoints' device.

    It reproduces cv2.fillPoly (LINE_8, 4 sub-pixel bits) on the pixel grid: corners rounded to 1/16 pixel, the
    scan-line fill with y rounded to whole rows and span ends ceil(x_left) .. floor(x_right) (even-odd), plus each
    edge drawn as OpenCV's 8-connected Bresenham line between the rounded corners. Identical to cv2 while the
    quadrilateral lies on the grid; where one crosses the border OpenCV clips its edges first and single border
    pixels can differ."""
    h, w = int(size[0]), int(size[1])
    k = keypoints.float()
    index = torch.as_tensor(_SEG_INDEX.reshape(-1), device=k.device)
    corners = k.index_select(1, index).reshape(-1, NUM_SEGMENTS, 4, 3)
    x = torch.round(corners[..., 0] * (1 << _SHIFT)) / (1 << _SHIFT)
    y = torch.floor(torch.round(corners[..., 1] * (1 << _SHIFT)) / (1 << _SHIFT) + 0.5)
    # edge e runs from corner e - 1 to corner e: (N, 13, 4, 1, 1) against the pixel grid
    x0, y0, x1, y1 = (t[..., None, None] for t in (x.roll(1, -1), y.roll(1, -1), x, y))
    px = torch.arange(w, dtype=k.dtype, device=k.device).view(1, 1, 1, 1, w)
    py = torch.arange(h, dtype=k.dtype, device=k.device).view(1, 1, 1, h, 1)
    fill = _scanline_fill(x0, y0, x1, y1, px, py)
    line = _bresenham(torch.floor(x0 + 0.5), y0, torch.floor(x1 + 0.5), y1, px, py).any(2)
    valid = (corners[..., 2] >= conf_threshold).all(-1)[..., None, None]
    return ((fill | line) & valid).to(k.dtype)


def _scanline_fill(x0, y0, x1, y1, px, py) -> torch.Tensor:
    """(N, 13, H, W) bool: the pixels cv2's scan-line fill sets, even-odd over the edges (x0, y0) -> (x1, y1)."""
    lo, hi = torch.minimum(y0, y1), torch.maximum(y0, y1)
    active = (py >= lo) & (py < hi)  # an edge covers rows y0 <= y < y1; horizontal edges none
    xe = x0 + (py - y0) * (x1 - x0) / torch.where(hi > lo, y1 - y0, torch.ones_like(y0))
    # px lies in a span [s_2i, s_2i+1] of the sorted crossings when ceil(s_2i) <= px <= floor(s_2i+1)
    at_or_left = ((xe <= px) & active).sum(2)
    left = ((xe < px) & active).sum(2)
    return (at_or_left % 2 == 1) | (left % 2 == 1) | (at_or_left - left >= 2)


def _bresenham(ax, ay, bx, by, px, py) -> torch.Tensor:
    """(..., H, W) bool: the pixels of OpenCV's 8-connected line from (ax, ay) to (bx, by) (integer corners): it
    starts at the end with the smaller x (the first when equal), steps along the longer axis and rounds the
    other one with ties towards the start."""
    swap = bx < ax
    sx, sy = torch.where(swap, bx, ax), torch.where(swap, by, ay)
    dx, dy = torch.where(swap, ax, bx) - sx, torch.where(swap, ay, by) - sy
    ydir = torch.where(dy < 0, -torch.ones_like(dy), torch.ones_like(dy))
    xmajor = dx >= dy.abs()
    length, rise = torch.where(xmajor, dx, dy.abs()), torch.where(xmajor, dy.abs(), dx)
    step = torch.where(xmajor, px - sx, (py - sy) * ydir)     # along the longer axis
    off = torch.where(xmajor, (py - sy) * ydir, px - sx)      # across it
    # off is the rounding of step * rise / length with ties down: (2 off - 1) L < 2 step rise <= (2 off + 1) L
    on = (step >= 0) & (step <= length) & ((2 * off - 1) * length < 2 * step * rise) \
        & (2 * step * rise <= (2 * off + 1) * length)
    return on | ((length == 0) & (px == sx) & (py == sy))
