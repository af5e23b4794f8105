"""The reference PAMTRI layout: ``image_<split>/`` beside ``label_<split>.csv`` and/or ``pose_label_<split>.csv``.

The ReID label CSV (when present) gives the records: vehicle id, colour and type (VeRi's 1-based ids in the
file, 0-based in records) and the keypoints it holds (x, y, confidence), camera from VeRi-style names;
the pose label CSV then only adds the image width and height. Without a ReID CSV the pose label CSV gives
the records (keypoints x, y, visibility 0/1; vehicle and camera from VeRi-style names).
"""
from __future__ import annotations

import os
from pathlib import Path

from pamtri.common.errors import DataError
from pamtri.data.attributes import VERI_COLORS, VERI_TYPES
from pamtri.data.labels import read_pose_csv, read_reid_csv
from pamtri.data.records import Problems, Record

from ._common import check_split, image_dir


def read_pamtri_csv_split(root: str | os.PathLike, split: str, check_images: bool = False,
                          problems: Problems | None = None) -> list[Record]:
    """Records of one split of a reference PAMTRI CSV tree."""
    root = Path(root)
    split = check_split(split, root)
    sink = Problems.of(problems)
    reid_path, pose_path = root / f"label_{split}.csv", root / f"pose_label_{split}.csv"
    folder = image_dir(root, split)
    if reid_path.exists():
        records = read_reid_csv(reid_path, folder, check_images, problems=sink,
                                num_colors=len(VERI_COLORS), num_types=len(VERI_TYPES))
        if pose_path.exists():
            sizes = {p.name: (p.width, p.height) for p in read_pose_csv(pose_path, problems=sink)}
            for r in records:
                r.width, r.height = sizes.get(r.name, (0, 0))
        return records
    if pose_path.exists():
        return read_pose_csv(pose_path, folder, check_images, problems=sink)
    sink.error(DataError(root, f"split {split!r} has neither {reid_path.name} nor {pose_path.name}"))
    return []
