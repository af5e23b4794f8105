"""TransReID's ViT for ReID (He et al. 2021) on timm's VisionTransformer, with PAMTRI's pose inputs.

``model.backbone: timm/vit_*`` (e.g. ``timm/vit_base_patch16_224.orig_in21k_ft_in1k``, the ImageNet file TransReID
starts from) builds timm's ViT for ``model.input_size`` and adapts it:

- overlapping patches: the 16 x 16 patch convolution runs with stride ``model.patch_stride`` (12: a 21 x 21 grid
  on 256 x 256), the position embeddings resampled (timm's ``resample_abs_pos_embed``) to that grid, at build time
  and when ImageNet weights (14 x 14 grid) are loaded;
- SIE (side information embedding): learnable camera (``model.sie_cameras``) and view (``model.sie_views``)
  embeddings, ``model.sie_coefficient`` (3.0) times their sum added to every token after the position embedding;
  id -1 (unknown) adds zero. Views come from the labels (orientation bins) or from the keypoints' visibility
  (``pose_view``, ``model.sie_view_source: pose``);
- pose: heatmap / segment channels widen the patch convolution (``ReIDNet`` does it, as for CNNs); the 108-d
  keypoint vector enters as one extra token through a linear layer, so every block can attend to it;
- the feature is the final CLS token (B, embed_dim), which ``ReIDNet`` treats as the pooled feature;
- joint SIE (``model.sie_mode: joint``, TransReID's ``sie_embed``): one (cameras x views, D) table, row
  camera * views + view, so each camera-view pair has its own embedding (damo-cv/TransReID
  model/backbones/vit_pytorch.py, ``TransReID.__init__`` / ``forward_features``);
- JPM (``model.jpm``, TransReID's jigsaw patch module, model/make_model.py ``build_transformer_local`` and
  ``shuffle_unit``): the tokens before the last block go through that block + norm for the global feature, and,
  shifted and shuffled (:func:`shift_shuffle`), in ``jpm_parts`` groups each with the CLS token through a copy of
  it for the local features; the forward returns (B, 1 + parts, D);
- drop-path (``model.drop_path``): timm's stochastic depth, rate linear over the blocks up to it (TransReID 0.1).
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

from pamtri.common.errors import ConfigError
from pamtri.pose.keypoints import NUM_KEYPOINTS

from .config import ModelConfig

# Pose-derived views: which faces of the vehicle are visible. Keypoints 0-17 are on the left side, k + 18 mirrors k.
VIEW_NAMES = ("front", "front_left", "left", "rear_left", "rear", "rear_right", "right", "front_right")
POSE_VIEWS = len(VIEW_NAMES)
FRONT_FACE = (16, 17, 34, 35)                 # front upper / bottom corners of both sides
REAR_FACE = (10, 11, 28, 29)                  # back bottom / upper corners of both sides
LEFT_SIDE = tuple(range(10))                  # left wheels and wheel arches: seen only from the left
RIGHT_SIDE = tuple(k + 18 for k in LEFT_SIDE)
VISIBLE = 0.5                                 # a face is visible when its keypoints' mean confidence exceeds this
# faces as bits; VIEW_FACES[view + 1] = the faces a view bin names (index 0: unknown view, no face)
FRONT, REAR, LEFT, RIGHT = 1, 2, 4, 8
VIEW_FACES = torch.tensor((0, FRONT, FRONT | LEFT, LEFT, REAR | LEFT, REAR, REAR | RIGHT, RIGHT, FRONT | RIGHT))
# VIEW_TABLE[end][side]: end 0 none / 1 front / 2 rear, side 0 none / 1 left / 2 right -> view bin (-1: nothing seen)
_VIEW_TABLE = ((-1, 2, 6), (0, 1, 7), (4, 3, 5))


def pose_view(confidence: torch.Tensor) -> torch.Tensor:
    """(B, 36) keypoint confidences in [0, 1] -> (B,) int64 view bin of ``VIEW_NAMES``, -1 when no face is
    visible: the more visible of front / rear face and of left / right side, each only above ``VISIBLE``."""
    def score(index):
        return confidence[:, list(index)].float().mean(1)

    def pick(a, b):  # 0 none, 1 a, 2 b
        return torch.where((a > VISIBLE) & (a >= b), 1, torch.where(b > VISIBLE, 2, 0))

    end = pick(score(FRONT_FACE), score(REAR_FACE))
    side = pick(score(LEFT_SIDE), score(RIGHT_SIDE))
    table = torch.tensor(_VIEW_TABLE, dtype=torch.long, device=confidence.device)
    return table[end, side]


def _lookup(table: nn.Parameter | None, ids: torch.Tensor | None, key: str) -> torch.Tensor | None:
    """Rows of a (N, D) embedding for (B,) ids as (B, D), zeros where the id is -1; None without table or ids."""
    if table is None or ids is None:
        return None
    ids = ids.to(table.device).long().reshape(-1)
    if ids.numel() and int(ids.max()) >= len(table):
        raise ValueError(f"id {int(ids.max())} >= {key} = {len(table)}: raise {key}")
    return table[ids.clamp_min(0)] * (ids >= 0).to(table.dtype)[:, None]


class TransReIDViT(nn.Module):
    """timm ViT with overlapping patches, SIE and the keypoint token: (B, C, H, W) images [+ (B, 108) keypoint
    vector, (B,) camera ids, (B,) view ids] -> (B, embed_dim) CLS feature."""

    def __init__(self, vit: nn.Module, cfg: ModelConfig):
        super().__init__()
        self.vit = vit
        dim = int(vit.num_features)
        joint = cfg.sie_mode == "joint" and cfg.sie_cameras > 0 and cfg.sie_views > 0
        self.camera_embed = None if joint else _side_table(cfg.sie_cameras, dim)
        self.view_embed = None if joint else _side_table(cfg.sie_views, dim)
        self.sie_embed = _side_table(cfg.sie_cameras * cfg.sie_views, dim) if joint else None
        self.num_cameras, self.num_views = cfg.sie_cameras, cfg.sie_views
        self.jpm = cfg.jpm
        if cfg.jpm:  # the local branches' copy of the last block (+ norm); ImageNet weights fill it as the last one
            self.jpm_block, self.jpm_norm = copy.deepcopy(vit.blocks[-1]), copy.deepcopy(vit.norm)
            self.jpm_shift, self.jpm_groups, self.jpm_parts = cfg.jpm_shift, cfg.jpm_groups, cfg.jpm_parts
            self.jpm_rearrange = cfg.jpm_rearrange
        self.coefficient = float(cfg.sie_coefficient)
        self.part_tokens = cfg.parts != "none"  # model.parts: the patch tokens on their grid as well
        self.view_from_pose = cfg.sie_view_source == "pose" and cfg.sie_views > 0
        self.keypoint_token = nn.Linear(NUM_KEYPOINTS * 3, dim) if cfg.keypoints else None
        if self.keypoint_token is not None:
            nn.init.trunc_normal_(self.keypoint_token.weight, std=0.02)
            nn.init.zeros_(self.keypoint_token.bias)

    @property
    def pretrained_cfg(self) -> dict:
        return self.vit.pretrained_cfg

    def side_embedding(self, cameras: torch.Tensor | None, views: torch.Tensor | None) -> torch.Tensor | None:
        """(B, D) SIE term: coefficient x (camera row + view row), or x the joint table's row camera * views + view
        (zero where either id is -1); zero rows for id -1; None when nothing applies."""
        if self.sie_embed is not None:
            if cameras is None or views is None:
                return None
            cams, vws = (t.to(self.sie_embed.device).long().reshape(-1) for t in (cameras, views))
            for ids, n, key in ((cams, self.num_cameras, "model.sie_cameras"),
                                (vws, self.num_views, "model.sie_views")):
                if ids.numel() and int(ids.max()) >= n:
                    raise ValueError(f"id {int(ids.max())} >= {key} = {n}: raise {key}")
            known = (cams >= 0) & (vws >= 0)
            joint = torch.where(known, cams * self.num_views + vws, -1)
            return self.coefficient * _lookup(self.sie_embed, joint, "the joint SIE table")
        rows = [r for r in (_lookup(self.camera_embed, cameras, "model.sie_cameras"),
                            _lookup(self.view_embed, views, "model.sie_views")) if r is not None]
        return self.coefficient * sum(rows) if rows else None

    def forward(self, images: torch.Tensor, keypoints: torch.Tensor | None = None,
                cameras: torch.Tensor | None = None, views: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, H, W) -> (B, D) final CLS token, or with JPM (B, 1 + parts, D) global + local CLS tokens, or with
        model.parts (CLS token, patch tokens (B, D, gh, gw) on the patch grid); ``views`` is ignored when they come
        from the keypoints."""
        v = self.vit
        if (self.keypoint_token is not None or self.view_from_pose) and keypoints is None:
            raise ValueError("this ViT takes the 108-d keypoint vector (keypoint token or view from pose): pass "
                             "keypoints (B, 108)")
        if self.view_from_pose:
            views = pose_view(keypoints.reshape(-1, NUM_KEYPOINTS, 3)[..., 2] + 0.5)
        x = v._pos_embed(v.patch_embed(images))
        side = self.side_embedding(cameras, views)
        if side is not None:
            x = x + side.to(x.dtype)[:, None]
        if self.keypoint_token is not None:
            token = self.keypoint_token(keypoints.to(x.dtype).reshape(-1, NUM_KEYPOINTS * 3))
            x = torch.cat([x, token[:, None]], dim=1)
        x = v.norm_pre(v.patch_drop(x))
        if self.part_tokens:
            y = v.norm(v.blocks(x))
            gh, gw = v.patch_embed.grid_size
            first = int(v.num_prefix_tokens)  # CLS (and register) tokens come first, the keypoint token last
            patches = y[:, first:first + gh * gw]
            return y[:, 0], patches.transpose(1, 2).reshape(len(y), -1, gh, gw)
        if not self.jpm:
            return v.norm(v.blocks(x))[:, 0]
        x = v.blocks[:-1](x)
        glob = v.norm(v.blocks[-1](x))[:, 0]
        extra = x[:, -1:] if self.keypoint_token is not None else x[:, :0]  # the keypoint token joins every part
        tokens = x[:, :-1] if self.keypoint_token is not None else x
        patches = tokens.shape[1] - 1
        shuffled = shift_shuffle(tokens, self.jpm_shift, self.jpm_groups) if self.jpm_rearrange else tokens[:, 1:]
        size = patches // self.jpm_parts
        parts = [self.jpm_norm(self.jpm_block(torch.cat([tokens[:, :1], shuffled[:, i * size:(i + 1) * size], extra],
                                                        dim=1)))[:, 0] for i in range(self.jpm_parts)]
        return torch.stack([glob, *parts], dim=1)


def shift_shuffle(tokens: torch.Tensor, shift: int, groups: int) -> torch.Tensor:
    """TransReID's shift and patch shuffle: (B, 1 + N, D) CLS + patch tokens -> (B, N', D) patches only.

    Shift: the sequence from token ``shift`` on, then patch tokens 1 .. shift - 1 (the CLS token is dropped, so the
    patches rotate by shift - 1). Shuffle: split into ``groups`` equal runs (when N is not a multiple, the
    second-to-last token is appended once, as the reference does) and interleave them: out[j * groups + g] =
    run g's j-th token. ``shift`` 0 or 1 leaves the order as is before the shuffle."""
    b, _, d = tokens.shape
    x = torch.cat([tokens[:, max(shift, 1):], tokens[:, 1:max(shift, 1)]], dim=1)
    if x.shape[1] % groups:
        x = torch.cat([x, x[:, -2:-1]], dim=1)
    return x.reshape(b, groups, -1, d).transpose(1, 2).reshape(b, -1, d)


def _side_table(rows: int, dim: int) -> nn.Parameter | None:
    """A (rows, dim) SIE table, truncated N(0, 0.02) as TransReID; None for 0 rows."""
    return nn.Parameter(nn.init.trunc_normal_(torch.zeros(rows, dim), std=0.02)) if rows > 0 else None


def patch_grid(size: tuple[int, int], kernel: int, stride: int) -> tuple[int, int]:
    """(rows, cols) of patches of a ``kernel`` convolution with ``stride`` over a (H, W) input, no padding."""
    return (size[0] - kernel) // stride + 1, (size[1] - kernel) // stride + 1


def resample_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int], prefix_tokens: int) -> torch.Tensor:
    """(1, prefix + n, D) position embedding of a square n-patch grid -> (1, prefix + rows x cols, D) (bicubic)."""
    from timm.layers import resample_abs_pos_embed
    side = int(math.isqrt(pos_embed.shape[1] - prefix_tokens))
    return resample_abs_pos_embed(pos_embed, list(grid), [side, side], num_prefix_tokens=prefix_tokens)


def _prefix_tokens(vit: nn.Module) -> int:
    """Tokens before the patches that carry a position embedding (0 for timm's no_embed_class models)."""
    return 0 if vit.no_embed_class else int(vit.num_prefix_tokens)


def set_patch_stride(vit: nn.Module, stride: int) -> None:
    """Run timm's patch convolution with ``stride`` (TransReID's overlapping patches) and resample the position
    embedding to the new grid."""
    pe = vit.patch_embed
    kernel = pe.proj.kernel_size[0]
    pe.proj.stride = (stride, stride)
    grid = patch_grid(tuple(pe.img_size), kernel, stride)
    pe.grid_size, pe.num_patches = grid, grid[0] * grid[1]
    vit.pos_embed = nn.Parameter(resample_pos_embed(vit.pos_embed.detach(), grid, _prefix_tokens(vit)))


def build_vit(cfg: ModelConfig) -> TransReIDViT:
    """The TransReID ViT of ``cfg`` (random weights) for inputs of ``cfg.input_size`` (H, W) pixels."""
    import timm
    from timm.models.vision_transformer import VisionTransformer
    name = cfg.backbone[len("timm/"):]
    if not all(cfg.input_size):
        raise ConfigError(f"model.backbone: {cfg.backbone} needs model.input_size (H, W) (training sets it to "
                          "data.height x data.width)")
    try:
        vit = timm.create_model(name, pretrained=False, num_classes=0, img_size=tuple(cfg.input_size),
                                drop_path_rate=cfg.drop_path)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"model.backbone: {cfg.backbone}: {exc}") from None
    if not isinstance(vit, VisionTransformer) or vit.cls_token is None:
        raise ConfigError(f"model.backbone: {cfg.backbone} is not a timm VisionTransformer with a CLS token")
    if min(cfg.input_size) < vit.patch_embed.proj.kernel_size[0]:
        raise ConfigError(f"model.input_size {tuple(cfg.input_size)} is smaller than one patch of {cfg.backbone}")
    set_patch_stride(vit, cfg.patch_stride)
    return TransReIDViT(vit, cfg)


def imagenet_vit_state(state: dict, backbone: TransReIDViT) -> dict:
    """A timm ViT ImageNet state dict (classifier dropped) in ``TransReIDViT`` names: ``vit.`` prefixed, the
    position embedding resampled to this grid, the SIE tables and keypoint token kept as initialised, JPM's block
    and norm copied from the last block and the final norm (as TransReID deep-copies them after loading)."""
    out = {"vit." + k: v for k, v in state.items()}
    grid = tuple(backbone.vit.patch_embed.grid_size)
    if "vit.pos_embed" in out:
        out["vit.pos_embed"] = resample_pos_embed(out["vit.pos_embed"], grid, _prefix_tokens(backbone.vit))
    last = f"vit.blocks.{len(backbone.vit.blocks) - 1}."
    for k, v in backbone.state_dict().items():
        if k.startswith("vit."):
            continue
        source = (last + k[len("jpm_block."):] if k.startswith("jpm_block.") else
                  "vit.norm." + k[len("jpm_norm."):] if k.startswith("jpm_norm.") else None)
        out[k] = out.get(source, v) if source else v
    return out
