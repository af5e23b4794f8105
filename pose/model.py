"""HRNet keypoint estimator: timm's HRNet trunk, its stride-4 branch, a 1x1 convolution to 36 heatmaps.

Also the mappings that load published weights:
- ImageNet weights from a local timm file or an official HRNet-Image-Classification file (same key
  names; the classification head is dropped);
- the official PAMTRI PoseEstNet checkpoint, which uses the official ``pose_hrnet`` names (``conv1``,
  ``bn1``, ``layer1``, ``transition1``, ``stage2``..``stage4``, ``final_layer``): its trunk keys equal
  timm's, ``final_layer`` is our ``head``.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import torch
from torch import nn

from pamtri.common.checkpoint import load_checkpoint, match_state_dict
from pamtri.common.errors import CheckpointError

from .keypoints import NUM_KEYPOINTS

log = logging.getLogger(__name__)

STRIDE = 4
# Keys of ImageNet classification files that a keypoint model does not use.
_CLASSIFIER_KEYS = re.compile(r"^(incre_modules|downsamp_modules|final_layer\.\d|classifier)\.")


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


def build_pose_model(name: str = "hrnet_w32", weights: str | os.PathLike | None = None) -> PoseHRNet:
    """A PoseHRNet of timm width ``name``; ``weights`` (optional local file) loaded by :func:`load_weights`."""
    model = PoseHRNet(name)
    if weights:
        load_weights(model, weights)
    return model


def state_dict_of(obj: dict, source: str) -> dict[str, torch.Tensor]:
    """The tensor dict inside a checkpoint (plain, or under state_dict / best_state_dict / model), 'module.' removed."""
    state = obj
    for key in ("best_state_dict", "state_dict", "model"):
        if isinstance(state.get(key), dict):
            state = state[key]
            break
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{source}: holds no tensors (not a state dict)")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


def official_to_ours(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official pose_hrnet / PoseEstNet keys -> PoseHRNet keys (``final_layer`` -> ``head``, trunk under
    ``backbone.``)."""
    out = {}
    for k, v in state.items():
        if k.startswith("final_layer."):
            out["head." + k[len("final_layer."):]] = v
        else:
            out["backbone." + k] = v
    return out


def ours_to_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """PoseHRNet keys -> official pose_hrnet / PoseEstNet keys (inverse of :func:`official_to_ours`)."""
    out = {}
    for k, v in state.items():
        if k.startswith("head."):
            out["final_layer." + k[len("head."):]] = v
        elif k.startswith("backbone."):
            out[k[len("backbone."):]] = v
        else:
            raise CheckpointError(f"unexpected key {k!r} in a PoseHRNet state dict")
    return out


def checkpoint_layout(state: dict[str, torch.Tensor]) -> str:
    """'pamtri' (our keys), 'posestnet' (official pose_hrnet with a 1x1 final_layer) or 'imagenet' (trunk only)."""
    if any(k.startswith("backbone.") for k in state) or "head.weight" in state:
        return "pamtri"
    w = state.get("final_layer.weight")
    if w is not None and w.ndim == 4 and tuple(w.shape[2:]) == (1, 1):
        return "posestnet"
    return "imagenet"


def load_weights(model: PoseHRNet, path: str | os.PathLike) -> str:
    """Load a local weights file into ``model``; returns its layout ('pamtri', 'posestnet' or 'imagenet').

    ImageNet files fill the trunk only (the head stays freshly initialised); any key or shape that does
    not fit raises CheckpointError listing the mismatches.
    """
    path = Path(path)
    source = str(path)
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise CheckpointError(f"{path}: weights file does not exist")
        from safetensors.torch import load_file
        raw = load_file(str(path))
    else:
        raw = load_checkpoint(path)
    state = state_dict_of(raw, source)
    layout = checkpoint_layout(state)
    if layout == "pamtri":
        match_state_dict(model, state, source)
    elif layout == "posestnet":
        match_state_dict(model, official_to_ours(state), f"{source} (official PoseEstNet layout)")
    else:
        own = model.backbone.state_dict()
        dropped = [k for k in state if k not in own and (_CLASSIFIER_KEYS.match(k) or _is_pruned_fuse(k, own))]
        trunk = {k: v for k, v in state.items() if k not in dropped}
        match_state_dict(model.backbone, trunk, f"{source} (ImageNet HRNet layout)")
        log.info("%s: loaded ImageNet trunk (%d tensors; %d classification/unused tensors ignored)",
                 source, len(trunk), len(dropped))
        return layout
    log.info("%s: loaded %s weights", source, layout)
    return layout


def _is_pruned_fuse(key: str, own: dict) -> bool:
    """True for keys of the stage-4 fusions we dropped (outputs other than the stride-4 one)."""
    m = re.match(r"^stage4\.(\d+)\.fuse_layers\.(\d+)\.", key)
    if not m or int(m.group(2)) == 0:
        return False
    prefix = f"stage4.{m.group(1)}.fuse_layers."
    return not any(k.startswith(prefix + m.group(2) + ".") for k in own)
