"""ReID samples: image + pose channels (heatmaps, segments) + keypoint vector + labels, with augmentation.

One sample, channels first: ``image`` (3 [+36] [+13], H, W) float32, normalised as SPEC section 3 (RGB by the
ImageNet mean/std, pose channels by the mean of those means and stds), ``keypoints`` (108,) float32 in
[-0.5, 0.5] (x / W - 0.5, y / H - 0.5, confidence - 0.5, in the augmented image), and the labels.

Pose channels come from a pluggable source (``PoseSource``): ``KeypointPose`` renders Gaussian heatmaps
(``pose.heatmaps.encode``) and segments (``pose.segments.rasterise``) from the record's label keypoints at
64 x 64; ``CachePose`` reads the pose stage's predictions from caches (``pose.cache``, built by ``pamtri
cache build``); ``ArrayPose`` serves any precomputed arrays.

Augmentation is one geometric transform applied to the image, every pose channel and the keypoints:
resize (to the size enlarged by 1/8 when translating), random crop back to (H, W), horizontal flip that
mirrors and swaps left/right keypoints (``FLIP_INDEX``), heatmap channels (same permutation) and segment
channels (``SEGMENT_FLIP``). Colour jitter and random erasing touch the RGB channels only.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from pamtri.common.errors import ConfigError, DataError
from pamtri.data.attributes import orientation_bin
from pamtri.data.images import read_image
from pamtri.data.records import REAL, SYNTHETIC, UNLABELLED, Record
from pamtri.pose.cache import Cache, dequantise
from pamtri.pose.heatmaps import encode
from pamtri.pose.keypoints import FLIP_INDEX, NUM_KEYPOINTS, NUM_SEGMENTS, SEGMENT_FLIP
from pamtri.pose.segments import rasterise

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_FLIP_KP = np.asarray(FLIP_INDEX, dtype=np.int64)
_FLIP_SEG = np.asarray(SEGMENT_FLIP, dtype=np.int64)


@dataclass
class PoseChannels:
    """The pose stage's output for one image, in that image's frame.

    keypoints: (36, 3) float32, x, y in original-image pixels, visibility/confidence;
    heatmaps: (36, h, w) float in [0, 1] covering the whole image, or None;
    segments: (13, h', w') {0, 1} covering the whole image, or None.
    """
    keypoints: np.ndarray
    heatmaps: np.ndarray | None = None
    segments: np.ndarray | None = None


class PoseSource(Protocol):
    """Where pose channels come from: ``source(index, record, (width, height)) -> PoseChannels``."""

    def __call__(self, index: int, record: Record, image_size: tuple[int, int]) -> PoseChannels: ...


def _record_keypoints(record: Record) -> np.ndarray:
    if record.keypoints is None:
        raise DataError(record.path, "the model needs keypoints (K, H or S) but this image has none in its "
                                     "label files; use a split with pose labels or a pose cache")
    return np.asarray(record.keypoints, dtype=np.float32)


def _cells(kps: np.ndarray, image_size: tuple[int, int], size: int) -> np.ndarray:
    """(36, 3) image pixels -> (36, 3) cells of a size x size grid spanning the image (pixel centres stay centres)."""
    w, h = image_size
    cells = np.array(kps, dtype=np.float32, copy=True)
    cells[:, 0] = (kps[:, 0] + 0.5) * (size / w) - 0.5
    cells[:, 1] = (kps[:, 1] + 0.5) * (size / h) - 0.5
    return cells


class KeypointPose:
    """Pose channels rendered from label keypoints: Gaussian heatmaps and/or segments at ``size`` x ``size``."""

    def __init__(self, heatmaps: bool = True, segments: bool = False, size: int = 64, sigma: float = 2.0,
                 threshold: float = 0.5):
        self.heatmaps, self.segments = heatmaps, segments
        self.size, self.sigma, self.threshold = int(size), float(sigma), float(threshold)

    def __call__(self, index: int, record: Record, image_size: tuple[int, int]) -> PoseChannels:
        kps = _record_keypoints(record)
        cells = _cells(kps, image_size, self.size)
        heat = seg = None
        if self.heatmaps:
            heat = encode(cells[None, :, :2], cells[None, :, 2] >= self.threshold, (self.size, self.size),
                          self.sigma)[0][0]
        if self.segments:
            seg = rasterise(cells, (self.size, self.size), self.threshold)
        return PoseChannels(kps, heat, seg)


class CachePose:
    """Pose channels of the pose stage's predictions, read from pose caches: one memory-map slice per sample.

    ``folders`` are cache folders (``pamtri cache build``); ``sources[i]`` is the folder of record i (all 0
    when omitted); records are found in their cache by image name. Heatmaps come from the cache (image-frame
    grid); segments are rasterised from the cached keypoints on a ``size`` x ``size`` grid, as for labels.
    Every folder must come from the same pose weights. Caches are opened lazily in each loader worker.
    """

    def __init__(self, records: Sequence[Record], folders: Sequence[str], sources: Sequence[int] | None = None,
                 heatmaps: bool = True, segments: bool = False, size: int = 64, threshold: float = 0.5):
        self.folders = [str(f) for f in folders]
        self.heatmaps, self.segments = heatmaps, segments
        self.size, self.threshold = int(size), float(threshold)
        self._caches: list[Cache] | None = None
        caches = self._open()
        weights = {c.manifest["spec"]["weights_sha256"] for c in caches}
        if len(weights) > 1:
            raise ConfigError(f"pose caches {', '.join(self.folders)} were built with different pose weights; "
                              "rebuild them with one pose checkpoint")
        self.sources = np.zeros(len(records), np.int64) if sources is None else np.asarray(sources, np.int64)
        self.rows = np.empty(len(records), np.int64)
        for i, (rec, src) in enumerate(zip(records, self.sources)):
            cache = caches[src]
            if rec.name not in cache:
                raise DataError(rec.path, f"not in the pose cache {cache.folder} ({len(cache)} images); build the "
                                          "cache for this split: pamtri cache build --split ...")
            self.rows[i] = cache.position(rec.name)

    @property
    def weights_sha256(self) -> str:
        """Checksum of the pose weights the caches were built with."""
        return self._open()[0].manifest["spec"]["weights_sha256"]

    def _open(self) -> list[Cache]:
        if self._caches is None:
            self._caches = [Cache(f) for f in self.folders]
        return self._caches

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_caches"] = None  # memory maps are reopened in the worker, never pickled as copies
        return state

    def __call__(self, index: int, record: Record, image_size: tuple[int, int]) -> PoseChannels:
        hm, kps, _ = self._open()[self.sources[index]].raw(int(self.rows[index]))
        kps = np.array(kps, dtype=np.float32)
        heat = dequantise(np.asarray(hm)) if self.heatmaps else None
        seg = rasterise(_cells(kps, image_size, self.size), (self.size, self.size), self.threshold) \
            if self.segments else None
        return PoseChannels(kps, heat, seg)


class ArrayPose:
    """Precomputed pose channels indexed like the data set: keypoints (N, 36, 3) and optional heatmaps
    (N, 36, h, w) / segments (N, 13, h, w) arrays (``np.load(..., mmap_mode='r')`` works); uint8 arrays are
    read as value / 255 for heatmaps and as {0, 1} (any non-zero) for segments."""

    def __init__(self, keypoints: np.ndarray, heatmaps: np.ndarray | None = None, segments: np.ndarray | None = None):
        self.keypoints, self.heatmaps, self.segments = keypoints, heatmaps, segments

    def __call__(self, index: int, record: Record, image_size: tuple[int, int]) -> PoseChannels:
        heat = seg = None
        if self.heatmaps is not None:
            heat = np.asarray(self.heatmaps[index])
            heat = heat.astype(np.float32) / 255.0 if heat.dtype == np.uint8 else heat.astype(np.float32)
        if self.segments is not None:
            seg = (np.asarray(self.segments[index]) > 0).astype(np.float32)
        return PoseChannels(np.asarray(self.keypoints[index], dtype=np.float32), heat, seg)


def cache_weights_sha256(pose: PoseSource | None) -> str | None:
    """Checksum of the pose weights behind a pose source that reads caches; None for any other source."""
    return pose.weights_sha256 if isinstance(pose, CachePose) else None


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


class SampleBuilder:
    """Turns (image, pose channels) into a normalised model input with one shared geometric transform."""

    def __init__(self, height: int, width: int, *, heatmaps: bool = False, segments: bool = False,
                 train: bool = False, translate: bool = True, flip: bool = True, random_erasing: float = 0.0,
                 color_jitter: float = 0.0, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        self.height, self.width = int(height), int(width)
        self.heatmaps, self.segments = heatmaps, segments
        self.train = train
        self.translate, self.flip = translate and train, flip and train
        self.random_erasing = random_erasing if train else 0.0
        self.color_jitter = color_jitter if train else 0.0
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)
        # SPEC section 3: pose channels use the mean of the RGB means and the mean of the RGB stds
        self.pose_mean = float(np.mean(self.mean))
        self.pose_std = float(np.mean(self.std))
        if translate and train:
            self.big = (int(round(self.width * 9 / 8)), int(round(self.height * 9 / 8)))
        else:
            self.big = (self.width, self.height)

    @property
    def channels(self) -> int:
        return 3 + (NUM_KEYPOINTS if self.heatmaps else 0) + (NUM_SEGMENTS if self.segments else 0)

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
            area = self.height * self.width
            for _ in range(10):
                a = rng.uniform(0.02, 0.4) * area
                r = math.exp(rng.uniform(math.log(0.3), math.log(1 / 0.3)))
                eh, ew = int(round(math.sqrt(a * r))), int(round(math.sqrt(a / r)))
                if 0 < eh < self.height and 0 < ew < self.width:
                    y0 = int(rng.integers(0, self.height - eh + 1))
                    x0 = int(rng.integers(0, self.width - ew + 1))
                    p.erase = (x0, y0, x0 + ew, y0 + eh)
                    break
        return p

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
        v = np.empty((NUM_KEYPOINTS, 3), dtype=np.float32)
        v[:, 0] = kps_out[:, 0] / self.width - 0.5
        v[:, 1] = kps_out[:, 1] / self.height - 0.5
        v[:, 2] = kps_out[:, 2] - 0.5
        return np.clip(v, -0.5, 0.5).reshape(-1)

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

    def __call__(self, image: np.ndarray, pose: PoseChannels | None, params: AugParams | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """RGB uint8 (h, w, 3) + pose channels -> (input (C, H, W) float32, keypoint vector (108,) float32)."""
        p = params or AugParams()
        h, w = image.shape[:2]
        out = np.empty((self.channels, self.height, self.width), dtype=np.float32)
        img = self._warp(image, p)
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
        out[:3] = img.transpose(2, 0, 1)
        c = 3
        for planes in self._pose_arrays(pose, p.flip):
            self._warp_planes(planes, p, out[c:c + len(planes)])
            c += len(planes)
        if pose is not None:
            kv = self.keypoint_vector(self.transform_keypoints(pose.keypoints, (w, h), p))
        else:
            kv = np.zeros(NUM_KEYPOINTS * 3, dtype=np.float32)
        return torch.from_numpy(out), torch.from_numpy(kv)


class ReIDDataset(Dataset):
    """Records -> samples dicts: image, keypoints, pid, camid, color, type, orientation (bin), domain, index.

    Indices may be ``i`` or ``(i, seed)``: with a seed (``SeededBatches``) the augmentation of that draw is
    a pure function of the seed, so runs are reproducible with any number of loader workers.
    """

    def __init__(self, records: Sequence[Record], builder: SampleBuilder, pose: PoseSource | None = None,
                 orientation_bins: int = 6):
        self.records = list(records)
        self.builder, self.pose = builder, pose
        self.orientation = orientation_bin([r.orientation for r in self.records], orientation_bins)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, item) -> dict:
        if isinstance(item, tuple):
            index, seed = item
            params = self.builder.draw(np.random.default_rng(seed))
        else:
            index, params = int(item), self.builder.draw(np.random.default_rng()) if self.builder.train else None
        rec = self.records[index]
        image = read_image(rec.path, max_side=None)  # label keypoints are in original-image pixels
        pose = self.pose(index, rec, (image.shape[1], image.shape[0])) if self.pose is not None else None
        x, kv = self.builder(image, pose, params)
        return {"image": x, "keypoints": kv, "pid": rec.vehicle_id, "camid": rec.camera_id,
                "color": rec.color_id, "type": rec.type_id, "orientation": int(self.orientation[index]),
                "domain": rec.domain, "index": index}


class SeededBatches:
    """Wraps a batch sampler: yields ``[(index, seed), ...]`` with seeds drawn from (seed, rank, epoch, batch)."""

    def __init__(self, batch_sampler, seed: int, rank: int = 0):
        self.inner, self.seed, self.rank, self.epoch = batch_sampler, int(seed), int(rank), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.inner, "set_epoch"):
            self.inner.set_epoch(epoch)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for b, batch in enumerate(self.inner):
            seeds = np.random.default_rng([self.seed, self.rank, self.epoch, b]).integers(0, 2**62, size=len(batch))
            yield [(int(i), int(s)) for i, s in zip(batch, seeds)]

    def __len__(self) -> int:
        return len(self.inner)


def combine_training_sets(sets: Sequence[tuple[Sequence[Record], int]]) -> tuple[list[Record], dict]:
    """Merge training sets [(records, domain), ...] into one with contiguous 0-based vehicle ids.

    Ids of different sets never merge (set i's vehicle 5 and set j's vehicle 5 are two identities); real
    sets come first, so real ids are 0..R-1 and synthetic ids R.. (StRDAN's offset). Each record's domain
    is set to its set's domain. Returns (records, info with per-domain identity and image counts).
    """
    order = sorted(range(len(sets)), key=lambda i: (sets[i][1] != REAL, i))
    mapping: dict[tuple[int, int], int] = {}
    out: list[Record] = []
    source: list[int] = []
    for i in order:
        records, domain = sets[i]
        if domain not in (REAL, SYNTHETIC):
            raise ValueError(f"domain must be REAL (0) or SYNTHETIC (1), got {domain}")
        for r in records:
            if r.vehicle_id == UNLABELLED:
                raise DataError(r.path, "a training image needs a vehicle id")
            key = (i, r.vehicle_id)
            if key not in mapping:
                mapping[key] = len(mapping)
            out.append(replace(r, vehicle_id=mapping[key], domain=domain))
            source.append(i)
    info = {"num_ids": len(mapping), "num_images": len(out),
            "ids_per_domain": {d: len({mapping[(i, r.vehicle_id)] for i in order if sets[i][1] == d
                                       for r in sets[i][0]}) for d in (REAL, SYNTHETIC)},
            "source": source}
    return out, info


def collate_labels(batch: dict) -> dict:
    """The label tensors of a collated batch as int64 (pid, color, type, orientation, domain, camid)."""
    return {k: torch.as_tensor(batch[k]).long() for k in ("pid", "color", "type", "orientation", "domain", "camid")}


def make_pose_source(data_cfg, model_cfg, records: Sequence[Record] = (), caches: Sequence[str] = (),
                     sources: Sequence[int] | None = None) -> PoseSource | None:
    """The pose source a config asks for: label keypoints rendered (``keypoints``), pose caches (``cache``:
    ``caches`` are the folders, ``sources[i]`` the folder of ``records[i]``), or none."""
    needs = model_cfg.heatmaps or model_cfg.segments or model_cfg.keypoints
    if not needs or data_cfg.pose_source == "none":
        return None
    if data_cfg.pose_source == "keypoints":
        return KeypointPose(heatmaps=model_cfg.heatmaps, segments=model_cfg.segments, size=data_cfg.heatmap_size,
                            sigma=data_cfg.heatmap_sigma, threshold=data_cfg.segment_threshold)
    if not caches or not all(caches):
        raise ConfigError("data.pose_source is 'cache' but no pose cache folder is given for these images "
                          "(data.train[i].pose_cache, data.query_cache, data.gallery_cache)")
    return CachePose(records, caches, sources, heatmaps=model_cfg.heatmaps, segments=model_cfg.segments,
                     size=data_cfg.heatmap_size, threshold=data_cfg.segment_threshold)


def make_builder(data_cfg, model_cfg, train: bool) -> SampleBuilder:
    """The sample builder of a config (training augmentation or plain test-time resize)."""
    return SampleBuilder(data_cfg.height, data_cfg.width, heatmaps=model_cfg.heatmaps, segments=model_cfg.segments,
                         train=train, translate=data_cfg.translate, flip=data_cfg.flip,
                         random_erasing=data_cfg.random_erasing, color_jitter=data_cfg.color_jitter,
                         mean=data_cfg.mean, std=data_cfg.std)
