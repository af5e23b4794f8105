"""Convert the official PAMTRI checkpoints into self-describing pamtri checkpoints.

- PoseEstNet (official ``pose_hrnet`` names) -> a pose checkpoint with a stored config, so it loads
  without ``--model``; the architecture is found from the tensor shapes (the timm HRNet of the same
  stage-4 width and module count whose keys and shapes all fit), and the reference code's conventions
  (cell convention 'reference', flip shift 1 cell) are recorded, as pose.predict.load_pose_model sets
  them for official files.
- MultiTaskNet (official ReID names) -> a ReID checkpoint with the model description derived from the
  tensor shapes by reid.model.pamtri_layout: input channels 3 / 16 / 39 / 52 (RGB, + 13 segments,
  + 36 heatmaps, + both), colour/type heads when ``fc_vcolor`` is present, the keypoint vector when the
  ReID FC takes 1024 + 108 inputs. The data config is the default (256x256, ImageNet mean/std).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from pamtri.common.checkpoint import load_checkpoint, save_checkpoint
from pamtri.common.config import to_dict
from pamtri.common.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)

SOURCES = ("official-posestnet", "official-pamtri-reid")


def _hrnet_candidates(state: dict) -> list[str]:
    """timm HRNet names whose stage-4 width (= final_layer input channels) and module count fit ``state``."""
    from timm.models import hrnet
    width = int(state["final_layer.weight"].shape[1])
    modules = len({k.split(".")[1] for k in state if k.startswith("stage4.")})
    return [name for name, c in getattr(hrnet, "cfg_cls", {}).items()
            if c["stage4"]["num_channels"][0] == width and c["stage4"]["num_modules"] == modules]


def convert_posestnet(src: str | os.PathLike, dst: str | os.PathLike, name: str | None = None) -> str:
    """Official PoseEstNet file -> pamtri pose checkpoint at ``dst``; returns a one-line summary."""
    from pamtri.pose.model import checkpoint_layout, state_dict_of
    from pamtri.pose.predict import load_pose_model
    state = state_dict_of(load_checkpoint(src), str(src))
    layout = checkpoint_layout(state)
    if layout != "posestnet":
        raise CheckpointError(f"{src}: not an official PoseEstNet checkpoint (expected pose_hrnet keys with a "
                              f"1x1 'final_layer'; this file has the {layout!r} layout)")
    candidates = [name] if name else _hrnet_candidates(state)
    model = cfg = codec = None
    for candidate in candidates:
        try:
            model, cfg, codec = load_pose_model(src, candidate)
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


def convert_pamtri_reid(src: str | os.PathLike, dst: str | os.PathLike) -> str:
    """Official MultiTaskNet file -> pamtri ReID checkpoint at ``dst``; returns a one-line summary."""
    from pamtri.reid.config import ReIDConfig
    from pamtri.reid.model import is_pamtri_state, load_pamtri_checkpoint
    if not is_pamtri_state(load_checkpoint(src)):
        raise CheckpointError(f"{src}: not an official PAMTRI MultiTaskNet checkpoint (expected 'base.*' and "
                              f"'classifier_vid.*' keys)")
    model = load_pamtri_checkpoint(src)
    cfg = ReIDConfig()
    cfg.model = model.cfg
    save_checkpoint({"model": model.state_dict(), "model_description": model.describe(), "config": to_dict(cfg),
                     "format": "pamtri-reid-weights-1",
                     "converted_from": {"source": "official-pamtri-reid", "file": Path(src).name}}, dst)
    m = model.cfg
    return (f"reid {m.backbone}, {m.in_channels} input channels (heatmaps {m.heatmaps}, segments {m.segments}), "
            f"keypoint vector {m.keypoints}, colour/type heads {m.color}, {model.num_ids} ids, "
            f"{model.embedding_dim}-d embedding")


def convert(source: str, src: str | os.PathLike, dst: str | os.PathLike, name: str | None = None) -> str:
    """Dispatch on ``source`` (one of SOURCES); returns the converter's summary."""
    if source == "official-posestnet":
        return convert_posestnet(src, dst, name)
    if source == "official-pamtri-reid":
        if name:
            raise ConfigError("--model applies to official-posestnet only (the ReID layout is read from the file)")
        return convert_pamtri_reid(src, dst)
    raise ConfigError(f"unknown weights source {source!r} (choose from {', '.join(SOURCES)})")
