"""Where the ReID stage's pose channels come from: ``source(index, record, (width, height)) -> PoseChannels``.

Pose channels live on a grid of ``data.heatmap_size`` x ``data.heatmap_size`` cells spanning the whole image
(``image_grid``, a ``pose.codec.HeatmapCodec``). ``KeypointPose`` renders Gaussian heatmaps and segments
(``pose.segments.rasterise``) from the record's label keypoints; ``CachePose`` reads the pose stage's
predictions from caches (``pose.cache``, built by ``pamtri cache build --grid``); ``ArrayPose`` serves any
precomputed arrays. ``make_pose_source`` picks the one a config asks for.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from pamtri.common.errors import ConfigError, DataError
from pamtri.data.records import Record
from pamtri.pose.cache import Cache, dequantise
from pamtri.pose.codec import HeatmapCodec
from pamtri.pose.segments import rasterise
from pamtri.pose.transforms import compose, invert


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


def image_grid(image_size: tuple[int, int], size: int, sigma: float = 2.0) -> HeatmapCodec:
    """The codec of a ``size`` x ``size`` heatmap grid spanning a whole image of ``image_size`` (width, height)
    pixels; cell (i, j) covers pixels [j W / size, (j + 1) W / size) x [i H / size, (i + 1) H / size)."""
    return HeatmapCodec(input_size=image_size, heatmap_size=(size, size), sigma=sigma)


def grid_to_source_cells(cell_to_pixel: np.ndarray, image_sizes: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """(N, 2, 3) affines: cells of the (width, height) ``grid`` spanning each image of (N, 2) ``image_sizes``
    (width, height; ``image_grid``'s cells) -> cells of a source heatmap whose cells map to image pixels through
    ``cell_to_pixel`` (N, 2, 3): how the pose stage's crop heatmaps are resampled onto the ReID grid."""
    frames = np.stack([HeatmapCodec(input_size=(int(iw), int(ih)), heatmap_size=grid).cells_to_input
                       for iw, ih in np.asarray(image_sizes)])
    return compose(invert(np.asarray(cell_to_pixel, dtype=np.float64)), frames)


class KeypointPose:
    """Pose channels rendered from label keypoints: Gaussian heatmaps and/or segments at ``size`` x ``size``."""

    def __init__(self, heatmaps: bool = True, segments: bool = False, size: int = 64, sigma: float = 2.0,
                 threshold: float = 0.5):
        self.heatmaps, self.segments = heatmaps, segments
        self.size, self.sigma, self.threshold = int(size), float(sigma), float(threshold)

    def __call__(self, index: int, record: Record, image_size: tuple[int, int]) -> PoseChannels:
        kps = _record_keypoints(record)
        grid = image_grid(image_size, self.size, self.sigma)
        heat = seg = None
        if self.heatmaps:
            heat = grid.encode(kps[None], kps[None, :, 2] >= self.threshold)[0][0]
        if self.segments:
            seg = rasterise(grid.to_cells(kps), (self.size, self.size), self.threshold)
        return PoseChannels(kps, heat, seg)


class CachePose:
    """Pose channels of the pose stage's predictions, read from pose caches: one memory-map slice per sample.

    ``folders`` are cache folders (``pamtri cache build``); ``sources[i]`` is the folder of record i (all 0
    when omitted); records are found in their cache by image name. Heatmaps come from the cache (its
    image-frame grid, ``Cache.grid``); segments are rasterised from the cached keypoints on a ``size`` x
    ``size`` grid, as for labels. Every folder must come from the same pose weights. Caches are opened lazily
    in each loader worker.
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

    @property
    def caches(self) -> list[Cache]:
        """The open caches, one per folder."""
        return self._open()

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
        seg = rasterise(image_grid(image_size, self.size).to_cells(kps), (self.size, self.size), self.threshold) \
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



def make_pose_source(data_cfg, model_cfg, records: Sequence[Record] = (), caches: Sequence[str] = (),
                     sources: Sequence[int] | None = None) -> PoseSource | None:
    """The pose source a config asks for: label keypoints rendered (``keypoints``), pose caches (``cache``:
    ``caches`` are the folders, ``sources[i]`` the folder of ``records[i]``), or none.

    Cached heatmaps must lie on the config's grid (``data.heatmap_size``): they are not resampled, because
    inference (``pipeline.infer``) resamples the pose model's heatmaps straight onto that grid and a second
    resampling in training would give the model other channels than it sees at inference.
    """
    if not model_cfg.uses_pose or data_cfg.pose_source == "none":
        return None
    if data_cfg.pose_source == "keypoints":
        return KeypointPose(heatmaps=model_cfg.heatmaps, segments=model_cfg.segments, size=data_cfg.heatmap_size,
                            sigma=data_cfg.heatmap_sigma, threshold=data_cfg.segment_threshold)
    if not caches or not all(caches):
        raise ConfigError("data.pose_source is 'cache' but no pose cache folder is given for these images "
                          "(data.train[i].pose_cache, data.query_cache, data.gallery_cache)")
    pose = CachePose(records, caches, sources, heatmaps=model_cfg.heatmaps, segments=model_cfg.segments,
                     size=data_cfg.heatmap_size, threshold=data_cfg.segment_threshold)
    size = data_cfg.heatmap_size
    for cache in pose.caches if model_cfg.heatmaps else ():
        if cache.grid != (size, size):
            raise ConfigError(f"{cache.folder}: this pose cache holds {cache.grid[0]}x{cache.grid[1]}-cell heatmaps "
                              f"but data.heatmap_size is {size}; rebuild it with `pamtri cache build ... --grid "
                              f"{size}` (or set data.heatmap_size: {cache.grid[0]})")
    return pose

