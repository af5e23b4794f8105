"""Part features (issue 25, after PVEN, Meng et al. CVPR 2020): masks of the vehicle's parts on the backbone's
feature grid, mask-weighted average pooling, each part's visibility, and the part head.

Masks come from the keypoint vector the network already takes ((B, 108): x / W - 0.5, y / H - 0.5, confidence -
0.5 in the augmented input), so they follow every augmentation and exist wherever the network runs: each of the
13 body-part quadrilaterals of ``pose.keypoints.SEGMENTS`` (drawn only when its four keypoints have confidence >=
0.5, as ``pose.segments.rasterise``) is rasterised on the (h, w) feature grid with ``SUBSAMPLES`` x ``SUBSAMPLES``
sample points per cell, so a cell's mask value is the share of it the part covers. ``groups`` merges the segments
into five faces (``GROUPS``: front, back, left side, right side, top) by union.

Visibility of part k of an image: v_k = area_k x conf_k x gate_k, with area_k the share of the grid the mask
covers, conf_k the mean confidence of the part's keypoints, and gate_k 1 when the pose-derived view
(``vit.pose_view``) names the part's face (or the view is unknown, or the part is the top), else
``model.part_view_gate``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pamtri.pose.keypoints import NUM_KEYPOINTS, SEGMENTS

from .vit import FRONT, LEFT, REAR, RIGHT, VIEW_FACES, pose_view

SUBSAMPLES = 4  # sample points per cell side when rasterising a part on the feature grid
VISIBLE = 0.5   # a segment is drawn when all four of its keypoints have at least this confidence
# the 13 segments (pose.keypoints.SEGMENTS order) -> the five groups; hood and trunk are horizontal, so top
GROUP_NAMES = ("front", "back", "left", "right", "top")
GROUPS: tuple[tuple[int, ...], ...] = ((12,), (6,), (0, 1, 2), (3, 4, 5), (7, 8, 9, 10, 11))
GROUP_FACES = (FRONT, REAR, LEFT, RIGHT, 0)  # face bits (vit.py); the top has none: seen from every view
SEGMENT_FACES = tuple(next(f for g, f in zip(GROUPS, GROUP_FACES) if s in g) for s in range(len(SEGMENTS)))
_SEG = torch.tensor(SEGMENTS, dtype=torch.long)  # (13, 4)


def num_parts(mode: str) -> int:
    """Parts of ``model.parts``: 13 segments, 5 groups, 0 for none."""
    return {"segments": len(SEGMENTS), "groups": len(GROUPS)}.get(mode, 0)


def _sample_points(grid: tuple[int, int], device) -> torch.Tensor:
    """(h * w * S * S, 2) sample points (u, v) in [0, 1] image coordinates, cell-major (cell (i, j), then its S x S)."""
    h, w = grid
    s = SUBSAMPLES
    off = (torch.arange(s, dtype=torch.float32, device=device) + 0.5) / s
    v = (torch.arange(h, dtype=torch.float32, device=device)[:, None] + off[None, :]) / h  # (h, s)
    u = (torch.arange(w, dtype=torch.float32, device=device)[:, None] + off[None, :]) / w  # (w, s)
    vv = v[:, None, :, None].expand(h, w, s, s)
    uu = u[None, :, None, :].expand(h, w, s, s)
    return torch.stack([uu, vv], -1).reshape(-1, 2)


def _inside(points: torch.Tensor, quads: torch.Tensor) -> torch.Tensor:
    """points (M, 2), quads (B, Q, 4, 2) -> (B, Q, M) bool: the point lies inside the quadrilateral (crossing
    number, so any simple polygon, convex or not)."""
    px, py = points[:, 0], points[:, 1]
    inside = torch.zeros(quads.shape[:2] + (len(points),), dtype=torch.bool, device=points.device)
    for i in range(4):
        x1, y1 = quads[:, :, i, 0, None], quads[:, :, i, 1, None]
        x2, y2 = quads[:, :, (i + 1) % 4, 0, None], quads[:, :, (i + 1) % 4, 1, None]
        crosses = (y1 > py) != (y2 > py)
        x_at = x1 + (py - y1) * (x2 - x1) / torch.where(y2 == y1, torch.ones_like(y1), y2 - y1)
        inside ^= crosses & (px < x_at)
    return inside


def segment_masks(keypoints: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 108) keypoint vectors -> (segment samples (B, 13, h * w, S * S) bool on the (h, w) grid, segment
    confidence (B, 13): its four keypoints' mean confidence, 0 when any is below ``VISIBLE`` (not drawn))."""
    kp = keypoints.float().reshape(-1, NUM_KEYPOINTS, 3)
    xy, conf = kp[..., :2] + 0.5, kp[..., 2] + 0.5        # image coordinates in [0, 1], confidence in [0, 1]
    seg = _SEG.to(kp.device)
    quads = xy[:, seg]                                     # (B, 13, 4, 2)
    corner_conf = conf[:, seg]                             # (B, 13, 4)
    drawn = (corner_conf >= VISIBLE).all(-1)
    inside = _inside(_sample_points(grid, kp.device), quads) & drawn[..., None]
    h, w = grid
    return inside.reshape(len(kp), len(SEGMENTS), h * w, SUBSAMPLES ** 2), corner_conf.mean(-1) * drawn


def part_masks(keypoints: torch.Tensor, grid: tuple[int, int], mode: str, view_gate: float = 1.0
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 108) keypoint vectors -> (masks (B, P, h, w) in [0, 1]: the share of each cell the part covers,
    visibility (B, P) = area x confidence x view gate; module docstring) for ``mode`` segments or groups."""
    samples, conf = segment_masks(keypoints, grid)
    if mode == "groups":
        samples = torch.stack([samples[:, list(g)].any(1) for g in GROUPS], 1)
        # a group's confidence: the mean over its drawn segments
        conf = torch.stack([c.sum(1) / (c > 0).sum(1).clamp_min(1) for c in (conf[:, list(g)] for g in GROUPS)], 1)
        faces = GROUP_FACES
    else:
        faces = SEGMENT_FACES
    h, w = grid
    masks = samples.float().mean(-1).reshape(len(samples), -1, h, w)
    area = masks.flatten(2).mean(-1)
    return masks, area * conf * view_gates(keypoints, faces, view_gate)


def view_gates(keypoints: torch.Tensor, faces: tuple[int, ...], gate: float) -> torch.Tensor:
    """(B, P) factor per part: 1 where the pose-derived view names the part's face (or the view is unknown, or the
    part has no face), ``gate`` elsewhere."""
    conf = keypoints.float().reshape(-1, NUM_KEYPOINTS, 3)[..., 2] + 0.5
    seen = VIEW_FACES.to(keypoints.device)[pose_view(conf).clamp_min(-1) + 1]  # (B,) face bits; index 0 = unknown
    bits = torch.tensor(faces, dtype=torch.long, device=keypoints.device)
    named = (seen[:, None] & bits[None, :]) != 0
    free = (bits[None, :] == 0) | (seen[:, None] == 0)
    return torch.where(named | free, 1.0, float(gate))


def part_pool(feature_map: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) features, (B, P, h', w') masks -> (B, P, C) mask-weighted averages sum(m x) / sum(m) (zero for
    an empty mask); masks on another grid are first averaged onto the feature grid (adaptive average pooling)."""
    if masks.shape[-2:] != feature_map.shape[-2:]:
        masks = F.adaptive_avg_pool2d(masks, feature_map.shape[-2:])
    m = masks.to(feature_map.dtype).flatten(2)                          # (B, P, n)
    pooled = torch.einsum("bpn,bcn->bpc", m, feature_map.flatten(2))
    return pooled / m.sum(-1, keepdim=True).clamp_min(1e-6)


class PartHead(nn.Module):
    """P part features from one feature map: mask-weighted pooling, a shared Linear to ``dim`` (the triplet
    loss's part feature), a per-part BatchNorm with frozen bias (BNNeck, the test feature) and a bias-free ID
    classifier per part (``num_ids`` 0: none)."""

    def __init__(self, in_dim: int, parts: int, dim: int, num_ids: int):
        super().__init__()
        self.parts, self.dim = parts, dim
        self.reduce = nn.Linear(in_dim, dim)
        self.bn = nn.BatchNorm1d(parts * dim)
        self.bn.bias.requires_grad_(False)
        self.classifiers = nn.ModuleList(nn.Linear(dim, num_ids, bias=False) for _ in range(parts if num_ids else 0))
        for c in self.classifiers:
            nn.init.normal_(c.weight, std=0.001)

    def forward(self, feature_map: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        """-> {'part_triplet' (B, P, dim), 'part_feature' (B, P, dim) after the BN, 'part_id' (P, B, ids)}."""
        f = self.reduce(part_pool(feature_map, masks))
        fb = self.bn(f.flatten(1)).reshape(f.shape)
        out = {"part_triplet": f, "part_feature": fb}
        if len(self.classifiers):
            out["part_id"] = torch.stack([c(fb[:, k]) for k, c in enumerate(self.classifiers)])
        return out
