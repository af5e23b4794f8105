"""Generated benchmark inputs: pose outputs, VeRi-sized features, the paper-size networks."""
from __future__ import annotations

import numpy as np
import torch

from pamtri.pose.heatmaps import encode
from pamtri.pose.weights import build_pose_model
from pamtri.reid.config import ModelConfig
from pamtri.reid.weights import build_model


def fake_pose_outputs(n: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Plausible pose outputs for n images of size x size pixels: (heatmaps (n, 36, 64, 64), Gaussian at random
    keypoints scaled by their confidence, keypoints (n, 36, 3) pixels + confidence)."""
    kps = np.concatenate([rng.uniform(0.1 * size, 0.9 * size, (n, 36, 2)),
                          rng.uniform(0.3, 1.0, (n, 36, 1))], axis=2).astype(np.float32)
    heatmaps, _ = encode(kps[..., :2] * (64 / size), np.ones((n, 36)), (64, 64))
    heatmaps *= kps[..., 2, None, None]
    return heatmaps, kps


def veri_like(nq: int, ng: int, ids: int = 200, cams: int = 20, dim: int = 256, seed: int = 0):
    """Random features with VeRi-like structure: (q_feat (nq, dim), g_feat (ng, dim), q_ids, g_ids, q_cams,
    g_cams)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(ids, dim)).astype(np.float32)
    q_ids, g_ids = rng.integers(0, ids, nq), rng.integers(0, ids, ng)
    q_cams, g_cams = rng.integers(0, cams, nq), rng.integers(0, cams, ng)
    qf = centres[q_ids] + 1.2 * rng.normal(size=(nq, dim)).astype(np.float32)
    gf = centres[g_ids] + 1.2 * rng.normal(size=(ng, dim)).astype(np.float32)
    return qf, gf, q_ids, g_ids, q_cams, g_cams


def paper_models(heatmaps: bool = True):
    """HRNet-W32 pose model (256x256) and the DenseNet121 ReID model with heatmap channels, random weights."""

    torch.manual_seed(0)
    pose = build_pose_model("hrnet_w32").eval()
    reid = build_model(ModelConfig(heatmaps=heatmaps, segments=False, keypoints=True), num_ids=576).eval()
    return pose, reid
