"""One heatmap codec: keypoints in a frame of input pixels <-> Gaussian heatmaps on a grid of cells.

The pose stage's codec maps the network input (a crop) onto the network's output grid; the ReID stage uses
the same class for the grid spanning a whole image (``reid.pose_inputs``). A pose checkpoint stores its
codec (``to_dict``), so the heatmaps of a model are always read the way it was trained.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from pamtri.common.config import from_dict, to_dict
from pamtri.common.errors import ConfigError

from .heatmaps import DECODE_METHODS, decode, encode, flip_back
from .transforms import CELL_CONVENTIONS, apply, input_to_heatmap, invert


@dataclass(frozen=True)
class HeatmapCodec:
    """Input pixels <-> heatmap cells, Gaussian targets, sub-cell decoding and the flip test's flip-back.

    Every size, here and wherever a codec is used, is (width, height): ``input_size`` in pixels,
    ``heatmap_size`` in cells. Keypoints are (N, K, 3): x, y in input pixels (pixel centres at integers,
    x right, y down) and a visibility or confidence. ``sigma`` (cells): the Gaussian of the targets.
    ``cell_convention``: how cells sit on pixels (``pose.transforms.input_to_heatmap``); ``reference`` only for
    weights trained by the reference code, with ``flip_shift`` 1. ``decode_method`` (``dark`` / ``reference``)
    and ``blur_sigma`` (DARK smoothing in cells, 0 = none): ``pose.heatmaps.decode``. ``flip_shift`` (cells):
    ``pose.heatmaps.flip_back``.
    """
    input_size: tuple[int, int] = (256, 256)
    heatmap_size: tuple[int, int] = (64, 64)
    sigma: float = 2.0
    cell_convention: Literal["centred", "reference"] = "centred"
    decode_method: Literal["dark", "reference"] = "dark"
    blur_sigma: float = 2.0
    flip_shift: float = 0.0

    def __post_init__(self) -> None:
        for key in ("input_size", "heatmap_size"):
            size = getattr(self, key)
            if len(size) != 2 or min(size) <= 0:
                raise ConfigError(f"codec.{key}: (width, height) must be positive, got {list(size)}")
            object.__setattr__(self, key, (int(size[0]), int(size[1])))
        if self.sigma <= 0 or self.blur_sigma < 0:
            raise ConfigError(f"codec.sigma must be > 0 and codec.blur_sigma >= 0, got {self.sigma}, "
                              f"{self.blur_sigma}")
        if self.cell_convention not in CELL_CONVENTIONS:
            raise ConfigError(f"codec.cell_convention: one of {CELL_CONVENTIONS}, got {self.cell_convention!r}")
        if self.decode_method not in DECODE_METHODS:
            raise ConfigError(f"codec.decode_method: one of {DECODE_METHODS}, got {self.decode_method!r}")

    @classmethod
    def from_config(cls, cfg, stride: int = 4) -> HeatmapCodec:
        """The codec of a PoseConfig's ``codec`` section, its heatmap grid the input size over HRNet's ``stride``."""
        c = cfg.codec
        w, h = c.input_size
        return cls(input_size=(w, h), heatmap_size=(w // stride, h // stride), sigma=c.sigma,
                   cell_convention=c.cell_convention, decode_method=c.decode_method, blur_sigma=c.blur_sigma,
                   flip_shift=c.flip_shift)

    def section(self) -> dict:
        """The parameters of a PoseConfig's ``codec`` section that give this codec (the grid is derived)."""
        return {k: v for k, v in self.to_dict().items() if k != "heatmap_size"}

    @classmethod
    def from_dict(cls, data: dict, source: str = "<codec>") -> HeatmapCodec:
        """Inverse of :meth:`to_dict`; a ConfigError names ``source`` and the key."""
        try:
            return from_dict(cls, data, source)
        except ConfigError as exc:
            if str(exc).startswith(source):
                raise
            raise ConfigError(f"{source}: {exc}") from None

    def to_dict(self) -> dict:
        """Plain data (lists for sizes), as stored in checkpoints."""
        return to_dict(self)

    @property
    def input_to_cells(self) -> np.ndarray:
        """(2, 3) float64 affine: input pixels -> heatmap cells."""
        stride = (self.input_size[0] / self.heatmap_size[0], self.input_size[1] / self.heatmap_size[1])
        return input_to_heatmap(stride, self.cell_convention)

    @property
    def cells_to_input(self) -> np.ndarray:
        """(2, 3) float64 affine: heatmap cells -> input pixels."""
        return invert(self.input_to_cells)

    def to_cells(self, keypoints: np.ndarray) -> np.ndarray:
        """(..., K, 3) input pixels + visibility -> (..., K, 3) float32 cells, the third column unchanged."""
        kps = np.asarray(keypoints)
        out = np.array(kps, dtype=np.float32)
        out[..., :2] = apply(self.input_to_cells, kps[..., :2])
        return out

    def encode(self, keypoints: np.ndarray, visible: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """keypoints (N, K, 3) input pixels -> (targets (N, K, H, W) float32, weights (N, K) float32).

        ``visible`` (N, K) bool; default: the third column > 0.5. Invisible keypoints and those off the grid
        get an all-zero target and weight 0.
        """
        kps = np.asarray(keypoints)
        vis = kps[..., 2] > 0.5 if visible is None else visible
        w, h = self.heatmap_size
        return encode(self.to_cells(kps)[..., :2], vis, (h, w), self.sigma)

    def decode(self, heatmaps) -> np.ndarray:
        """heatmaps (N, K, H, W) numpy or torch (any device) -> keypoints (N, K, 3) float32: x, y in input
        pixels and the confidence (the heatmap's maximum)."""
        xy, conf = decode(heatmaps, self.decode_method, self.blur_sigma)
        xy = xy.cpu().numpy() if not isinstance(xy, np.ndarray) else xy
        conf = conf.cpu().numpy() if not isinstance(conf, np.ndarray) else conf
        return np.concatenate([apply(self.cells_to_input, xy), conf[..., None]], axis=-1).astype(np.float32)

    def decode_tensor(self, heatmaps: torch.Tensor) -> torch.Tensor:
        """:meth:`decode` in torch, on the heatmaps' device: (N, K, H, W) -> (N, K, 3) float32 tensor; traceable
        (the one-graph ONNX export, ``pipeline.export.PipelineGraph``, runs it)."""
        xy, conf = decode(heatmaps, self.decode_method, self.blur_sigma)
        return torch.cat([apply(self.cells_to_input, xy), conf[..., None]], dim=-1)

    def flip_back(self, heatmaps):
        """Heatmaps (N, 36, H, W) predicted on a horizontally flipped input -> unflipped (channels swapped,
        mirrored, moved ``flip_shift`` cells right); numpy or torch like the input."""
        return flip_back(heatmaps, self.flip_shift)
