"""The pose stage's weights: load, convert, describe.

- ``load(path)`` -> (PoseHRNet, PoseDescription(config, codec)): a pamtri checkpoint is self-describing (its
  config and heatmap codec are stored with it); any other file needs the architecture's name.
- ImageNet trunks from a local timm file or an official HRNet-Image-Classification file (same key names; the
  classification head is dropped).
- The official PAMTRI PoseEstNet checkpoint, which uses the official ``pose_hrnet`` names (``conv1``, ``bn1``,
  ``layer1``, ``transition1``, ``stage2``..``stage4``, ``final_layer``): its trunk keys equal timm's,
  ``final_layer`` is our ``head``; ``convert_posestnet`` writes it as a self-describing pamtri checkpoint, the
  architecture found from the tensor shapes (the timm HRNet of the same stage-4 width and module count whose
  keys and shapes all fit) and the reference code's conventions (cell convention 'reference', flip shift one
  cell) recorded.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors.torch import load_file

from pamtri.common.checkpoint import load_checkpoint, match_state_dict, save_checkpoint, state_dict_of
from pamtri.common.config import from_dict, to_dict, upgrade_renamed
from pamtri.common.errors import CheckpointError

from .codec import HeatmapCodec
from .config import CodecConfig, PoseConfig
from .model import PoseHRNet

log = logging.getLogger(__name__)

# Keys of ImageNet classification files that a keypoint model does not use.
_CLASSIFIER_KEYS = re.compile(r"^(incre_modules|downsamp_modules|final_layer\.\d|classifier)\.")


class PoseDescription(NamedTuple):
    """What a pose checkpoint says of its model: the training config and the heatmap codec it decodes with."""
    config: PoseConfig
    codec: HeatmapCodec


def build_pose_model(name: str = "hrnet_w32", weights: str | os.PathLike | None = None) -> PoseHRNet:
    """A PoseHRNet of timm width ``name``; ``weights`` (optional local file) loaded by :func:`load_weights`."""
    model = PoseHRNet(name)
    if weights:
        load_weights(model, weights)
    return model


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


def load(weights: str | os.PathLike, name: str | None = None) -> tuple[PoseHRNet, PoseDescription]:
    """(model in eval mode on CPU, its description: PoseConfig and HeatmapCodec) from a pamtri checkpoint
    (self-describing: the codec stored with it, or built from its config when it predates stored codecs) or,
    given ``name``, any file :func:`load_weights` reads (e.g. the official PoseEstNet checkpoint)."""
    state = load_checkpoint(weights)
    cfg_dict = state.get("config") if isinstance(state.get("config"), dict) else None
    stored = cfg_dict is not None and name is None
    if stored:
        cfg = from_dict(PoseConfig, upgrade_renamed(PoseConfig, cfg_dict), f"{weights} (stored config)")
    else:
        if name is None:
            raise CheckpointError(f"{weights}: the checkpoint stores no pamtri config; name the architecture "
                                  f"(e.g. --model hrnet_w32 for the official PoseEstNet)")
        cfg = PoseConfig()
        cfg.model.name = name
        if checkpoint_layout(state_dict_of(state, str(weights))) == "posestnet":
            # Trained by the reference code: its cell convention and its one-cell flip shift.
            cfg.codec.cell_convention = "reference"
            cfg.codec.flip_shift = 1.0
    model = PoseHRNet(cfg.model.name)
    load_weights(model, weights)
    model.eval()
    if stored and isinstance(state.get("codec"), dict):
        codec = HeatmapCodec.from_dict(state["codec"], f"{weights} (stored codec)")
        # the stored codec is the one truth: the config's codec section says the same from here on
        cfg.codec = from_dict(CodecConfig, codec.section(), f"{weights} (stored codec)")
    else:
        codec = HeatmapCodec.from_config(cfg, model.stride)
    return model, PoseDescription(cfg, codec)


def _hrnet_candidates(state: dict) -> list[str]:
    """timm HRNet names whose stage-4 width (= final_layer input channels) and module count fit ``state``."""
    from timm.models import hrnet
    width = int(state["final_layer.weight"].shape[1])
    modules = len({k.split(".")[1] for k in state if k.startswith("stage4.")})
    return [name for name, c in getattr(hrnet, "cfg_cls", {}).items()
            if c["stage4"]["num_channels"][0] == width and c["stage4"]["num_modules"] == modules]


def convert_posestnet(src: str | os.PathLike, dst: str | os.PathLike, name: str | None = None) -> str:
    """Official PoseEstNet file -> pamtri pose checkpoint at ``dst``; returns a one-line summary."""
    state = state_dict_of(load_checkpoint(src), str(src))
    layout = checkpoint_layout(state)
    if layout != "posestnet":
        raise CheckpointError(f"{src}: not an official PoseEstNet checkpoint (expected pose_hrnet keys with a "
                              f"1x1 'final_layer'; this file has the {layout!r} layout)")
    candidates = [name] if name else _hrnet_candidates(state)
    model = cfg = codec = None
    for candidate in candidates:
        try:
            model, (cfg, codec) = load(src, candidate)
            break
        except CheckpointError:
            if name:
                raise
    if model is None:
        tried = ", ".join(candidates) or "none"
        raise CheckpointError(f"{src}: the tensor shapes fit no timm HRNet (tried: {tried}); name the "
                              f"architecture with --model")
    save_checkpoint({"model": model.state_dict(), "config": to_dict(cfg), "codec": codec.to_dict(), "kind": "pose",
                     "format": "pamtri-weights-1",
                     "converted_from": {"source": "official-posestnet", "file": Path(src).name}}, dst)
    return (f"pose {cfg.model.name}, cell convention {codec.cell_convention}, flip shift "
            f"{codec.flip_shift:g} cell, input {codec.input_size[0]}x{codec.input_size[1]} (W x H)")
