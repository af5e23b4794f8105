"""The heatmap maths the codec (pose/codec.py::HeatmapCodec, which owns the parameters) is built on.

Coordinates are in heatmap cells: the centre of cell (row i, column j) is x=j, y=i.

``encode`` makes the Gaussian training targets; ``decode`` turns predicted heatmaps back into sub-cell
positions (DARK by default, or the reference rule); ``flip_back`` undoes a horizontal flip of the input
on predicted heatmaps (channel permutation plus mirror) for the flip test.
"""
from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch

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


def _argmax(hm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Integer peak column, row and the peak value of (N, K, H, W) heatmaps, each (N, K)."""
    w = hm.shape[-1]
    flat = hm.flatten(2)
    if flat.device.type == "cpu" and not torch.jit.is_tracing():
        # numpy's vectorised argmax is ~3x faster than torch.max with indices on CPU (docs/perf.md); a traced
        # graph (the one-graph ONNX export) takes torch's, which picks the first maximum too
        idx = torch.from_numpy(np.argmax(flat.numpy(), axis=-1))
    else:
        idx = flat.argmax(dim=-1)
    conf = flat.gather(-1, idx.unsqueeze(-1)).squeeze(-1)
    return idx % w, torch.div(idx, w, rounding_mode="floor"), conf


def _patches(grid: torch.Tensor, px: torch.Tensor, py: torch.Tensor, r: int) -> torch.Tensor:
    """(N, K, 2r+1, 2r+1) windows of grid (N, K, H, W) centred on integer peaks (N, K); zero outside the grid.
    Gathered from the flattened maps (no batch index), so the traced graph keeps a dynamic batch axis."""
    h, w = grid.shape[-2:]
    offs = torch.arange(-r, r + 1, device=grid.device)
    rows, cols = py[..., None] + offs, px[..., None] + offs  # (N, K, P)
    inside = ((rows >= 0) & (rows < h))[..., :, None] & ((cols >= 0) & (cols < w))[..., None, :]
    index = rows.clamp(0, h - 1)[..., :, None] * w + cols.clamp(0, w - 1)[..., None, :]  # (N, K, P, P)
    vals = grid.flatten(2).gather(-1, index.flatten(2)).reshape(index.shape)
    return vals * inside


def _blurred_neighbourhood(hm: torch.Tensor, px: torch.Tensor, py: torch.Tensor, sigma: float) -> torch.Tensor:
    """The 3 x 3 neighbourhood of each peak in hm Gaussian-smoothed (sigma cells, zero beyond the edges),
    computed from a patch around the peak rather than the whole map: (N, K, 3, 3)."""
    kern = _gaussian_kernel(sigma, hm.dtype, hm.device)
    r = kern.numel() // 2
    p = _patches(hm, px, py, r + 1)                       # (N, K, P, P), P = 2r + 3
    x = _windows(p, 2 * r + 1) @ kern                 # blur along x at 3 columns: (N, K, P, 3)
    y = _windows(x.transpose(-1, -2), 2 * r + 1) @ kern  # then along y at 3 rows: (N, K, 3 cols, 3 rows)
    return y.transpose(-1, -2)


def _windows(x: torch.Tensor, size: int) -> torch.Tensor:
    """(..., L) -> (..., L - size + 1, size): the sliding windows of ``Tensor.unfold(-1, size, 1)``, made of
    slices (which every ONNX runtime runs)."""
    return torch.stack([x[..., j:j + size] for j in range(x.shape[-1] - size + 1)], dim=-2)


def _taylor_step(lg: torch.Tensor, px: torch.Tensor, py: torch.Tensor, h: int, w: int
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Newton step (-H^-1 g) from 3 x 3 log-heatmap neighbourhoods lg (N, K, 3, 3) of integer peaks (N, K)
    on an h x w grid: (dx, dy, usable)."""
    c = lg[..., 1, 1]
    xr, xl, yd, yu = lg[..., 1, 2], lg[..., 1, 0], lg[..., 2, 1], lg[..., 0, 1]
    gx = 0.5 * (xr - xl)
    gy = 0.5 * (yd - yu)
    hxx = xr - 2 * c + xl
    hyy = yd - 2 * c + yu
    hxy = 0.25 * (lg[..., 2, 2] - lg[..., 0, 2] - lg[..., 2, 0] + lg[..., 0, 0])
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
    CVPR 2020); the step is skipped where the log-heatmap is not locally concave. Only the 3 x 3
    neighbourhood of each peak is smoothed (from a patch), which gives the same values as smoothing the map.
    ``reference``: argmax plus a quarter cell towards the higher neighbour on each axis (HRNet / PAMTRI), only
    for peaks with 1 < x < W-1 and 1 < y < H-1, as HRNet's ``get_final_preds`` does.
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
        # HRNet's get_final_preds (which the official PoseEstNet checkpoints were evaluated with) steps on
        # both axes only when 1 < x < W-1 and 1 < y < H-1 both hold; a peak in the first two rows/columns or
        # the last one keeps its integer position on both axes.
        nb = _patches(hm, px, py, 1)
        inner = (px > 1) & (px < w - 1) & (py > 1) & (py < h - 1)
        x = x + 0.25 * torch.sign(nb[..., 1, 2] - nb[..., 1, 0]) * inner
        y = y + 0.25 * torch.sign(nb[..., 2, 1] - nb[..., 0, 1]) * inner
    else:
        ox, oy, ok = _taylor_step(torch.log(_patches(hm, px, py, 1).clamp_min(1e-10)), px, py, h, w)
        if blur_sigma:
            # The log of a Gaussian is a quadratic, which the Taylor step recovers exactly away from the
            # borders; scaling the smoothed map would not change the step (it adds a constant to the log).
            sm = _blurred_neighbourhood(hm, px, py, blur_sigma)
            bx, by, bok = _taylor_step(torch.log(sm.clamp_min(1e-10)), px, py, h, w)
            # Within the blur's reach of an edge the zero padding biases the smoothed peak inwards, so
            # there the raw log-heatmap is used.
            margin = int(math.ceil(2 * blur_sigma))
            far = (px >= margin) & (px <= w - 1 - margin) & (py >= margin) & (py <= h - 1 - margin)
            # (ok as and/or, not a where over booleans, which onnxruntime's Where does not take)
            ox, oy, ok = torch.where(far, bx, ox), torch.where(far, by, oy), (far & bok) | (~far & ok)
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
