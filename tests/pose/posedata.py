"""Tiny pose data sets for tests: images with a blob per keypoint, and their reference pose CSV."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from pamtri.data.labels import write_pose_csv
from pamtri.data.records import Record


def random_keypoints(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """(36, 3) integer keypoints inside the image, about 80 % visible."""
    kps = np.zeros((36, 3), np.float32)
    kps[:, 0] = rng.integers(2, width - 2, 36)
    kps[:, 1] = rng.integers(2, height - 2, 36)
    kps[:, 2] = rng.random(36) < 0.8
    return kps


def render(kps: np.ndarray, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 RGB image: noise background, one coloured disk per visible keypoint."""
    img = rng.integers(0, 40, (height, width, 3), dtype=np.uint8)
    for k, (x, y, v) in enumerate(kps):
        if v > 0:
            colour = tuple(int(c) for c in ((k * 37) % 255, (k * 91) % 255, 255 - (k * 53) % 255))
            cv2.circle(img, (int(x), int(y)), 2, colour, -1)
    return img


def make_pose_set(root: Path, split: str = "train", n: int = 6, seed: int = 0,
                  sizes=((80, 64), (64, 72))) -> list[Record]:
    """Write ``root/image_<split>/*.png`` and ``root/pose_label_<split>.csv``; returns the records."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / f"image_{split}"
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        w, h = sizes[i % len(sizes)]
        kps = random_keypoints(rng, w, h)
        name = f"{i:04d}_c001_{seed:04d}_{i}.png"
        cv2.imwrite(str(folder / name), cv2.cvtColor(render(kps, w, h, rng), cv2.COLOR_RGB2BGR))
        records.append(Record(path=str(folder / name), keypoints=kps, width=w, height=h))
    write_pose_csv(records, Path(root) / f"pose_label_{split}.csv")
    return records
