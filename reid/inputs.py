"""The ReID network's input, defined once for training, inference, export and every runtime.

A ReID input is ``(C, H, W)`` float32: RGB in [0, 1] normalised by ``mean``/``std`` (ImageNet's by default),
then, when the model stacks them, 36 heatmap and 13 segment channels normalised by the mean of the RGB means
and the mean of the RGB stds (as in PAMTRI), bilinearly resampled from the pose grid to (H, W); beside it the
(108,) keypoint vector ``[x / W - 0.5, y / H - 0.5, confidence - 0.5] * 36`` clipped to [-0.5, 0.5], in the
pixels of the (H, W) input. ``ReidInput`` holds these parameters, read from a checkpoint's stored configs;
training's augmenting ``SampleBuilder`` (reid.transforms), ``Pipeline`` (pipeline.infer), the ONNX export's
metadata and every inference runtime take them from here (fast-reid #177/#488: features that differ after
export because normalisation was applied twice).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from pamtri.common.config import from_dict
from pamtri.data.images import IMAGENET_MEAN, IMAGENET_STD
from pamtri.pose.keypoints import NUM_KEYPOINTS, NUM_SEGMENTS
from pamtri.pose.segments import rasterise_batch, rasterise_tensor
from pamtri.pose.transforms import apply

from .config import DataConfig
from .pose_inputs import image_grid


@dataclass(frozen=True)
class ReidInput:
    """What a ReID network takes: input size (pixels), RGB normalisation, which pose channels it stacks."""
    height: int
    width: int
    heatmaps: bool = False
    segments: bool = False
    keypoints: bool = False        # the keypoint vector: K, or the part masks of model.parts
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    grid: int = 64                 # cells per side of the pose channels' grid over the image
    segment_threshold: float = 0.5

    @classmethod
    def from_configs(cls, data_cfg, model_cfg) -> ReidInput:
        """The input of a model built from ``model_cfg`` and trained on ``data_cfg`` (reid.config)."""
        return cls(int(data_cfg.height), int(data_cfg.width), bool(model_cfg.heatmaps), bool(model_cfg.segments),
                   bool(model_cfg.keypoints or model_cfg.parts != "none"), tuple(float(v) for v in data_cfg.mean),
                   tuple(float(v) for v in data_cfg.std), int(data_cfg.heatmap_size),
                   float(data_cfg.segment_threshold))

    @classmethod
    def from_checkpoint(cls, ckpt: dict, model_cfg, where: str) -> ReidInput:
        """The input of a ReID checkpoint: its stored data config (``where`` names the file in errors)."""

        data = dict((ckpt.get("config") or {}).get("data") or {})
        return cls.from_configs(from_dict(DataConfig, data, f"{where} (stored data config)"), model_cfg)

    @property
    def pose_mean(self) -> float:
        """The pose channels' mean: the mean of the RGB means (PAMTRI's choice)."""
        return float(np.mean(np.asarray(self.mean, np.float32)))

    @property
    def pose_std(self) -> float:
        """The pose channels' std: the mean of the RGB stds."""
        return float(np.mean(np.asarray(self.std, np.float32)))

    @property
    def channels(self) -> int:
        return 3 + (NUM_KEYPOINTS if self.heatmaps else 0) + (NUM_SEGMENTS if self.segments else 0)

    @property
    def needs_pose(self) -> bool:
        return self.heatmaps or self.segments or self.keypoints

    def metadata(self) -> dict:
        """The input contract as an exported graph's metadata (JSON-serialisable)."""
        return {"input_size_hw": [self.height, self.width], "input_channels": self.channels,
                "heatmaps": self.heatmaps, "segments": self.segments, "keypoints": self.keypoints,
                "rgb_mean": list(self.mean), "rgb_std": list(self.std), "pose_channel_mean": self.pose_mean,
                "pose_channel_std": self.pose_std, "pose_grid": self.grid,
                "segment_threshold": self.segment_threshold}

    def keypoint_vector(self, keypoints):
        """(..., 36, 3) keypoints in the input's pixels -> (..., 108) float32 vector in [-0.5, 0.5]; numpy, or a
        tensor for a tensor (traceable)."""
        if isinstance(keypoints, torch.Tensor):
            k = keypoints.float()
            v = torch.stack([k[..., 0] / self.width - 0.5, k[..., 1] / self.height - 0.5, k[..., 2] - 0.5], dim=-1)
            return v.clamp(-0.5, 0.5).flatten(-2)
        k = np.asarray(keypoints, dtype=np.float32)
        v = np.empty(k.shape, dtype=np.float32)
        v[..., 0] = k[..., 0] / self.width - 0.5
        v[..., 1] = k[..., 1] / self.height - 0.5
        v[..., 2] = k[..., 2] - 0.5
        return np.clip(v, -0.5, 0.5).reshape(*k.shape[:-2], -1)

    def covering(self, size_wh: Sequence[int]) -> ReidInput:
        """This input widened, per axis, to at least ``size_wh`` (W, H): the one ONNX graph's input when the pose
        network's input is larger than the ReID input (so that the pose network sees as many pixels as it does
        from the original crop; the graph resizes the RGB to the ReID input's size itself)."""
        return replace(self, height=max(self.height, int(size_wh[1])),
                       width=max(self.width, int(size_wh[0])))

    def to_input_pixels(self, keypoints: np.ndarray, image_sizes: np.ndarray) -> np.ndarray:
        """(N, 36, 3) keypoints in original pixels of images of (N, 2) (width, height) -> in the input's pixels
        after the plain resize to (W, H) (pixel centres map to pixel centres)."""
        k = np.array(keypoints, dtype=np.float32)
        sizes = np.asarray(image_sizes, dtype=np.float32)
        k[..., 0] = (k[..., 0] + 0.5) * (self.width / sizes[:, None, 0]) - 0.5
        k[..., 1] = (k[..., 1] + 0.5) * (self.height / sizes[:, None, 1]) - 0.5
        return k

    def from_input_pixels(self, keypoints: np.ndarray, image_sizes: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_input_pixels`: (N, 36, 3) keypoints in the input's pixels -> in the original pixels of
        images of (N, 2) (width, height)."""
        k = np.array(keypoints, dtype=np.float32)
        sizes = np.asarray(image_sizes, dtype=np.float32)
        k[..., 0] = (k[..., 0] + 0.5) * (sizes[:, None, 0] / self.width) - 0.5
        k[..., 1] = (k[..., 1] + 0.5) * (sizes[:, None, 1] / self.height) - 0.5
        return k

    def resize(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """uint8 RGB images of any sizes -> (N, H, W, 3) uint8, resized with OpenCV bilinear to (W, H), no padding:
        the one resize of the ReID input (and the one-graph export's input contract)."""
        h, w = self.height, self.width
        return np.stack([cv2.resize(im, (w, h), interpolation=cv2.INTER_LINEAR) for im in images])

    def graph_feed(self, images: Sequence[np.ndarray], names: Sequence[str] = ("images", "sizes")
                   ) -> dict[str, np.ndarray]:
        """The one ONNX graph's feed for images of any sizes: 'images' (:meth:`resize`) and, when the graph takes it
        (``names``), 'sizes': (N, 2) float32, each image's width and height before the resize."""
        feed = {"images": self.resize(images)}
        if "sizes" in names:
            feed["sizes"] = np.array([[im.shape[1], im.shape[0]] for im in images], dtype=np.float32)
        return feed

    def segments_tensor(self, keypoints: torch.Tensor) -> torch.Tensor:
        """(N, 36, 3) keypoints in the input's pixels -> (N, 13, g, g) float segments on the pose grid over the
        (H, W) input (traceable; ``pose.segments.rasterise_tensor``)."""
        cells = apply(image_grid((self.width, self.height), self.grid).input_to_cells, keypoints[..., :2].float())
        return rasterise_tensor(torch.cat([cells, keypoints[..., 2:].float()], dim=-1), (self.grid, self.grid),
                                self.segment_threshold)

    def normalise_rgb(self, rgb: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) RGB in [0, 1] -> normalised by ``mean`` / ``std``."""
        mean = torch.tensor(self.mean, dtype=torch.float32, device=rgb.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=rgb.device).view(1, 3, 1, 1)
        return (rgb - mean) / std

    def pose_planes(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        """Pose channels on the grid (heatmaps (N, 36, g, g) then segments (N, 13, g, g), those the model stacks)
        -> (N, 36 + 13, H, W) normalised and bilinearly resampled to the input size."""
        # normalised before the upsampling, on 16x fewer values (bilinear weights sum to 1: same result)
        stacked = (torch.cat(list(maps), 1).float() - self.pose_mean) / self.pose_std
        return F.interpolate(stacked, size=(self.height, self.width), mode="bilinear", align_corners=False)

    def batch(self, images: Sequence[np.ndarray], heatmaps: torch.Tensor | None = None,
              keypoints: np.ndarray | None = None, device: torch.device | str = "cpu",
              channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """uint8 RGB images (any sizes; resized with OpenCV bilinear to (W, H), no padding), their (N, 36, g, g)
        heatmaps on the image-frame grid and (N, 36, 3) keypoints in original pixels -> the (N, C, H, W)
        network input on ``device`` (written in place into one tensor of the model's layout) and the (N, 108)
        keypoint vector (None when the model takes none)."""


        h, w = self.height, self.width
        device = torch.device(device)
        resized = self.resize(images)
        rgb = torch.from_numpy(resized).to(device).permute(0, 3, 1, 2).float().div_(255.0)
        maps, kv = [], None
        if self.needs_pose:
            if keypoints is None or (self.heatmaps and heatmaps is None):
                raise ValueError("this ReID input stacks pose channels but got no pose")
            sizes = np.array([[im.shape[1], im.shape[0]] for im in images], dtype=np.float32)
            if self.heatmaps:
                maps.append(heatmaps.to(device))
            if self.segments:
                cells = np.stack([image_grid((int(iw), int(ih)), self.grid).to_cells(k)
                                  for k, (iw, ih) in zip(keypoints, sizes)])
                seg = rasterise_batch(cells, (self.grid, self.grid), self.segment_threshold)
                maps.append(torch.from_numpy(seg).to(device).float())
            if self.keypoints:
                kv = torch.from_numpy(self.keypoint_vector(self.to_input_pixels(keypoints, sizes))).to(device)
        layout = torch.channels_last if channels_last else torch.contiguous_format
        x = torch.empty((len(images), 3 + sum(m.shape[1] for m in maps), h, w), device=device, memory_format=layout)
        x[:, :3] = self.normalise_rgb(rgb)
        if maps:
            x[:, 3:] = self.pose_planes(maps)
        return x, kv
