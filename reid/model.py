"""PAMTRI's pose-aware multi-task network and StRDAN's domain-adaptive variant: one configurable module.

Input: images (B, 3 [+36 heatmaps] [+13 segments], H, W), normalised; keypoints (B, 108) in [-0.5, 0.5].
Backbone (torchvision DenseNet121, ResNet-50, ResNet-50-IBN-a, or any timm model's ``forward_features``; the
first convolution widened for the pose channels) -> global pooling (avg, max or GeM) -> pooled feature (1024 /
2048 / timm's ``num_features``), concatenated with the keypoint vector when ``keypoints`` is on; or a timm ViT
adapted as TransReID (``timm/vit_*``, reid/vit.py: CLS token as the pooled feature, SIE, keypoint token) -> heads:

- ID, ``neck: fc`` (PAMTRI): FC ``id_fc`` + Leaky ReLU (the ReID feature) -> classifier over training identities;
- ID, ``neck: bnneck`` (Luo et al. 2019): BatchNorm1d (bias frozen) -> bias-free classifier; the triplet loss
  sees the BN's input (``triplet_feature``) or output (``bn_feature``, loss.triplet_feature), the test feature is
  the BN's output (or its input); ``model.non_local`` adds fast-reid's non-local blocks to a ResNet-50;
- colour / type / orientation: FC ``attr_fc`` + Leaky ReLU -> classifier;
- domain (real vs synthetic): gradient reversal layer -> FC ``attr_fc`` + Leaky ReLU -> classifier.

Weights (the builder with ImageNet initialisation, pamtri and official PAMTRI checkpoints) live in
``reid/weights.py``.
"""
from __future__ import annotations

import logging
import math
from collections import OrderedDict
from dataclasses import asdict

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from pamtri.common.errors import ConfigError
from pamtri.pose.keypoints import NUM_KEYPOINTS

from .config import ModelConfig, is_vit
from .parts import PartHead, num_parts, part_masks
from .vit import TransReIDViT, build_vit

log = logging.getLogger(__name__)

KEYPOINT_DIM = NUM_KEYPOINTS * 3  # 108
NEW_CHANNEL_STD = 0.02


class _GradientReversal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, coefficient):
        ctx.coefficient = float(coefficient)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.coefficient * grad, None


def grad_reverse(x: torch.Tensor, coefficient: float) -> torch.Tensor:
    """Identity forward; backward multiplies the gradient by ``-coefficient`` (Ganin & Lempitsky 2015)."""
    return _GradientReversal.apply(x, coefficient)


def grl_ramp(progress: float) -> float:
    """The usual reversal-coefficient ramp 2 / (1 + exp(-10 p)) - 1 for training progress p in [0, 1]."""
    p = min(max(float(progress), 0.0), 1.0)
    return 2.0 / (1.0 + math.exp(-10.0 * p)) - 1.0


class GeM(nn.Module):
    """Generalised-mean pooling (Radenovic et al. 2018): (B, C, H, W) -> (B, C) = mean(x^p)^(1/p), p learnable."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x.clamp_min(self.eps).pow(self.p), 1).flatten(1).pow(1.0 / self.p)


class IBN(nn.Module):
    """IBN-a normalisation (Pan et al. 2018): affine instance norm on the first half of the channels, batch norm
    on the rest; ``IN`` / ``BN`` named as in the IBN-Net weights."""

    def __init__(self, channels: int):
        super().__init__()
        self.half = channels // 2
        self.IN = nn.InstanceNorm2d(self.half, affine=True)
        self.BN = nn.BatchNorm2d(channels - self.half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.split(x, [self.half, x.shape[1] - self.half], dim=1)
        return torch.cat([self.IN(a.contiguous()), self.BN(b.contiguous())], dim=1)


class NonLocal(nn.Module):
    """Non-local block (Wang et al. 2018), dot-product form as fast-reid's ``Non_local`` (JDAI-CV/fast-reid
    fastreid/layers/non_local.py): (B, C, H, W) -> x + W(y), y_i = sum_j (theta_i . phi_j) / N g_j over the N = H W
    positions, theta / phi / g 1 x 1 convolutions to C / 2 channels, W a 1 x 1 convolution back to C then a BN
    whose weight and bias start at 0 (the block starts as the identity)."""

    def __init__(self, channels: int, reduction: int = 2):
        super().__init__()
        inner = channels // reduction
        self.g, self.theta, self.phi = (nn.Conv2d(channels, inner, 1) for _ in range(3))
        self.W = nn.Sequential(nn.Conv2d(inner, channels, 1), nn.BatchNorm2d(channels))
        nn.init.zeros_(self.W[1].weight)
        nn.init.zeros_(self.W[1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        g = self.g(x).flatten(2).transpose(1, 2)                     # (B, N, C')
        theta = self.theta(x).flatten(2).transpose(1, 2)             # (B, N, C')
        phi = self.phi(x).flatten(2)                                 # (B, C', N)
        y = (theta @ phi) / (h * w) @ g                              # (B, N, C')
        return x + self.W(y.transpose(1, 2).reshape(b, -1, h, w))


class NonLocalStage(nn.Sequential):
    """A ResNet stage (its blocks keep their names 0, 1, ...) with non-local blocks after some of them (``nl.<i>``)."""

    def __init__(self, stage: nn.Sequential, after: list[int], channels: int):
        super().__init__(*stage)
        self.nl = nn.ModuleDict({str(i): NonLocal(channels) for i in after})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(list(self)[:-1]):  # the last child is the ModuleDict
            x = block(x)
            if str(i) in self.nl:
                x = self.nl[str(i)](x)
        return x


# fast-reid's ResNet-50 placement (fastreid/modeling/backbones/resnet.py, nl_layers_per_stage '50x': [0, 2, 3, 0]):
# after the last 2 blocks of layer2 and the last 3 blocks of layer3
NON_LOCAL_PER_STAGE = {"layer1": 0, "layer2": 2, "layer3": 3, "layer4": 0}


def add_non_local(backbone: nn.Module) -> None:
    """Put fast-reid's non-local blocks into a ResNet-50's stages (``NON_LOCAL_PER_STAGE``)."""
    for name, count in NON_LOCAL_PER_STAGE.items():
        stage = getattr(backbone, name)
        if count:
            channels = stage[-1].conv3.out_channels
            setattr(backbone, name, NonLocalStage(stage, list(range(len(stage) - count, len(stage))), channels))


def _resnet_features(r: torchvision.models.ResNet) -> nn.Sequential:
    return nn.Sequential(OrderedDict((n, getattr(r, n)) for n in
                                     ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")))


def resnet50_ibn_a() -> nn.Sequential:
    """ResNet-50-IBN-a's convolutional part: ``bn1`` of every block in layers 1-3 is an ``IBN``, BN elsewhere."""
    net = _resnet_features(torchvision.models.resnet50(weights=None))
    for layer in (net.layer1, net.layer2, net.layer3):
        for block in layer:
            block.bn1 = IBN(block.bn1.num_features)
    return net


def _timm_backbone(name: str) -> tuple[nn.Module, int, str, str]:
    import timm
    try:
        net = timm.create_model(name, pretrained=False, num_classes=0)
    except RuntimeError as exc:
        raise ConfigError(f"model.backbone: timm/{name}: {exc}") from None
    first = net.pretrained_cfg.get("first_conv")
    if not isinstance(first, str) or not isinstance(net.get_submodule(first), nn.Conv2d):
        raise ConfigError(f"model.backbone: timm/{name} has no single first convolution to widen or load")
    return net, int(net.num_features), first, str(net.pretrained_cfg.get("classifier", "fc"))


def _backbone(cfg: ModelConfig) -> tuple[nn.Module, int, str, str]:
    """(convolutional part or TransReID ViT with random weights, its channels, its first conv's name, the
    classifier's name in ImageNet state dicts) of ``cfg.backbone``; torchvision / timm names as there."""
    name = cfg.backbone
    if is_vit(name):
        vit = build_vit(cfg)
        return vit, int(vit.vit.num_features), "vit.patch_embed.proj", "head"
    if name == "densenet121":
        return torchvision.models.densenet121(weights=None).features, 1024, "conv0", "classifier"
    if name == "resnet50":
        # the last BN of each residual branch starts at zero (Goyal et al. 2017): from random weights, ResNet-50
        # did not learn identities in the 300-step study without it (docs/reid.md); ImageNet weights overwrite it
        return _resnet_features(torchvision.models.resnet50(weights=None, zero_init_residual=True)), 2048, "conv1", "fc"
    if name == "resnet50_ibn_a":
        return resnet50_ibn_a(), 2048, "conv1", "fc"
    if name.startswith("timm/"):
        return _timm_backbone(name[len("timm/"):])
    raise ConfigError(f"model.backbone: unknown backbone {name!r}")


def set_last_stride_one(backbone: nn.Module, name: str) -> None:
    """Stride 1 instead of 2 in the first block of ``layer4`` (ResNet-style backbones): twice the final map size."""
    layer4 = getattr(backbone, "layer4", None)
    if layer4 is None:
        raise ConfigError(f"model.last_stride: 1 needs a ResNet-style backbone with a layer4; {name} has none")
    for m in layer4[0].modules():
        if isinstance(m, nn.Conv2d) and m.stride == (2, 2):
            m.stride = (1, 1)
        elif isinstance(m, nn.AvgPool2d) and m.stride in (2, (2, 2)):  # timm's average-pool downsampling
            m.kernel_size, m.stride = 1, 1


def replace_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    """Put ``module`` at dotted ``path`` (e.g. 'stem.0') inside ``root``."""
    parent, _, leaf = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)


def widen_first_conv(conv: nn.Conv2d, in_channels: int, rgb_weight: torch.Tensor | None = None) -> nn.Conv2d:
    """A copy of ``conv`` taking ``in_channels`` inputs: channels 0-2 keep ``rgb_weight`` (default: conv's own),
    the new channels are drawn from N(0, 0.02)."""
    rgb = conv.weight.detach() if rgb_weight is None else rgb_weight.detach()
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, conv.groups, bias=conv.bias is not None)
    with torch.no_grad():
        new.weight.normal_(0.0, NEW_CHANNEL_STD)
        new.weight[:, :3] = rgb.to(new.weight.dtype)
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


class SplitInputConv(nn.Module):
    """``conv`` computed as the sum of one convolution per channel group of its input (``groups``; the first one
    keeps the bias). Equal to ``conv`` (a convolution is linear in its input), but an INT8 quantiser then gives each
    group its own activation range: RGB in ImageNet units and the pose channels in theirs, where one range over
    both leaves the RGB channels a few levels."""

    def __init__(self, conv: nn.Conv2d, groups: list[int]):
        super().__init__()
        if conv.groups != 1 or sum(groups) != conv.in_channels:
            raise ValueError(f"channel groups {groups} do not split a {conv.in_channels}-channel convolution")
        self.groups = list(groups)
        self.convs = nn.ModuleList()
        start = 0
        for i, n in enumerate(groups):
            part = nn.Conv2d(n, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                             bias=conv.bias is not None and i == 0)
            with torch.no_grad():
                part.weight.copy_(conv.weight[:, start:start + n])
                if part.bias is not None:
                    part.bias.copy_(conv.bias)
            self.convs.append(part)
            start += n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        chunks = torch.split(x, self.groups, dim=1)
        out = self.convs[0](chunks[0])
        for conv, chunk in zip(self.convs[1:], chunks[1:]):
            out = out + conv(chunk)
        return out


def split_first_conv(model: ReIDNet) -> ReIDNet:
    """``model`` (changed in place) with its widened first convolution as a :class:`SplitInputConv` over its input
    groups (``ModelConfig.input_groups``; the ViT's patch projection too), for INT8 export; RGB-only models are
    returned unchanged."""
    conv = model.backbone.get_submodule(model.first_conv) if model.first_conv else None
    if isinstance(conv, nn.Conv2d) and len(model.cfg.input_groups) > 1:
        replace_submodule(model.backbone, model.first_conv, SplitInputConv(conv, model.cfg.input_groups))
    return model


def _head(in_dim: int, hidden: int, out_dim: int) -> tuple[nn.Linear | None, nn.Linear]:
    fc = nn.Linear(in_dim, hidden) if hidden > 0 else None
    return fc, nn.Linear(hidden if hidden > 0 else in_dim, out_dim)


def _bnneck(dim: int) -> nn.BatchNorm1d:
    """BNNeck's BatchNorm (weight 1, bias 0 and frozen, as in Luo et al. 2019)."""
    bn = nn.BatchNorm1d(dim)
    bn.bias.requires_grad_(False)
    return bn


def _bias_free_classifier(dim: int, num_ids: int) -> nn.Linear:
    """BNNeck's ID classifier: no bias, weights N(0, 0.001) as in the strong baseline."""
    fc = nn.Linear(dim, num_ids, bias=False)
    nn.init.normal_(fc.weight, std=0.001)
    return fc


class CosineClassifier(nn.Module):
    """(B, D) -> (B, C) cosine similarities to C learnable class weights, the input of margin softmaxes."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, dim).normal_(0.0, 0.01))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(x, dim=1), F.normalize(self.weight, dim=1))


def _id_classifier(cfg: ModelConfig, dim: int, num_ids: int) -> nn.Module:
    if cfg.classifier == "cosine":
        return CosineClassifier(dim, num_ids)
    return _bias_free_classifier(dim, num_ids) if cfg.neck == "bnneck" else nn.Linear(dim, num_ids)


class ReIDNet(nn.Module):
    """The configurable ReID network; ``forward`` returns a dict of the embedding and each head's logits."""

    def __init__(self, cfg: ModelConfig, num_ids: int, num_colors: int = 10, num_types: int = 9):
        super().__init__()
        if num_ids < 1 and cfg.id_head:
            raise ValueError("num_ids must be >= 1 when the ID head is on")
        self.cfg = cfg
        self.num_ids, self.num_colors, self.num_types = int(num_ids), int(num_colors), int(num_types)
        self.backbone, self.feature_dim, self.first_conv, self.imagenet_classifier = _backbone(cfg)
        if cfg.last_stride == 1:
            set_last_stride_one(self.backbone, cfg.backbone)
        if cfg.non_local:
            add_non_local(self.backbone)
        if cfg.in_channels != 3:
            conv = self.backbone.get_submodule(self.first_conv)
            replace_submodule(self.backbone, self.first_conv, widen_first_conv(conv, cfg.in_channels))
        self.gem = GeM() if cfg.pooling == "gem" else None
        self.is_vit = isinstance(self.backbone, TransReIDViT)  # the keypoint vector is its token, not concatenated
        self.concat_keypoints = cfg.keypoints and not self.is_vit
        head_in = self.feature_dim + (KEYPOINT_DIM if self.concat_keypoints else 0)
        self.bnneck = _bnneck(head_in) if cfg.neck == "bnneck" else None
        self.id_fc = nn.Linear(head_in, cfg.id_fc) if cfg.id_fc > 0 else None
        id_dim = cfg.id_fc if cfg.id_fc > 0 else head_in
        self.id_classifier = _id_classifier(cfg, id_dim, self.num_ids) if cfg.id_head else None
        self.embedding_dim = {"fc": cfg.id_fc, "pool": self.feature_dim}.get(cfg.embedding_source, head_in)
        # JPM (ViT): a BNNeck and a bias-free classifier per local branch; the test feature joins global + locals / 4
        self.jpm_parts = cfg.jpm_parts if cfg.jpm else 0
        self.jpm_bnnecks = nn.ModuleList(_bnneck(head_in) for _ in range(self.jpm_parts))
        self.jpm_classifiers = nn.ModuleList(_id_classifier(cfg, head_in, self.num_ids) for _ in range(self.jpm_parts)
                                             ) if cfg.id_head else nn.ModuleList()
        self.embedding_dim *= 1 + self.jpm_parts
        # the center loss sees BNNeck's input, else the test feature (the one the triplet loss sees)
        center_dim = head_in if self.bnneck is not None else self.embedding_dim
        self.centers = nn.Parameter(torch.randn(self.num_ids, center_dim)) if cfg.centers else None
        self.color_fc, self.color_classifier = _head(head_in, cfg.attr_fc, num_colors) if cfg.color else (None, None)
        self.type_fc, self.type_classifier = _head(head_in, cfg.attr_fc, num_types) if cfg.type else (None, None)
        self.orientation_fc, self.orientation_classifier = (
            _head(head_in, cfg.attr_fc, cfg.orientation_bins) if cfg.orientation else (None, None))
        self.domain_fc, self.domain_classifier = _head(head_in, cfg.attr_fc, 2) if cfg.domain else (None, None)
        self.grl_coefficient = cfg.grl_coefficient if cfg.grl == "constant" else 0.0
        self.backbone_frozen = False
        # model.parts: a part head on the last feature map (ViT: patch tokens) beside the global one (reid/parts.py)
        self.num_parts = num_parts(cfg.parts)
        self.part_head = PartHead(self.feature_dim, self.num_parts, cfg.part_dim, self.num_ids if cfg.id_head else 0
                                  ) if self.num_parts else None
        self.global_dim = self.embedding_dim
        if self.num_parts:  # embed(): [global feature, P part features, P visibilities] (split_embedding)
            self.embedding_dim += self.num_parts * (cfg.part_dim + 1)

    @property
    def part_layout(self) -> tuple[int, int, int] | None:
        """(global dim, parts, part dim) of the flat ``embed`` output of a model with parts, else None."""
        return (self.global_dim, self.num_parts, self.cfg.part_dim) if self.num_parts else None

    def set_progress(self, progress: float) -> float:
        """Update the reversal coefficient for training progress p in [0, 1]; returns it."""
        c = self.cfg.grl_coefficient
        self.grl_coefficient = c if self.cfg.grl == "constant" else c * grl_ramp(progress)
        return self.grl_coefficient

    def feature_map(self, images: torch.Tensor, *side) -> torch.Tensor:
        """(B, C, H, W) normalised input -> (B, feature_dim, h, w) backbone output (timm: ``forward_features``;
        the ViT: its (B, feature_dim) CLS token, ``side`` = keypoints, cameras, views)."""
        if images.shape[1] != self.cfg.in_channels:
            raise ValueError(f"the model takes {self.cfg.in_channels} input channels, got {images.shape[1]}")
        forward = getattr(self.backbone, "forward_features", self.backbone)
        if not (self.backbone_frozen and self.training):
            return forward(images, *side)
        self.backbone.eval()  # frozen: no gradient and no BatchNorm statistics update (model.freeze_iters)
        with torch.no_grad():
            x = forward(images, *side)
        self.backbone.train()
        return x

    def pooled(self, images: torch.Tensor, keypoints: torch.Tensor | None = None,
               cameras: torch.Tensor | None = None, views: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, H, W) normalised input -> (B, feature_dim) globally pooled (avg, max or GeM) backbone feature;
        the ViT's CLS token, which alone takes the keypoints (B, 108) and the SIE camera / view ids (B,)."""
        return self._pooled_and_map(images, keypoints, cameras, views)[0]

    def _pooled_and_map(self, images, keypoints=None, cameras=None, views=None
                        ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(pooled feature as :meth:`pooled`, the last feature map (B, C, h, w) or the ViT's patch tokens on their
        grid when the model has parts, else None)."""
        if self.is_vit:
            out = self.feature_map(images, keypoints, cameras, views)
            return out if isinstance(out, tuple) else (out, None)
        x = self.feature_map(images)
        if self.gem is not None:
            pooled = self.gem(x)
        elif self.cfg.pooling == "max":
            pooled = F.adaptive_max_pool2d(x, 1).flatten(1)
        else:
            pooled = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return pooled, (x if self.part_head is not None else None)

    def _parts(self, fmap: torch.Tensor, keypoints: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """The part head's outputs and 'part_visibility' (B, P) for the feature map ``fmap``."""
        if keypoints is None:
            raise ValueError("this model pools part features inside masks drawn from the keypoints: pass keypoints "
                             "(B, 108)")
        masks, visibility = part_masks(keypoints, tuple(fmap.shape[-2:]), self.cfg.parts, self.cfg.part_view_gate)
        return {**self.part_head(fmap, masks), "part_visibility": visibility.to(fmap.dtype)}

    def flat_embedding(self, out: dict[str, torch.Tensor]) -> torch.Tensor:
        """The test feature of a forward dict: 'embedding', with parts [embedding, part features, visibilities]."""
        if "part_feature" not in out:
            return out["embedding"]
        return torch.cat([out["embedding"], out["part_feature"].flatten(1).to(out["embedding"].dtype),
                          out["part_visibility"].to(out["embedding"].dtype)], dim=1)

    def _head_input(self, pooled: torch.Tensor, keypoints: torch.Tensor | None) -> torch.Tensor:
        if not self.concat_keypoints:
            return pooled
        if keypoints is None:
            raise ValueError("this model concatenates the 108-d keypoint vector: pass keypoints (B, 108)")
        # -1, not len(pooled): a traced len() is a constant and would freeze the batch size in ONNX exports
        return torch.cat([pooled, keypoints.to(pooled.dtype).reshape(-1, KEYPOINT_DIM)], dim=1)

    def _id_feature(self, f: torch.Tensor) -> torch.Tensor:
        """The ID classifier's input: FC + Leaky ReLU, BNNeck's BN output, or ``f`` itself."""
        if self.bnneck is not None:
            return self.bnneck(f)
        return F.leaky_relu(self.id_fc(f)) if self.id_fc is not None else f

    def _test_feature(self, pooled: torch.Tensor, f: torch.Tensor, fid: torch.Tensor) -> torch.Tensor:
        return {"pool": pooled, "before_bn": f}.get(self.cfg.embedding_source, fid)

    def _split_jpm(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The JPM ViT's (B, 1 + P, D) -> (global (B, D), locals (B, P, D)); other backbones: (pooled, None)."""
        return (pooled[:, 0], pooled[:, 1:]) if self.jpm_parts else (pooled, None)

    def _jpm_test_feature(self, feature: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
        """TransReID's test feature with JPM: [global, local_1 / 4, ..., local_P / 4] before or after the BNNecks."""
        if self.cfg.embedding_source in ("after_bn", "auto"):
            local = torch.stack([bn(local[:, i]) for i, bn in enumerate(self.jpm_bnnecks)], dim=1)
        return torch.cat([feature, (local / 4).flatten(1)], dim=1)

    def embed(self, images: torch.Tensor, keypoints: torch.Tensor | None = None,
              cameras: torch.Tensor | None = None, views: torch.Tensor | None = None) -> torch.Tensor:
        """Test-time feature (B, embedding_dim): FC output, BNNeck after / before its BN, or pooled; no logits.
        ``cameras`` / ``views`` (B,) int64 (-1 unknown) feed the ViT's SIE only."""
        pooled, fmap = self._pooled_and_map(images, keypoints, cameras, views)
        pooled, local = self._split_jpm(pooled)
        if self.cfg.embedding_source == "pool" and local is None and fmap is None:
            return pooled
        f = self._head_input(pooled, keypoints)
        if self.cfg.embedding_source == "pool":
            out = pooled
        else:
            out = f if self.cfg.embedding_source == "before_bn" else self._id_feature(f)
        if fmap is not None:
            return self.flat_embedding({"embedding": out, **self._parts(fmap, keypoints)})
        return out if local is None else self._jpm_test_feature(out, local)

    def forward(self, images: torch.Tensor, keypoints: torch.Tensor | None = None,
                cameras: torch.Tensor | None = None, views: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """{'embedding': (B, D) global test feature, 'id', 'color', 'type', 'orientation', 'domain': logits} for the
        heads on (with model.parts also the part head's outputs; ``flat_embedding`` joins them as ``embed`` does);
        BNNeck adds 'triplet_feature' (B, D), its input, which the triplet loss sees; 'centers' (ids, D) the center
        loss's class centres (model.centers). ``cameras`` / ``views`` (B,) feed the ViT's SIE only."""
        pooled, fmap = self._pooled_and_map(images, keypoints, cameras, views)
        pooled, local = self._split_jpm(pooled)
        f = self._head_input(pooled, keypoints)
        fid = self._id_feature(f)
        out = {"embedding": self._test_feature(pooled, f, fid)}
        if fmap is not None:  # parts: 'part_triplet', 'part_feature', 'part_visibility' (B, P), 'part_id' (P, B, ids)
            out.update(self._parts(fmap, keypoints))
        if self.bnneck is not None:
            out["triplet_feature"] = f
            out["bn_feature"] = fid
        if local is not None:  # JPM: test feature, local features (P, B, D) for the triplet loss, local ID logits
            out["embedding"] = self._jpm_test_feature(out["embedding"], local)
            out["triplet_local"] = local.transpose(0, 1)
            if self.jpm_classifiers:
                out["id_local"] = torch.stack([c(bn(local[:, i])) for i, (bn, c) in
                                               enumerate(zip(self.jpm_bnnecks, self.jpm_classifiers))])
        if self.centers is not None:
            out["centers"] = self.centers
        if self.id_classifier is not None:
            out["id"] = self.id_classifier(fid)
        for name in ("color", "type", "orientation", "domain"):
            classifier = getattr(self, f"{name}_classifier")
            if classifier is None:
                continue
            x = grad_reverse(f, self.grl_coefficient) if name == "domain" else f
            fc = getattr(self, f"{name}_fc")
            if fc is not None:
                x = F.leaky_relu(fc(x))
            out[name] = classifier(x)
        return out

    def describe(self) -> dict:
        """What is needed to rebuild this model: the model config and the class counts."""
        return {"model": asdict(self.cfg), "num_ids": self.num_ids, "num_colors": self.num_colors,
                "num_types": self.num_types}
