"""HRNet keypoint estimator: timm's HRNet trunk, its stride-4 branch, a 1x1 convolution to 36 heatmaps.

Weights (ImageNet trunks, the official PoseEstNet checkpoint, pamtri checkpoints) load in ``pose/weights.py``.
"""
from __future__ import annotations

import logging

import torch
from torch import nn

from pamtri.common.errors import CheckpointError

from .keypoints import NUM_KEYPOINTS

log = logging.getLogger(__name__)

STRIDE = 4


class PoseHRNet(nn.Module):
    """HRNet -> (N, 36, H/4, W/4) heatmaps for (N, 3, H, W) normalised RGB input."""

    def __init__(self, name: str = "hrnet_w32", num_keypoints: int = NUM_KEYPOINTS):
        super().__init__()
        import timm
        if not name.startswith("hrnet"):
            raise CheckpointError(f"model.name: {name!r} is not an HRNet (timm names: hrnet_w18_small, "
                                  f"hrnet_w18, hrnet_w32, hrnet_w48, ...)")
        try:
            self.backbone = timm.create_model(name, pretrained=False, features_only=True,
                                              feature_location="", out_indices=(1,))
        except RuntimeError as exc:  # timm: unknown model name
            raise CheckpointError(f"model.name: {exc}") from None
        info = self.backbone.feature_info.get_dicts()[0]
        if info["reduction"] != STRIDE:
            raise CheckpointError(f"{name}: expected a stride-{STRIDE} branch, timm gives {info['reduction']}")
        _drop_unused_fuse_layers(self.backbone)
        self.name = name
        self.stride = STRIDE
        self.head = nn.Conv2d(info["num_chs"], num_keypoints, kernel_size=1)
        nn.init.normal_(self.head.weight, std=0.001)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) normalised RGB -> (N, 36, H/4, W/4) heatmaps."""
        return self.head(self.backbone(x)[0])


def _drop_unused_fuse_layers(backbone: nn.Module) -> None:
    """Keep only the stride-4 output of the last fusion, as the official pose_hrnet does.

    timm builds the last module of stage 4 with all four outputs; we take one, so the other three
    fusions would be dead weights (and DistributedDataParallel would complain about unused parameters).
    """
    last = backbone.stage4[-1]
    if isinstance(last.fuse_layers, nn.ModuleList) and len(last.fuse_layers) > 1:
        last.fuse_layers = last.fuse_layers[:1]
        last.multi_scale_output = False
