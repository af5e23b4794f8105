"""Inference: images -> PoseResult (heatmaps, keypoints in original pixels, segments), batched, flip-tested."""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence

import numpy as np
import torch

from pamtri.common.checkpoint import load_checkpoint
from pamtri.common.config import from_dict, upgrade_renamed
from pamtri.common.errors import CheckpointError
from pamtri.common.runtime import autocast, autocast_dtype, pick_device
from pamtri.pose.result import PoseResult

from .config import PoseConfig
from .heatmaps import decode, flip_back
from .segments import rasterise
from .transforms import apply, compose, crop_matrix, image_box, input_to_heatmap, invert, normalise, warp

log = logging.getLogger(__name__)


def load_pose_model(weights: str | os.PathLike, name: str | None = None) -> tuple[torch.nn.Module, PoseConfig]:
    """(model in eval mode on CPU, its PoseConfig) from a pamtri checkpoint (self-describing) or, given
    ``name``, any file :func:`pose.model.load_weights` reads (e.g. the official PoseEstNet checkpoint)."""
    from .model import PoseHRNet, checkpoint_layout, load_weights, state_dict_of
    state = load_checkpoint(weights)
    cfg_dict = state.get("config") if isinstance(state.get("config"), dict) else None
    if cfg_dict is not None and name is None:
        cfg = from_dict(PoseConfig, upgrade_renamed(PoseConfig, cfg_dict), f"{weights} (stored config)")
    else:
        if name is None:
            raise CheckpointError(f"{weights}: the checkpoint stores no pamtri config; name the architecture "
                                  f"(e.g. --model hrnet_w32 for the official PoseEstNet)")
        cfg = PoseConfig()
        cfg.model.name = name
        if checkpoint_layout(state_dict_of(state, str(weights))) == "posestnet":
            # Trained by the reference code: its cell convention and its one-cell flip shift.
            cfg.model.cell_convention = "reference"
            cfg.eval.flip_shift = 1.0
    model = PoseHRNet(cfg.model.name)
    load_weights(model, weights)
    model.eval()
    return model, cfg


class PosePredictor:
    """Runs a pose model on crops of whole-vehicle images and maps the peaks back to image pixels."""

    def __init__(self, model: torch.nn.Module, input_size: tuple[int, int] = (256, 256), flip_test: bool = True,
                 device: str | torch.device = "auto", precision: str = "auto", decode_method: str = "dark",
                 blur_sigma: float = 2.0, flip_shift: float = 0.0, enlarge: float = 1.25,
                 cell_convention: str = "centred"):
        self.device = pick_device(device) if isinstance(device, str) else device
        self.model = model.to(self.device).eval()
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.stride = int(getattr(model, "stride", 4))
        self.flip_test = flip_test
        self.dtype = autocast_dtype(self.device, precision)
        self.decode_method = decode_method
        self.blur_sigma = blur_sigma
        self.flip_shift = flip_shift
        self.enlarge = enlarge
        self.cell_convention = cell_convention

    @classmethod
    def from_config(cls, model: torch.nn.Module, cfg: PoseConfig, device: str | torch.device = "auto",
                    precision: str | None = None, flip_test: bool | None = None) -> PosePredictor:
        """A predictor set up from a PoseConfig's data and eval sections."""
        e = cfg.eval
        return cls(model, tuple(cfg.data.input_size), e.flip_test if flip_test is None else flip_test, device,
                   precision or cfg.precision, e.decode, e.blur_sigma, e.flip_shift, cfg.data.box_enlarge,
                   cfg.model.cell_convention)

    def crop(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 RGB (H, W, 3) -> (normalised crop (3, h, w) float32, (2, 3) heatmap cells -> image pixels)."""
        height, width = image.shape[:2]
        centre, size = image_box(width, height, self.input_size[0] / self.input_size[1], self.enlarge)
        m = crop_matrix(centre, size, self.input_size)
        inverse = invert(compose(input_to_heatmap(self.stride, self.cell_convention), m))
        return normalise(warp(image, m, self.input_size)), inverse.astype(np.float32)

    @torch.no_grad()
    def heatmaps(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, h, w) normalised crops -> (N, 36, h/4, w/4) float32 heatmaps, flip-averaged when enabled."""
        x = x.to(self.device, non_blocking=True)
        with autocast(self.device, self.dtype):
            hm = self.model(x).float()
            if self.flip_test:
                hm = 0.5 * (hm + flip_back(self.model(x.flip(-1)).float(), self.flip_shift))
        return hm

    def keypoints(self, heatmaps: torch.Tensor | np.ndarray, inverse: np.ndarray) -> np.ndarray:
        """heatmaps (N, 36, h, w), inverse (N, 2, 3) cells -> pixels  ->  (N, 36, 3): x, y in pixels, confidence."""
        xy, conf = decode(heatmaps, self.decode_method, self.blur_sigma)
        xy = xy.cpu().numpy() if isinstance(xy, torch.Tensor) else xy
        conf = conf.cpu().numpy() if isinstance(conf, torch.Tensor) else conf
        pix = apply(np.asarray(inverse, dtype=np.float64), xy)
        return np.concatenate([pix, conf[..., None]], axis=-1).astype(np.float32)

    def predict_arrays(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """uint8 RGB images (any sizes) -> (keypoints (N, 36, 3) pixels + confidence, heatmaps (N, 36, h, w))."""
        crops, inverses = zip(*(self.crop(np.asarray(im)) for im in images))
        hm = self.heatmaps(torch.from_numpy(np.stack(crops)))
        return self.keypoints(hm, np.stack(inverses)), hm.cpu().numpy()

    def predict_batch(self, images: Sequence[np.ndarray] | torch.Tensor, with_heatmaps: bool = True,
                      with_segments: bool = True) -> list[PoseResult]:
        """uint8 RGB images (list of (H, W, 3), or a (N, H, W, 3) uint8 tensor) -> one PoseResult per image."""
        if isinstance(images, torch.Tensor):
            images = list(images.cpu().numpy())
        if len(images) == 0:
            return []
        kps, hms = self.predict_arrays(images)
        out = []
        for im, k, h in zip(images, kps, hms):
            height, width = np.asarray(im).shape[:2]
            out.append(PoseResult(keypoints=k, heatmaps=h if with_heatmaps else None,
                                  segments=rasterise(k, (height, width)) if with_segments else None,
                                  image_size=(width, height)))
        return out


def predict_loader(predictor: PosePredictor, loader: Iterable[dict], progress: str | None = None,
                   keep_heatmaps: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Run over a DataLoader of PoseDataset items -> (keypoints (N, 36, 3) pixels + confidence,
    ground truth (N, 36, 3) from the items, heatmaps (N, 36, h, w) or None)."""
    from tqdm import tqdm
    kps, gts, hms = [], [], []
    for batch in tqdm(loader, desc=progress, disable=progress is None, leave=False):
        hm = predictor.heatmaps(batch["image"])
        kps.append(predictor.keypoints(hm, batch["inverse"].numpy()))
        gts.append(batch["keypoints"].numpy())
        if keep_heatmaps:
            hms.append(hm.cpu().numpy())
    if not kps:
        empty = np.zeros((0, 36, 3), np.float32)
        return empty, empty, None
    return np.concatenate(kps), np.concatenate(gts), (np.concatenate(hms) if keep_heatmaps else None)
