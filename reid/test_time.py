"""Test-time feature tricks: flip averaging, alpha query expansion (fast-reid's AQE), per-track averaging."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from pamtri.pose.keypoints import FLIP_INDEX, NUM_KEYPOINTS, SEGMENT_FLIP

from .config import ModelConfig


def mirror_channels(model_cfg: ModelConfig) -> list[int]:
    """Channel order of the mirrored input: RGB, then heatmap k <- its mirror FLIP_INDEX[k], segment s <- its
    mirror SEGMENT_FLIP[s] (the permutation training's flip applies)."""
    order, start = [0, 1, 2], 3
    if model_cfg.heatmaps:
        order += [start + k for k in FLIP_INDEX]
        start += NUM_KEYPOINTS
    if model_cfg.segments:
        order += [start + s for s in SEGMENT_FLIP]
    return order


def mirror_inputs(images: torch.Tensor, keypoints: torch.Tensor, model_cfg: ModelConfig
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Horizontal mirror of a batch: images (B, C, H, W) flipped with left/right pose channels swapped; keypoint
    vectors (B, 108) of [x / W - 0.5, y / H - 0.5, c - 0.5] swapped left/right with x -> W - 1 - x, i.e.
    v_x -> -v_x - 1 / W (clipped to [-0.5, 0.5] as in training)."""
    mirrored = images[:, mirror_channels(model_cfg)].flip(-1)
    kp = keypoints.reshape(-1, NUM_KEYPOINTS, 3)[:, list(FLIP_INDEX)].clone()
    kp[..., 0] = (-kp[..., 0] - 1.0 / images.shape[-1]).clamp(-0.5, 0.5)
    return mirrored, kp.reshape(keypoints.shape)


def alpha_query_expansion(query: torch.Tensor, gallery: torch.Tensor, k: int = 5, alpha: float = 3.0,
                          chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """alpha-QE (Radenovic et al. 2018, as fast-reid's AQE): every query and gallery feature (N, D) becomes the
    mean over its k most cosine-similar features of query + gallery (itself included) weighted by sim^alpha
    (sim clamped at 0); returns the new (Q, D) and (G, D)."""
    feats = torch.cat([query, gallery]).float()
    unit = F.normalize(feats, dim=1)
    k = min(k, len(feats))
    out = torch.empty_like(feats)
    for start in range(0, len(feats), chunk):
        sim, idx = (unit[start:start + chunk] @ unit.t()).topk(k, dim=1)
        weights = sim.clamp_min(0).pow(alpha)
        out[start:start + chunk] = (feats[idx] * weights[..., None]).mean(1)
    return out[:len(query)], out[len(query):]


def track_average(features: torch.Tensor, names: list[str], tracks: list[list[str]]) -> torch.Tensor:
    """Each image's feature (N, D) replaced by the mean over the images of its track (image names as in the
    ``test_track.txt`` lines); images in no track keep their own feature."""
    row = {name: i for i, name in enumerate(names)}
    out = features.clone()
    for track in tracks:
        members = np.array([row[n] for n in track if n in row], dtype=np.int64)
        if len(members):
            out[members] = features[members].mean(0)
    return out
