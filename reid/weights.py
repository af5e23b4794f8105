"""The ReID stage's weights: build, load, convert, describe.

- ``build_model(cfg, num_ids)``: a fresh network, its backbone initialised from local ImageNet weights when
  ``cfg.pretrained`` names a file or is ``imagenet`` (the torch hub cache).
- ``load(path)`` -> (ReIDNet in eval mode, the checkpoint dict): a pamtri checkpoint is self-describing (the
  model description and configs stored with it), an official PAMTRI MultiTaskNet file is recognised by its
  keys.
- The official MultiTaskNet layout: ``base.*`` = ``densenet121.features``, ``fc_vid`` / ``fc``, ``fc_vcolor``,
  ``fc_vtype``, ``classifier_vid``, ``classifier_vcolor``, ``classifier_vtype``; its DenseNet pools the
  ``norm5`` output without a final ReLU, and so does ours, so the official weights give the official
  features. The model description is derived from the tensor shapes (``pamtri_layout``): input channels
  3 / 16 / 39 / 52 (RGB, + 13 segments, + 36 heatmaps, + both), colour/type heads when ``fc_vcolor`` is
  present, the keypoint vector when the ReID FC takes 1024 + 108 inputs; ``convert_pamtri_reid`` writes it
  as a self-describing checkpoint with the default data config (256x256, ImageNet mean/std).
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision

from pamtri.common.checkpoint import (
    load_checkpoint,
    match_state_dict,
    save_checkpoint,
    state_dict_of,
    with_batchnorm_counters,
)
from pamtri.common.config import from_dict, to_dict
from pamtri.common.errors import CheckpointError, ConfigError
from pamtri.pose.keypoints import NUM_KEYPOINTS, NUM_SEGMENTS

from .config import ModelConfig, ReIDConfig
from .model import KEYPOINT_DIM, ReIDNet, replace_submodule, widen_first_conv
from .vit import imagenet_vit_state

log = logging.getLogger(__name__)


def build_model(cfg: ModelConfig, num_ids: int, num_colors: int = 10, num_types: int = 9) -> ReIDNet:
    """The network of ``cfg``, with ImageNet weights loaded into the backbone when ``cfg.pretrained`` names a
    local file or is ``imagenet`` (the torch hub cache)."""
    model = ReIDNet(cfg, num_ids, num_colors, num_types)
    if cfg.pretrained == "imagenet":
        load_imagenet_weights(model, imagenet_weights_file(model))
    elif cfg.pretrained:
        load_imagenet_weights(model, cfg.pretrained)
    return model


def imagenet_weights_url(model: ReIDNet) -> str:
    """Where torchvision or timm publish the ImageNet weights of ``model``'s backbone; ConfigError when nobody does."""
    name = model.cfg.backbone
    if name == "densenet121":
        return torchvision.models.DenseNet121_Weights.IMAGENET1K_V1.url
    if name == "resnet50":
        return torchvision.models.ResNet50_Weights.IMAGENET1K_V1.url
    url = model.backbone.pretrained_cfg.get("url") if name.startswith("timm/") else None
    if not url:
        raise ConfigError(f"model.pretrained: imagenet: no download address for {name} (resnet50_ibn_a: IBN-Net's "
                          "r50_ibn_a.pth from github.com/XingangPan/IBN-Net releases; ViT-B/16: name the tag with a "
                          "file, timm/vit_base_patch16_224.orig_in21k_ft_in1k); set model.pretrained to a file")
    return url


def imagenet_weights_file(model: ReIDNet) -> Path:
    """The torch hub cache file (``torch.hub.get_dir()/checkpoints``) of the backbone's ImageNet weights,
    downloaded with its hash check when missing; CheckpointError naming the file when it cannot be fetched."""
    url = imagenet_weights_url(model)
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name
    if path.is_file():
        return path
    digest = re.search(r"-([a-f0-9]{6,})\.", path.name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), hash_prefix=digest.group(1) if digest else None)
    except (OSError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: ImageNet weights of {model.cfg.backbone} not in the torch hub cache and not "
                              f"downloadable ({exc}); fetch {url} and place it there") from None
    return path


def model_from_description(desc: dict) -> ReIDNet:
    """Rebuild (random weights, no ImageNet loading) the model a checkpoint's ``describe()`` dict names."""
    cfg = from_dict(ModelConfig, dict(desc["model"]), "checkpoint model description")
    cfg = replace(cfg, pretrained=None)
    return ReIDNet(cfg, desc["num_ids"], desc.get("num_colors", 10), desc.get("num_types", 9))


_OLD_DENSENET_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\."
                               r"((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$")


def imagenet_backbone_state(state: dict, backbone: str, classifier: str = "fc") -> dict:
    """Backbone-only keys of a torchvision / timm / IBN-Net ImageNet state dict (``classifier``.* dropped, old
    DenseNet names fixed)."""
    out = {}
    for k, v in state_dict_of(state, "state dict").items():
        if backbone == "densenet121":
            if not k.startswith("features."):
                continue
            k = k[len("features."):]
            k = _OLD_DENSENET_KEY.sub(lambda m: m.group(1) + m.group(2), k)
        elif k.startswith(classifier + "."):
            continue
        out[k] = v
    return out


def load_imagenet_weights(model: ReIDNet, path: str | os.PathLike) -> None:
    """Load a local ImageNet state dict into ``model.backbone``; the widened conv keeps RGB weights."""
    state = imagenet_backbone_state(load_checkpoint(path), model.cfg.backbone, model.imagenet_classifier)
    if model.is_vit:
        state = imagenet_vit_state(state, model.backbone)
    first = model.first_conv + ".weight"
    rgb = state.get(first)
    if rgb is None or rgb.shape[1] != 3:
        raise CheckpointError(f"{path}: not a {model.cfg.backbone} ImageNet state dict (no 3-channel '{first}')")
    conv = model.backbone.get_submodule(model.first_conv)
    if conv.in_channels != 3:
        replace_submodule(model.backbone, model.first_conv, widen_first_conv(conv, conv.in_channels, rgb))
        state[first] = model.backbone.get_submodule(model.first_conv).weight.detach().clone()
    own = model.backbone.state_dict()  # non-local blocks are not in ImageNet files: they keep their initialisation
    state.update({k: own[k] for k in own if ".nl." in k and k not in state})
    match_state_dict(model.backbone, with_batchnorm_counters(state, model.backbone),
                     f"{path} (ImageNet {model.cfg.backbone})")
    log.info("loaded ImageNet weights for %s from %s", model.cfg.backbone, path)


_PAMTRI_NAMES = {
    "fc_vid": "id_fc", "fc": "id_fc", "classifier_vid": "id_classifier",
    "fc_vcolor": "color_fc", "classifier_vcolor": "color_classifier",
    "fc_vtype": "type_fc", "classifier_vtype": "type_classifier",
}


def is_pamtri_state(state: dict) -> bool:
    """True when a state dict has the official MultiTaskNet layout (``base.*`` + ``classifier_vid``)."""
    keys = state_dict_of(state, "state dict")
    return "classifier_vid.weight" in keys and any(k.startswith("base.") for k in keys)


def pamtri_layout(state: dict) -> tuple[ModelConfig, int, int, int]:
    """(model config, num_ids, num_colors, num_types) of an official PAMTRI MultiTaskNet state dict."""
    s = state_dict_of(state, "state dict")
    if not is_pamtri_state(s):
        raise CheckpointError("not an official PAMTRI MultiTaskNet state dict (expected base.* and classifier_vid.*)")
    conv = s.get("base.conv0.weight")
    if conv is None:
        raise CheckpointError("official PAMTRI checkpoint without base.conv0.weight (only DenseNet121 is published)")
    extra = int(conv.shape[1]) - 3
    heat = extra in (NUM_KEYPOINTS, NUM_KEYPOINTS + NUM_SEGMENTS)
    seg = extra in (NUM_SEGMENTS, NUM_KEYPOINTS + NUM_SEGMENTS)
    if extra not in (0, NUM_KEYPOINTS, NUM_SEGMENTS, NUM_KEYPOINTS + NUM_SEGMENTS):
        raise CheckpointError(f"official PAMTRI checkpoint with {extra + 3} input channels (expected 3, 16, 39 or 52)")
    fc = s.get("fc_vid.weight", s.get("fc.weight"))
    multitask = "fc_vcolor.weight" in s
    keypoints = fc is not None and int(fc.shape[1]) == 1024 + KEYPOINT_DIM
    cfg = ModelConfig(backbone="densenet121", pretrained=None, heatmaps=heat, segments=seg, keypoints=keypoints,
                      id_fc=int(fc.shape[0]) if fc is not None else 0, attr_fc=512, id_head=True,
                      color=multitask, type=multitask, orientation=False, domain=False,
                      embedding="fc" if fc is not None else "pool")
    num_colors = int(s["classifier_vcolor.weight"].shape[0]) if multitask else 10
    num_types = int(s["classifier_vtype.weight"].shape[0]) if multitask else 9
    return cfg, int(s["classifier_vid.weight"].shape[0]), num_colors, num_types


def convert_pamtri_state(state: dict) -> dict:
    """Rename an official MultiTaskNet state dict into this module's names (``base.`` -> ``backbone.`` ...)."""
    out = {}
    for k, v in state_dict_of(state, "state dict").items():
        head, _, rest = k.partition(".")
        if head == "base":
            out["backbone." + rest] = v
        elif head in _PAMTRI_NAMES:
            out[_PAMTRI_NAMES[head] + "." + rest] = v
        else:
            raise CheckpointError(f"unexpected key {k!r} in an official PAMTRI checkpoint")
    return out


def load_pamtri_checkpoint(path: str | os.PathLike) -> ReIDNet:
    """The network of an official PAMTRI MultiTaskNet checkpoint (torchreid ``{'state_dict': ...}`` file)."""
    raw = load_checkpoint(path)
    cfg, num_ids, num_colors, num_types = pamtri_layout(raw)
    model = ReIDNet(cfg, num_ids, num_colors, num_types)
    match_state_dict(model, with_batchnorm_counters(convert_pamtri_state(raw), model), str(path))
    log.info("loaded official PAMTRI checkpoint %s (%d ids, H=%s S=%s K=%s MT=%s)", path, num_ids,
             cfg.heatmaps, cfg.segments, cfg.keypoints, cfg.color)
    return model


def evaluated_part_weight(path: str | os.PathLike) -> float:
    """The co-visible part weight a ReID checkpoint's own configuration evaluates with (its stored
    ``eval.part_weight``; models with parts, issue 25): the default of search over an index of its features. 1.0
    (the configuration default) when the file cannot be read or stores no such key."""
    try:
        raw = load_checkpoint(path)
    except CheckpointError:
        return 1.0
    stored = raw.get("config") if isinstance(raw.get("config"), dict) else {}
    return float((stored.get("eval") or {}).get("part_weight", 1.0))


def load(path: str | os.PathLike) -> tuple[ReIDNet, dict]:
    """A model from a pamtri ReID checkpoint (training state or best weights) or an official PAMTRI file;
    returns (model in eval mode, its description: the checkpoint dict with its stored configs)."""
    raw = load_checkpoint(path)
    if "describe" in raw or "model_description" in raw:
        desc = raw.get("model_description") or raw["describe"]
        model = model_from_description(desc)
        match_state_dict(model, raw["model"], str(path))
    elif is_pamtri_state(raw):
        model = load_pamtri_checkpoint(path)
    else:
        raise CheckpointError(f"{path}: neither a pamtri ReID checkpoint (with a model description) nor an "
                              "official PAMTRI MultiTaskNet checkpoint")
    return model.eval(), raw


def convert_pamtri_reid(src: str | os.PathLike, dst: str | os.PathLike) -> str:
    """Official MultiTaskNet file -> pamtri ReID checkpoint at ``dst``; returns a one-line summary."""
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
