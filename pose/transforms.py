"""Affine crops between image pixels, network-input pixels and heatmap cells, plus training augmentation.

Conventions: pixel centres sit at integer coordinates (pixel ``u`` covers ``[u - 0.5, u + 0.5]``), x
right, y down. A heatmap cell covers ``stride x stride`` input pixels and its centre is the centre of
those pixels: ``x_cell = (x_input + 0.5) / stride - 0.5``. With this convention a horizontal flip of the
input is an exact mirror of the heatmap grid (no shift; see ``pose.heatmaps.flip_back``).
Affine matrices are (2, 3) float64 arrays acting on column vectors ``(x, y, 1)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from pamtri.data.images import IMAGENET_MEAN as _MEAN
from pamtri.data.images import IMAGENET_STD as _STD

from .keypoints import FLIP_INDEX

IMAGENET_MEAN = np.array(_MEAN, dtype=np.float32)
IMAGENET_STD = np.array(_STD, dtype=np.float32)


def image_box(width: int, height: int, aspect: float, enlarge: float = 1.25) -> tuple[np.ndarray, np.ndarray]:
    """The crop box of a whole-vehicle image: (centre (2,) pixels, size (2,) w, h pixels), enlarged and
    padded to ``aspect`` = input width / input height."""
    centre = np.array([(width - 1) / 2.0, (height - 1) / 2.0])
    bw, bh = width * enlarge, height * enlarge
    if bw > aspect * bh:
        bh = bw / aspect
    else:
        bw = bh * aspect
    return centre, np.array([bw, bh])


def crop_matrix(centre, size, output_size: tuple[int, int], rotation: float = 0.0) -> np.ndarray:
    """(2, 3) image -> output pixels: the box (centre, size w, h) rotated by ``rotation`` degrees
    (counter-clockwise as seen on screen) fills ``output_size`` = (width, height) edge to edge."""
    cx, cy = float(centre[0]), float(centre[1])
    ow, oh = output_size
    sx, sy = ow / float(size[0]), oh / float(size[1])
    t = math.radians(rotation)
    # y points down, so a counter-clockwise turn on screen is a clockwise turn in (x, y).
    c, s = math.cos(t), math.sin(t)
    a = np.array([[c * sx, s * sx], [-s * sy, c * sy]])
    b = np.array([(ow - 1) / 2.0, (oh - 1) / 2.0]) - a @ np.array([cx, cy])
    return np.concatenate([a, b[:, None]], axis=1)


def flip_matrix(width: int) -> np.ndarray:
    """(2, 3) horizontal mirror of an image ``width`` pixels wide: x -> width - 1 - x."""
    return np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0]])


CELL_CONVENTIONS = ("centred", "reference")


def input_to_heatmap(stride: float | tuple[float, float], convention: str = "centred") -> np.ndarray:
    """(2, 3) input pixels -> heatmap cells for a grid of ``stride`` input pixels per cell (one number, or
    (x, y) per axis).

    ``centred`` (pamtri): x_cell = (x_input + 0.5) / stride - 0.5. ``reference`` (HRNet / PAMTRI code):
    x_cell = x_input / stride; only for running weights trained that way (with flip_shift 1).
    """
    if convention not in CELL_CONVENTIONS:
        raise ValueError(f"cell convention must be one of {CELL_CONVENTIONS}, got {convention!r}")
    sx, sy = (stride, stride) if np.isscalar(stride) else stride
    if convention == "centred":
        return np.array([[1.0 / sx, 0.0, 0.5 / sx - 0.5], [0.0, 1.0 / sy, 0.5 / sy - 0.5]])
    return np.array([[1.0 / sx, 0.0, 0.0], [0.0, 1.0 / sy, 0.0]])


def compose(*mats: np.ndarray) -> np.ndarray:
    """Affine composition; ``compose(A, B)`` applies B first, then A. Accepts (..., 2, 3) batches."""
    out = None
    for m in reversed(mats):
        m = np.asarray(m, dtype=np.float64)
        if out is None:
            out = m
            continue
        a = m[..., :, :2] @ out[..., :, :2]
        b = m[..., :, :2] @ out[..., :, 2:] + m[..., :, 2:]
        out = np.concatenate([a, b], axis=-1)
    return out


def invert(m: np.ndarray) -> np.ndarray:
    """Inverse of (..., 2, 3) affine matrices."""
    m = np.asarray(m, dtype=np.float64)
    a_inv = np.linalg.inv(m[..., :, :2])
    return np.concatenate([a_inv, -(a_inv @ m[..., :, 2:])], axis=-1)


def apply(m: np.ndarray, xy):
    """Map points (..., K, 2) through (..., 2, 3) matrices (batch dims broadcast); returns float64 (..., K, 2), or,
    for a torch ``xy``, a tensor of its dtype and device."""
    if isinstance(xy, torch.Tensor):
        mt = torch.as_tensor(np.asarray(m), dtype=xy.dtype, device=xy.device)
        return xy @ mt[..., :, :2].transpose(-1, -2) + mt[..., None, :, 2]
    m = np.asarray(m, dtype=np.float64)
    xy = np.asarray(xy, dtype=np.float64)
    return xy @ np.swapaxes(m[..., :, :2], -1, -2) + m[..., None, :, 2]


def sampling_matrices(m: np.ndarray, in_size: tuple[int, int], out_size: tuple[int, int],
                      subpixel_bits: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear resampling through an axis-aligned (2, 3) output -> input pixel affine ``m`` as two matrices:
    (rows (Ho, Hi), columns (Wo, Wi)) float32, so that ``rows @ image @ columns.T`` maps an (.., Hi, Wi) image to
    (.., Ho, Wo), zero outside (cv2.warpAffine's BORDER_CONSTANT 0, grid_sample's zeros padding with
    align_corners=True); sizes are (width, height). ``subpixel_bits``: source positions rounded to 1 / 2^bits of a
    pixel as cv2.warpAffine's fixed point does (5 bits); its integer weights are then these products exactly. One
    MatMul pair in a graph, which every runtime runs fast. One image of :func:`sample_positions` /
    :func:`bilinear_weights`, the per-image traceable form the one ONNX graph builds."""
    m = np.asarray(m, dtype=np.float64)
    if abs(m[0, 1]) > 1e-12 or abs(m[1, 0]) > 1e-12:
        raise ValueError("sampling_matrices takes an axis-aligned affine (no rotation or shear)")

    def axis(scale, offset, n_in, n_out):  # the tensor form's one image
        src = sample_positions(torch.tensor([scale], dtype=torch.float32),
                               torch.tensor([offset], dtype=torch.float32), n_out, subpixel_bits)
        return bilinear_weights(src, n_in)[0].numpy()
    return (axis(m[1, 1], m[1, 2], int(in_size[1]), int(out_size[1])),
            axis(m[0, 0], m[0, 2], int(in_size[0]), int(out_size[0])))


def sample_positions(scale: torch.Tensor, offset: torch.Tensor, n_out: int, subpixel_bits: int | None = None
                     ) -> torch.Tensor:
    """(N,) per-image axis affines output -> input pixel -> (N, n_out) source positions of the output pixels,
    rounded to 1 / 2^bits of a pixel as cv2.warpAffine's fixed point does with ``subpixel_bits`` (both terms in
    1/1024 pixel, halves rounded up): traceable, per image."""
    i = torch.arange(n_out, dtype=torch.float32)
    if subpixel_bits is None:
        return scale[:, None] * i + offset[:, None]
    step = 1024 >> subpixel_bits
    fixed = torch.floor(scale[:, None] * i * 1024 + 0.5) + torch.floor(offset[:, None] * 1024 + 0.5)
    return torch.floor((fixed + step // 2) / step) / (1 << subpixel_bits)


def bilinear_weights(src: torch.Tensor, n_in: int) -> torch.Tensor:
    """(..., n_out) source positions -> (..., n_out, n_in) bilinear weights (the hat 1 - |src - j|), zero outside
    the ``n_in`` pixels (BORDER_CONSTANT 0, grid_sample's zeros padding with align_corners=True); traceable."""
    return torch.relu(1.0 - torch.abs(src[..., None] - torch.arange(n_in, dtype=src.dtype)))


def warp(image: np.ndarray, m: np.ndarray, output_size: tuple[int, int]) -> np.ndarray:
    """Resample ``image`` (H, W, C) through image -> output matrix ``m`` into (height, width, C), bilinear,
    black outside."""
    return cv2.warpAffine(image, np.asarray(m, dtype=np.float64), (int(output_size[0]), int(output_size[1])),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def normalise(images: np.ndarray) -> np.ndarray:
    """uint8 RGB (..., H, W, 3) -> float32 (..., 3, H, W) with the ImageNet mean and std."""
    x = (np.asarray(images, dtype=np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(np.moveaxis(x, -1, -3))


def colour_jitter(image: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Random brightness, contrast and saturation factors in [1 - strength, 1 + strength] on uint8 RGB (H, W, 3)."""
    if strength <= 0:
        return image
    b, c, s = rng.uniform(1 - strength, 1 + strength, size=3)
    x = image.astype(np.float32) * b
    grey = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    x = grey[..., None] + (x - grey[..., None]) * s
    x = grey.mean() + (x - grey.mean()) * c
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


@dataclass
class Augment:
    """Training augmentation ranges (paper defaults: scale +-25 %, rotation +-30 degrees, flip, jitter)."""
    scale: float = 0.25
    rotation: float = 30.0
    rotation_prob: float = 0.6
    flip_prob: float = 0.5
    colour: float = 0.2

    def sample(self, rng: np.random.Generator) -> tuple[float, float, bool]:
        """(box scale factor, rotation in degrees, flip?) drawn from ``rng``."""
        s = 1.0 + rng.uniform(-self.scale, self.scale)
        r = rng.uniform(-self.rotation, self.rotation) if rng.random() < self.rotation_prob else 0.0
        f = bool(rng.random() < self.flip_prob)
        return s, r, f


def sample_crop(image: np.ndarray, keypoints: np.ndarray, input_size: tuple[int, int], enlarge: float = 1.25,
                scale: float = 1.0, rotation: float = 0.0, flip: bool = False
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crop one image: image (H, W, 3), keypoints (36, >=2) pixels, input_size (w, h) ->
    (crop (h, w, 3), keypoints (36, same) in input pixels (flip pairs swapped when flipped),
    matrix (2, 3) image -> input)."""
    height, width = image.shape[:2]
    centre, size = image_box(width, height, input_size[0] / input_size[1], enlarge)
    m = crop_matrix(centre, size * scale, input_size, rotation)
    kps = np.array(keypoints, dtype=np.float64, copy=True)
    if flip:
        m = compose(m, flip_matrix(width))  # mirror first, then crop
        kps = kps[list(FLIP_INDEX)]  # new keypoint k is the old keypoint FLIP_INDEX[k], at its old position
    kps[:, :2] = apply(m, kps[:, :2])
    return warp(image, m, input_size), kps, m
