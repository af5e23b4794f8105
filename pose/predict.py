"""Inference: images -> PoseResult (heatmaps, keypoints in original pixels, segments), batched, flip-tested."""
from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from pamtri.common.device import autocast, autocast_dtype, pick_device
from pamtri.common.errors import CheckpointError
from pamtri.pose.result import PoseResult

from .codec import HeatmapCodec
from .config import PoseConfig
from .segments import rasterise
from .transforms import apply, crop_matrix, image_box, invert, normalise, warp

log = logging.getLogger(__name__)


class PosePredictor:
    """Runs a pose model on crops of whole-vehicle images and maps the peaks back to image pixels.

    ``codec`` gives the crop size, how the model's heatmaps decode and how the flip test flips them back.
    """

    def __init__(self, model: torch.nn.Module, codec: HeatmapCodec, flip_test: bool = True,
                 device: str | torch.device = "auto", precision: str = "auto", enlarge: float = 1.25):
        self.device = pick_device(device) if isinstance(device, str) else device
        self.model = model.to(self.device).eval()
        self.codec = codec
        self.flip_test = flip_test
        self.dtype = autocast_dtype(self.device, precision)
        self.enlarge = enlarge

    @classmethod
    def from_config(cls, model: torch.nn.Module, cfg: PoseConfig, codec: HeatmapCodec | None = None,
                    device: str | torch.device = "auto", precision: str | None = None,
                    flip_test: bool | None = None) -> PosePredictor:
        """A predictor set up from a PoseConfig and ``codec`` (the checkpoint's, see :func:`pose.weights.load`;
        None: the config's)."""
        codec = codec or HeatmapCodec.from_config(cfg, getattr(model, "stride", 4))
        return cls(model, codec, cfg.eval.flip_test if flip_test is None else flip_test, device,
                   precision or cfg.precision, cfg.data.box_enlarge)

    def crop_transform(self, width: int, height: int) -> np.ndarray:
        """(2, 3) image pixels -> crop pixels for an image of ``width`` x ``height``: the box enlarged by
        ``enlarge`` and padded to the network's aspect."""
        size = self.codec.input_size
        centre, box = image_box(width, height, size[0] / size[1], self.enlarge)
        return crop_matrix(centre, box, size)

    def crop_to_source_tensor(self, sizes: torch.Tensor, source_wh: tuple[int, int]
                              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Images of original (N, 2) ``sizes`` (width, height) resized (plain, pixel centres to pixel centres) to
        ``source_wh``: per image the axis-aligned affine crop pixels -> resized pixels, as (scale (N, 2), offset
        (N, 2)) with x = scale * u + offset: :meth:`crop_transform`'s box, taken on the original image, carried
        through the resize. Traceable (the one ONNX graph's crop)."""
        pw, ph = self.codec.input_size
        aspect = pw / ph
        sizes = sizes.float()
        bw = torch.maximum(sizes[:, 0] * self.enlarge, sizes[:, 1] * self.enlarge * aspect)  # transforms.image_box
        to_original = torch.stack([bw / pw, bw / aspect / ph], dim=1)  # crop pixel -> original pixel (inverse
        centre = torch.tensor([(pw - 1) / 2.0, (ph - 1) / 2.0])          # of transforms.crop_matrix)
        offset = (sizes - 1) / 2.0 - centre * to_original
        resize = torch.tensor([float(source_wh[0]), float(source_wh[1])]) / sizes
        return to_original * resize, (offset + 0.5) * resize - 0.5

    def crop(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 RGB (H, W, 3) -> (normalised crop (3, h, w) float32, (2, 3) crop pixels -> image pixels)."""
        m = self.crop_transform(image.shape[1], image.shape[0])
        return normalise(warp(image, m, self.codec.input_size)), invert(m).astype(np.float32)

    @torch.no_grad()
    def heatmaps(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, h, w) normalised crops -> (N, 36, H, W) float32 heatmaps (codec.heatmap_size), flip-averaged
        when enabled."""
        x = x.to(self.device, non_blocking=True)
        with autocast(self.device, self.dtype):
            hm = self.model(x).float()
            if self.flip_test:
                hm = 0.5 * (hm + self.codec.flip_back(self.model(x.flip(-1)).float()))
        w, h = self.codec.heatmap_size
        if tuple(hm.shape[-2:]) != (h, w):
            raise CheckpointError(f"the pose model gives {hm.shape[-1]}x{hm.shape[-2]} heatmaps for "
                                  f"{x.shape[-1]}x{x.shape[-2]} crops, its codec expects {w}x{h} (width x height)")
        return hm

    def keypoints(self, heatmaps: torch.Tensor | np.ndarray, inverse: np.ndarray) -> np.ndarray:
        """heatmaps (N, 36, H, W), inverse (N, 2, 3) crop -> image pixels  ->  (N, 36, 3): x, y in image pixels,
        confidence."""
        kps = self.codec.decode(heatmaps)
        kps[..., :2] = apply(np.asarray(inverse, dtype=np.float64), kps[..., :2])
        return kps

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
