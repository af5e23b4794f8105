"""ReID sample augmentation: one geometric transform for the image, every pose channel and the keypoints.

One sample, channels first: ``image`` (3 [+36] [+13], H, W) float32 and ``keypoints`` (108,) float32, as
``reid.inputs.ReidInput`` defines the network's input (normalisation, pose channels, keypoint vector in the
augmented image); without augmentation a sample equals ``ReidInput.batch``'s row for the same image and pose.

The transform: resize (to the size enlarged by 1/8 when translating), random crop back to (H, W), horizontal
flip that mirrors and swaps left/right keypoints (``FLIP_INDEX``), heatmap channels (same permutation) and
segment channels (``SEGMENT_FLIP``). AutoAugment / RandAugment (torchvision's, photometric ops only), colour
jitter and random erasing touch the RGB channels only.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torchvision.transforms import v2

from pamtri.data.images import IMAGENET_MEAN, IMAGENET_STD
from pamtri.pose.keypoints import FLIP_INDEX, NUM_KEYPOINTS, SEGMENT_FLIP

from .inputs import ReidInput
from .pose_inputs import PoseChannels

_FLIP_KP = np.asarray(FLIP_INDEX, dtype=np.int64)
_FLIP_SEG = np.asarray(SEGMENT_FLIP, dtype=np.int64)
# AutoAugment / RandAugment ops that move pixels; skipped so that RGB stays aligned with the pose channels
GEOMETRIC_OPS = frozenset({"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"})


class _PhotometricOnly:
    """Runs torchvision's AutoAugment / RandAugment draw as it is but applies a geometric op as the identity.

    torchvision (0.29) refuses Mask and KeyPoints inputs in these transforms, so the pose channels and keypoints
    cannot follow a shear / translate / rotate in the same call; skipping those ops keeps them aligned.
    """

    def _apply_image_or_video_transform(self, image, transform_id, *args, **kwargs):
        if transform_id in GEOMETRIC_OPS:
            return image
        return super()._apply_image_or_video_transform(image, transform_id, *args, **kwargs)


class PhotometricAutoAugment(_PhotometricOnly, v2.AutoAugment):
    """``v2.AutoAugment`` (ImageNet policy) without its geometric ops; uint8 (3, H, W) in and out."""


class PhotometricRandAugment(_PhotometricOnly, v2.RandAugment):
    """``v2.RandAugment(num_ops, magnitude)`` without its geometric ops; uint8 (3, H, W) in and out."""


def auto_augment_transform(kind: str, num_ops: int = 2, magnitude: int = 9) -> v2.Transform | None:
    """The photometric AutoAugment / RandAugment of ``kind`` ('none' | 'autoaugment' | 'randaugment'), or None."""
    if kind == "autoaugment":
        return PhotometricAutoAugment(v2.AutoAugmentPolicy.IMAGENET)
    if kind == "randaugment":
        return PhotometricRandAugment(num_ops=num_ops, magnitude=magnitude)
    return None


@dataclass
class AugParams:
    """One draw of the augmentation: crop offset in the enlarged image (pixels), flip, colour, erasing."""
    crop_x: int = 0
    crop_y: int = 0
    flip: bool = False
    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0
    erase: tuple[int, int, int, int] | None = None  # x0, y0, x1, y1 in output pixels
    auto_augment_seed: int | None = None  # torch seed of this image's AutoAugment / RandAugment draw; None = off


class SampleBuilder:
    """Turns (image, pose channels) into a normalised model input with one shared geometric transform."""

    def __init__(self, height: int, width: int, *, heatmaps: bool = False, segments: bool = False,
                 train: bool = False, translate: bool = True, flip: bool = True, random_erasing: float = 0.0,
                 color_jitter: float = 0.0, auto_augment: v2.Transform | None = None, auto_augment_prob: float = 0.0,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        self.height, self.width = int(height), int(width)
        self.heatmaps, self.segments = heatmaps, segments
        self.train = train
        self.translate, self.flip = translate and train, flip and train
        self.random_erasing = random_erasing if train else 0.0
        self.color_jitter = color_jitter if train else 0.0
        # fast-reid applies its AutoAugment to a fraction of the images (RandomApply, p = INPUT.AUTOAUG.PROB)
        self.auto_augment = auto_augment if train else None
        self.auto_augment_prob = auto_augment_prob if self.auto_augment is not None else 0.0
        # the network input's one definition: normalisation, pose-channel statistics, keypoint vector
        self.input = ReidInput(self.height, self.width, heatmaps, segments, mean=tuple(mean), std=tuple(std))
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)
        self.pose_mean, self.pose_std = self.input.pose_mean, self.input.pose_std
        if translate and train:
            self.big = (int(round(self.width * 9 / 8)), int(round(self.height * 9 / 8)))
        else:
            self.big = (self.width, self.height)

    @property
    def channels(self) -> int:
        return self.input.channels

    def draw(self, rng: np.random.Generator) -> AugParams:
        """Random augmentation parameters (identity when not training)."""
        p = AugParams()
        if not self.train:
            return p
        p.crop_x = int(rng.integers(0, self.big[0] - self.width + 1))
        p.crop_y = int(rng.integers(0, self.big[1] - self.height + 1))
        p.flip = bool(self.flip and rng.random() < 0.5)
        if self.color_jitter > 0:
            s = self.color_jitter
            p.brightness, p.contrast, p.saturation = (float(v) for v in rng.uniform(1 - s, 1 + s, size=3))
        if self.random_erasing > 0 and rng.random() < self.random_erasing:
            p.erase = self._erase_box(rng)
        if self.auto_augment_prob > 0 and rng.random() < self.auto_augment_prob:
            p.auto_augment_seed = int(rng.integers(0, 2**31))
        return p

    def _erase_box(self, rng: np.random.Generator) -> tuple[int, int, int, int] | None:
        """A random-erasing box (x0, y0, x1, y1) in output pixels: 2-40 % of the area, aspect 0.3-3.3, up to
        10 tries; None when no try fits."""
        area = self.height * self.width
        for _ in range(10):
            a = rng.uniform(0.02, 0.4) * area
            r = math.exp(rng.uniform(math.log(0.3), math.log(1 / 0.3)))
            eh, ew = int(round(math.sqrt(a * r))), int(round(math.sqrt(a / r)))
            if 0 < eh < self.height and 0 < ew < self.width:
                y0 = int(rng.integers(0, self.height - eh + 1))
                x0 = int(rng.integers(0, self.width - ew + 1))
                return (x0, y0, x0 + ew, y0 + eh)
        return None

    def _affine(self, src_w: int, src_h: int, p: AugParams) -> np.ndarray:
        """2x3 matrix from a (src_w x src_h) array to output pixels (resize to ``big``, then crop)."""
        sx, sy = self.big[0] / src_w, self.big[1] / src_h
        # pixel centres: x_big = (x_src + 0.5) * sx - 0.5; x_out = x_big - crop_x
        return np.array([[sx, 0.0, 0.5 * sx - 0.5 - p.crop_x],
                         [0.0, sy, 0.5 * sy - 0.5 - p.crop_y]], dtype=np.float64)

    def _warp(self, array: np.ndarray, p: AugParams) -> np.ndarray:
        """(h, w, C) -> (H, W, C) through the shared resize + crop (bilinear, edges replicated)."""
        h, w = array.shape[:2]
        out = cv2.warpAffine(array, self._affine(w, h, p), (self.width, self.height), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REPLICATE)
        return out.reshape(self.height, self.width, -1)

    def transform_keypoints(self, kps: np.ndarray, image_size: tuple[int, int], p: AugParams) -> np.ndarray:
        """(36, 3) original pixels -> (36, 3) output pixels after resize, crop and flip (left/right swapped)."""
        m = self._affine(image_size[0], image_size[1], p)
        out = np.array(kps, dtype=np.float32, copy=True)
        out[:, 0] = kps[:, 0] * m[0, 0] + m[0, 2]
        out[:, 1] = kps[:, 1] * m[1, 1] + m[1, 2]
        if p.flip:
            out = out[_FLIP_KP]
            out[:, 0] = (self.width - 1) - out[:, 0]
        return out

    def keypoint_vector(self, kps_out: np.ndarray) -> np.ndarray:
        """(36, 3) output pixels -> (108,) [x / W - 0.5, y / H - 0.5, c - 0.5, ...] clipped to [-0.5, 0.5]."""
        return self.input.keypoint_vector(kps_out)

    def _pose_arrays(self, pose: PoseChannels | None, flip: bool) -> list[np.ndarray]:
        """Pose channels as (C, h, w) float32 arrays, already normalised and (when flipping) channel-permuted.

        Both steps commute with the bilinear warp, so they run at the (small) source resolution.
        """
        if not (self.heatmaps or self.segments):
            return []
        if pose is None:
            raise ValueError("this sample builder makes pose channels but got no pose")
        parts = []
        for wanted, arr, perm, what in ((self.heatmaps, pose.heatmaps, _FLIP_KP, "heatmaps"),
                                        (self.segments, pose.segments, _FLIP_SEG, "segments")):
            if not wanted:
                continue
            if arr is None:
                raise ValueError(f"the pose source gave no {what}")
            arr = np.asarray(arr)
            if flip:
                arr = arr[perm]
            parts.append(np.ascontiguousarray((arr.astype(np.float32) - self.pose_mean) * (1.0 / self.pose_std)))
        return parts

    def _warp_planes(self, planes: np.ndarray, p: AugParams, out: np.ndarray) -> None:
        """Warp (C, h, w) planes one by one straight into ``out`` (C, H, W) (mirrored when ``p.flip``)."""
        m = self._affine(planes.shape[2], planes.shape[1], p)
        tmp = np.empty((self.height, self.width), dtype=np.float32) if p.flip else None
        for i in range(len(planes)):
            dst = tmp if p.flip else out[i]
            cv2.warpAffine(planes[i], m, (self.width, self.height), dst=dst, flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
            if p.flip:
                cv2.flip(tmp, 1, dst=out[i])

    def _auto_augment(self, img: np.ndarray, seed: int) -> np.ndarray:
        """RGB uint8 (H, W, 3) -> the same after the AutoAugment / RandAugment draw of torch seed ``seed``."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            out = self.auto_augment(torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1))
        return out.permute(1, 2, 0).numpy()

    def _image_channels(self, image: np.ndarray, p: AugParams) -> np.ndarray:
        """RGB uint8 (h, w, 3) -> normalised (3, H, W) float32: warp, AutoAugment, flip, colour jitter, erasing."""
        img = self._warp(image, p)
        if p.auto_augment_seed is not None and self.auto_augment is not None:
            img = self._auto_augment(img, p.auto_augment_seed)
        if p.flip:
            img = img[:, ::-1]
        img = img.astype(np.float32) * (1.0 / 255.0)
        if p.brightness != 1.0 or p.contrast != 1.0 or p.saturation != 1.0:
            img = img * p.brightness
            gray = img @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
            img = (img - gray.mean()) * p.contrast + gray.mean()
            gray = (img @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None]
            img = np.clip(gray + (img - gray) * p.saturation, 0.0, 1.0)
        img = (img - self.mean) / self.std
        if p.erase is not None:
            x0, y0, x1, y1 = p.erase
            img[y0:y1, x0:x1] = 0.0  # the mean colour
        return img.transpose(2, 0, 1)

    def __call__(self, image: np.ndarray, pose: PoseChannels | None, params: AugParams | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """RGB uint8 (h, w, 3) + pose channels -> (input (C, H, W) float32, keypoint vector (108,) float32)."""
        p = params or AugParams()
        h, w = image.shape[:2]
        out = np.empty((self.channels, self.height, self.width), dtype=np.float32)
        out[:3] = self._image_channels(image, p)
        c = 3
        for planes in self._pose_arrays(pose, p.flip):
            self._warp_planes(planes, p, out[c:c + len(planes)])
            c += len(planes)
        if pose is not None:
            kv = self.keypoint_vector(self.transform_keypoints(pose.keypoints, (w, h), p))
        else:
            kv = np.zeros(NUM_KEYPOINTS * 3, dtype=np.float32)
        return torch.from_numpy(out), torch.from_numpy(kv)


def make_builder(data_cfg, model_cfg, train: bool) -> SampleBuilder:
    """The sample builder of a config (training augmentation or plain test-time resize)."""
    return SampleBuilder(data_cfg.height, data_cfg.width, heatmaps=model_cfg.heatmaps, segments=model_cfg.segments,
                         train=train, translate=data_cfg.translate, flip=data_cfg.flip,
                         random_erasing=data_cfg.random_erasing, color_jitter=data_cfg.color_jitter,
                         auto_augment=auto_augment_transform(data_cfg.auto_augment, data_cfg.randaugment_ops,
                                                             data_cfg.randaugment_magnitude),
                         auto_augment_prob=data_cfg.auto_augment_prob, mean=data_cfg.mean, std=data_cfg.std)
