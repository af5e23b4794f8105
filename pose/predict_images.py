"""The pose stage over image files: a predictor from a checkpoint, and keypoints.csv / poses.npz in a folder."""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader
from tqdm import tqdm

from pamtri.common.atomic import atomic_write
from pamtri.data.images import read_image, read_image_list
from pamtri.data.labels import write_reid_csv
from pamtri.data.records import UNLABELLED, Record, parse_veri_name

from .config import PoseConfig
from .predict import PosePredictor
from .visualize import pose_grid, save_image
from .weights import load as load_pose


def load_predictor(weights: str | os.PathLike, model_name: str | None = None, *, decode: str | None = None,
                   batch_size: int | None = None, device: str = "auto", precision: str = "auto",
                   flip_test: bool = True) -> tuple[PosePredictor, PoseConfig]:
    """(predictor, its config) for ``weights``; ``decode`` / ``batch_size`` override the stored config's."""
    model, (cfg, codec) = load_pose(weights, model_name)
    if decode:
        codec = replace(codec, decode_method=decode)
    if batch_size:
        cfg.eval.batch_size = batch_size
    predictor = PosePredictor.from_config(model, cfg, codec, device=device, precision=precision,
                                          flip_test=flip_test)
    return predictor, cfg


class ImageFiles:
    """Dataset of (name, uint8 RGB image (H, W, 3)) for image ``names`` relative to folder ``base``."""

    def __init__(self, base: Path, names: Sequence[str]):
        self.base, self.names = base, names

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> tuple[str, np.ndarray]:
        return self.names[i], read_image(str(self.base / self.names[i]), max_side=None)


def _as_list(items: list) -> list:
    return items


def _predict_all(predictor: PosePredictor, loader, n: int, heat: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Run over ``loader`` -> (keypoints (n, 36, 3) pixels + confidence, image sizes (n, 2) width, height);
    heatmaps go into ``heat`` (n, 36, h, w) float16 when given."""
    keypoints = np.zeros((n, 36, 3), np.float32)
    sizes = np.zeros((n, 2), np.int32)
    i = 0
    for batch in tqdm(loader, desc="predict", unit="batch"):
        images = [im for _, im in batch]
        kps, hms = predictor.predict_arrays(images)
        k = len(images)
        keypoints[i:i + k] = kps
        sizes[i:i + k] = [(im.shape[1], im.shape[0]) for im in images]
        if heat is not None:
            heat[i:i + k] = hms.astype(np.float16)
        i += k
    return keypoints, sizes


def _records(names: Sequence[str], keypoints: np.ndarray, sizes: np.ndarray) -> list[Record]:
    """One Record per image (identity from a VeRi-style name, else unlabelled) for the ReID-label CSV."""
    records = []
    for name, kps, (wd, ht) in zip(names, keypoints, sizes):
        ids = parse_veri_name(name)
        records.append(Record(path=name, vehicle_id=ids[0] if ids else UNLABELLED, keypoints=kps,
                              width=int(wd), height=int(ht)))
    return records


def predict_images(predictor: PosePredictor, images: str | os.PathLike, out: str | os.PathLike, *,
                   batch_size: int = 32, workers: int = 2, heatmaps: bool = True, vis: int = 0
                   ) -> tuple[int, list[Path]]:
    """Keypoints of every image of ``images`` (a folder or a list file) written to ``out`` -> (number of
    images, paths written).

    out/keypoints.csv: the reference ReID-label layout; out/poses.npz: names, image_sizes (N, 2) width and
    height, keypoints (N, 36, 3) original pixels + confidence and, with ``heatmaps``, heatmaps (N, 36, h, w)
    float16 (gathered in a hidden scratch memmap, deleted afterwards); out/vis.png: the first ``vis`` images.
    """
    base, names = read_image_list(images)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    loader = DataLoader(ImageFiles(base, names), batch_size=batch_size, num_workers=workers, collate_fn=_as_list)
    w, h = predictor.codec.heatmap_size
    scratch = out / ".heatmaps.tmp.npy"
    heat = None
    try:
        if heatmaps:
            heat = np.lib.format.open_memmap(scratch, mode="w+", dtype=np.float16, shape=(len(names), 36, h, w))
        keypoints, sizes = _predict_all(predictor, loader, len(names), heat)
        write_reid_csv(_records(names, keypoints, sizes), out / "keypoints.csv")
        with atomic_write(out / "poses.npz", "wb") as fh:
            arrays = {"names": np.asarray(names), "image_sizes": sizes, "keypoints": keypoints}
            if heat is not None:
                heat.flush()
                arrays["heatmaps"] = heat
            np.savez(fh, **arrays)
    finally:
        del heat
        if scratch.exists():
            os.unlink(scratch)
    paths = [out / "keypoints.csv", out / "poses.npz"]
    if vis:
        n = min(vis, len(names))
        images = [read_image(str(base / nm), max_side=None) for nm in names[:n]]
        save_image(pose_grid(images, None, keypoints[:n]), out / "vis.png")
        paths.append(out / "vis.png")
    return len(names), paths
