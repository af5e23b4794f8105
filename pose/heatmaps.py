"""Heatmap codec. Coordinates are in heatmap cells: the centre of cell (row i, column j) is x=j, y=i.

``encode`` makes the Gaussian training targets; ``decode`` turns predicted heatmaps back into sub-cell
positions (DARK by default, or the reference rule); ``flip_back`` undoes a horizontal flip of the input
on predicted heatmaps (channel permutation plus mirror) for the flip test.
"""
from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from .keypoints import FLIP_INDEX

DecodeMethod = Literal["dark", "reference"]
DECODE_METHODS = ("dark", "reference")


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


def _as_tensor(heatmaps) -> tuple[torch.Tensor, bool]:
    if isinstance(heatmaps, torch.Tensor):
        return heatmaps, False
    return torch.from_numpy(np.ascontiguousarray(heatmaps)), True


def _gaussian_kernel(sigma: float, dtype, device) -> torch.Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    return (k / k.sum()).to(dtype=dtype, device=device)


def blur(heatmaps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, K, H, W) heatmaps, sigma in cells, zero beyond the edges; same shape."""
    n, k, h, w = heatmaps.shape
    kern = _gaussian_kernel(sigma, heatmaps.dtype, heatmaps.device)
    r = kern.numel() // 2
    x = heatmaps.reshape(n * k, 1, h, w)
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="constant"), kern.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode="constant"), kern.view(1, 1, -1, 1))
    return x.reshape(n, k, h, w)


def _argmax(hm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Integer peak column, row and the peak value of (N, K, H, W) heatmaps, each (N, K)."""
    n, k, h, w = hm.shape
    conf, idx = hm.reshape(n, k, h * w).max(dim=-1)
    return idx % w, torch.div(idx, w, rounding_mode="floor"), conf


def _take(grid: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """grid (N, K, H, W) sampled at integer (x, y) of shape (N, K), indices clamped to the grid."""
    h, w = grid.shape[-2:]
    x = x.clamp(0, w - 1)
    y = y.clamp(0, h - 1)
    flat = grid.reshape(grid.shape[0], grid.shape[1], h * w)
    return flat.gather(-1, (y * w + x).unsqueeze(-1)).squeeze(-1)


def _taylor_step(lg: torch.Tensor, px: torch.Tensor, py: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Newton step (-H^-1 g) of log-heatmaps lg (N, K, H, W) at integer peaks (N, K): (dx, dy, usable)."""
    h, w = lg.shape[-2:]
    c = _take(lg, px, py)
    xr, xl = _take(lg, px + 1, py), _take(lg, px - 1, py)
    yd, yu = _take(lg, px, py + 1), _take(lg, px, py - 1)
    gx = 0.5 * (xr - xl)
    gy = 0.5 * (yd - yu)
    hxx = xr - 2 * c + xl
    hyy = yd - 2 * c + yu
    hxy = 0.25 * (_take(lg, px + 1, py + 1) - _take(lg, px + 1, py - 1)
                  - _take(lg, px - 1, py + 1) + _take(lg, px - 1, py - 1))
    det = hxx * hyy - hxy * hxy
    inner = (px > 0) & (px < w - 1) & (py > 0) & (py < h - 1)
    ok = inner & (det > 1e-12) & (hxx < 0)
    safe_det = torch.where(ok, det, torch.ones_like(det))
    ox = -(hyy * gx - hxy * gy) / safe_det
    oy = -(hxx * gy - hxy * gx) / safe_det
    # A step longer than one cell means the quadratic model does not hold there.
    ok = ok & (ox.abs() <= 1) & (oy.abs() <= 1)
    return ox, oy, ok


def decode(heatmaps, method: DecodeMethod = "dark", blur_sigma: float | None = 2.0
           ) -> tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor]:
    """Sub-cell peaks: heatmaps (N, K, H, W) numpy or torch -> (xy (N, K, 2) in cells, x first; confidence (N, K)).

    ``dark``: Gaussian-smooth (``blur_sigma`` cells; None = no smoothing), take the log, and move from the
    argmax by one Newton step (-Hessian^-1 gradient) of its second-order Taylor expansion (Zhang et al.,
    CVPR 2020); the step is skipped where the log-heatmap is not locally concave.
    ``reference``: argmax plus a quarter cell towards the higher neighbour on each axis (HRNet / PAMTRI).
    Confidence is the maximum of the raw heatmap. Returns numpy for numpy input, torch otherwise.
    """
    if method not in DECODE_METHODS:
        raise ValueError(f"decode method must be one of {DECODE_METHODS}, got {method!r}")
    hm, to_numpy = _as_tensor(heatmaps)
    if hm.ndim != 4:
        raise ValueError(f"heatmaps must be (N, K, H, W), got shape {tuple(hm.shape)}")
    hm = hm.detach().float()
    h, w = hm.shape[-2:]
    px, py, conf = _argmax(hm)
    x = px.to(hm.dtype)
    y = py.to(hm.dtype)
    if method == "reference":
        inner_x = (px > 0) & (px < w - 1)
        inner_y = (py > 0) & (py < h - 1)
        dx = _take(hm, px + 1, py) - _take(hm, px - 1, py)
        dy = _take(hm, px, py + 1) - _take(hm, px, py - 1)
        x = x + 0.25 * torch.sign(dx) * inner_x
        y = y + 0.25 * torch.sign(dy) * inner_y
    else:
        ox, oy, ok = _taylor_step(torch.log(hm.clamp_min(1e-10)), px, py)
        if blur_sigma:
            sm = blur(hm, blur_sigma)
            # Rescale so smoothing does not lower the peak; the log of a Gaussian is a quadratic, which
            # the Taylor step recovers exactly away from the borders.
            peak = sm.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
            sm = sm * (conf[..., None, None].clamp_min(1e-12) / peak)
            bx, by, bok = _taylor_step(torch.log(sm.clamp_min(1e-10)), px, py)
            # Within the blur's reach of an edge the zero padding biases the smoothed peak inwards, so
            # there the raw log-heatmap is used.
            margin = int(math.ceil(2 * blur_sigma))
            far = (px >= margin) & (px <= w - 1 - margin) & (py >= margin) & (py <= h - 1 - margin)
            ox, oy, ok = torch.where(far, bx, ox), torch.where(far, by, oy), torch.where(far, bok, ok)
        ok = ok & (conf > 0)
        x = x + torch.where(ok, ox, torch.zeros_like(ox))
        y = y + torch.where(ok, oy, torch.zeros_like(oy))
    xy = torch.stack([x, y], dim=-1)
    if to_numpy:
        return xy.numpy().astype(np.float32), conf.numpy().astype(np.float32)
    return xy, conf


def shift_x(heatmaps: torch.Tensor, shift: float) -> torch.Tensor:
    """Move (N, K, H, W) heatmap content ``shift`` cells towards larger x (linear interpolation, edge replicated)."""
    if shift == 0:
        return heatmaps
    w = heatmaps.shape[-1]
    src = torch.arange(w, dtype=heatmaps.dtype, device=heatmaps.device) - shift  # read position per column
    lo = torch.floor(src)
    frac = (src - lo)
    lo_i = lo.long().clamp(0, w - 1)
    hi_i = (lo.long() + 1).clamp(0, w - 1)
    return heatmaps[..., lo_i] * (1 - frac) + heatmaps[..., hi_i] * frac


def flip_back(heatmaps, shift: float = 0.0):
    """Heatmaps predicted on a horizontally flipped input, (N, 36, H, W) -> the same in unflipped orientation.

    Mirrors each map, swaps left/right channels (FLIP_INDEX) and moves the content ``shift`` cells right.
    With pamtri's cell convention (pose.transforms: cell centres at the centres of their stride x stride
    input pixels) the exact shift is 0; the reference code's one-cell shift compensates for its own
    convention (x_cell = x_input / stride), where the exact value is (stride - 1) / stride cells.
    """
    hm, to_numpy = _as_tensor(heatmaps)
    out = shift_x(hm[:, list(FLIP_INDEX)].flip(-1), shift)
    return out.numpy() if to_numpy else out
