"""ReID data sets: records -> samples (image, pose channels, keypoint vector, labels); merged training sets."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch
from torch.utils.data import Dataset

from pamtri.common.errors import DataError
from pamtri.data.attributes import orientation_bin
from pamtri.data.images import read_image
from pamtri.data.records import REAL, SYNTHETIC, UNLABELLED, Record

from .pose_inputs import PoseSource
from .transforms import SampleBuilder


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


def side_information(batch: dict) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(cameras, views) (B,) int64 of a collated batch for the ViT's SIE: camera ids, orientation bins (-1: none);
    None for a key the batch lacks."""
    return tuple(None if batch.get(k) is None else torch.as_tensor(batch[k]).long() for k in ("camid", "orientation"))


def collate_labels(batch: dict) -> dict:
    """The label tensors of a collated batch as int64 (pid, color, type, orientation, domain, camid)."""
    return {k: torch.as_tensor(batch[k]).long() for k in ("pid", "color", "type", "orientation", "domain", "camid")}

