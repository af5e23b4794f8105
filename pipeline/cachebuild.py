"""Filling caches: from a pose model over a data set split (single process or torchrun), and from/to the
reference implementation's 49-JPEG folders."""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from pamtri.common.atomic import RunLock
from pamtri.common.checkpoint import file_sha256
from pamtri.common.config import to_dict
from pamtri.common.distributed import barrier, init_distributed
from pamtri.data.images import read_image_and_size
from pamtri.data.labels import read_reid_csv, write_reid_csv
from pamtri.data.readers import read_split
from pamtri.data.records import Record, parse_veri_name
from pamtri.pose.cache import Cache, CacheSpec, CacheWriter, dequantise
from pamtri.pose.legacy import legacy_folders, read_legacy_heatmaps, write_legacy_maps
from pamtri.pose.predict import PosePredictor
from pamtri.pose.segments import rasterise
from pamtri.pose.weights import load as load_pose

from .infer import run_pose

log = logging.getLogger(__name__)


def split_images(root: str | os.PathLike, split: str, fmt: str = "auto", test_size: int | None = None) -> list[str]:
    """Absolute image paths of a data set split (of the test set of ``test_size``), in the reader's order."""
    return [r.path for r in read_split(root, split, fmt, test_size=test_size)]


def build_cache(pose_weights: str | os.PathLike, images: Sequence[str], out: str | os.PathLike, *,
                grid: int = 64, batch_size: int = 32, chunk_size: int = 256, heatmap_dtype: str = "uint8",
                device: str = "auto", precision: str = "auto", flip_test: bool | None = None,
                rebuild: bool = False, progress: bool = True, io_threads: int = 4) -> Path:
    """Run the pose model over ``images`` (paths) and store heatmaps + keypoints in a cache at ``out``.

    Heatmaps are stored on a ``grid`` x ``grid`` image-frame grid: the ReID config's ``data.heatmap_size``,
    which the ReID stage checks (``reid.pose_inputs.make_pose_source``). Under torchrun each rank builds
    every world_size-th chunk and rank 0 writes the manifest. Returns the cache folder.
    """
    info = init_distributed()
    model, (cfg, codec) = load_pose(pose_weights)
    predictor = PosePredictor.from_config(model, cfg, codec, device=device, precision=precision, flip_test=flip_test)
    names = [os.path.basename(p) for p in images]
    spec = CacheSpec(weights_sha256=file_sha256(pose_weights), pose_config=to_dict(cfg),
                     input_size=codec.input_size, heatmap_size=(grid, grid),
                     heatmap_dtype=heatmap_dtype, chunk_size=chunk_size)
    # one writer per cache folder: a second build into it is refused (rank 0 holds the lock for the job)
    lock = RunLock(out).acquire() if info.is_main else None
    try:
        if info.is_main:
            writer = CacheWriter(out, names, spec, rebuild=rebuild)
        barrier(info)
        if not info.is_main:
            writer = CacheWriter(out, names, spec)
        by_name = dict(zip(names, images))
        pool = ThreadPoolExecutor(max(1, io_threads))  # JPEG decoding releases the GIL

        def produce(batch_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
            heat, kps = [], []
            paths = [by_name[n] for n in batch_names]
            for i in range(0, len(paths), batch_size):
                # Decoded shrunk to MAX_SIDE (bounded memory for huge images and whole batches of them); the
                # heatmaps are on an image-frame grid, so only the keypoints are scaled back to original pixels.
                read = list(pool.map(read_image_and_size, paths[i:i + batch_size]))
                imgs = [img for img, _ in read]
                out_b = run_pose(predictor, imgs, grid)
                heat.append(out_b.heatmaps.cpu().numpy())
                scale = np.array([[w / img.shape[1], h / img.shape[0], 1.0] for img, (w, h) in read], np.float32)
                kps.append(np.asarray(out_b.keypoints) * scale[:, None, :])
            return np.concatenate(heat), np.concatenate(kps)

        try:
            writer.build(produce, rank=info.rank, world_size=info.world_size, progress=progress)
        finally:
            pool.shutdown()
        barrier(info)
        if info.is_main:
            writer.finalise()
        barrier(info)
    finally:
        if lock is not None:
            lock.release()
    return Path(out)


def import_legacy(root: str | os.PathLike, split: str, labels: str | os.PathLike, out: str | os.PathLike,
                  grid: int = 64, heatmap_dtype: str = "uint8", chunk_size: int = 256, rebuild: bool = False) -> Path:
    """Convert the reference layout (``heatmap_<split>/<stem>/NN.jpg`` + a ReID label CSV with keypoints)
    into a cache. Heatmaps keep the reference's grid (resized to ``grid`` x ``grid`` when it differs); segments
    are derived from the keypoints on read, as in our own caches."""
    records = read_reid_csv(labels)
    names = [r.name for r in records]
    kps = {r.name: r.keypoints for r in records}
    spec = CacheSpec(weights_sha256=f"legacy:{file_sha256(labels)}", pose_config={"source": "reference layout"},
                     input_size=(0, 0), heatmap_size=(grid, grid), heatmap_dtype=heatmap_dtype,
                     chunk_size=chunk_size)
    lock = RunLock(out).acquire()
    try:
        writer = CacheWriter(out, names, spec, rebuild=rebuild)
        writer.build(lambda batch: _legacy_chunk(root, split, batch, kps, grid))
        writer.finalise()
    finally:
        lock.release()
    return Path(out)


def _legacy_chunk(root, split: str, batch: Sequence[str], kps: dict, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """Heatmaps (read from the reference folders, on a grid x grid grid) and keypoints of one chunk's images."""
    heat = []
    for name in batch:
        folder, _ = legacy_folders(root, split, name)
        maps = read_legacy_heatmaps(folder)
        if maps.shape[1:] != (grid, grid):
            maps = cv2.resize(maps.transpose(1, 2, 0), (grid, grid), interpolation=cv2.INTER_LINEAR
                              ).transpose(2, 0, 1)
        heat.append(maps.astype(np.float32) / 255.0)
    return np.stack(heat), np.stack([kps[n] for n in batch])


def export_legacy(cache_dir: str | os.PathLike, root: str | os.PathLike, split: str,
                  image_root: str | os.PathLike, quality: int = 95) -> int:
    """Write a cache in the reference layout under ``root``: heatmap/segment JPEG folders (segments
    rasterised at each image's size) and ``label_<split>.csv`` with the keypoints. Returns the image count."""
    cache = Cache(cache_dir)
    records: list[Record] = []
    for i, name in enumerate(cache.names):
        hm, kp, _ = cache.raw(i)
        path = Path(image_root) / name
        w, h = read_image_and_size(path)[1]  # the segment size: the image file's own (decoded shrunk)
        heat_dir, seg_dir = legacy_folders(root, split, name)
        kp = np.asarray(kp)
        write_legacy_maps(heat_dir, dequantise(np.asarray(hm)), rasterise(kp, (h, w)).astype(bool),
                          segment_folder=seg_dir, quality=quality)
        ids = parse_veri_name(name)
        records.append(Record(path=name, vehicle_id=ids[0] if ids else 0, keypoints=kp))
    write_reid_csv(records, Path(root) / f"label_{split}.csv")
    return len(records)

