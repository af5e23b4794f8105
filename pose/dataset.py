"""Pose training and validation data: sources -> records, a torch Dataset over records, a mixing sampler.

Augmentation draws from a per-sample seed that the sampler hands out with each index, so a sample's
crop depends only on (run seed, epoch, position in the epoch): the same with any number of workers and
after ``--resume``.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from pamtri.common.errors import DataError
from pamtri.data.images import MAX_SIDE, read_image
from pamtri.data.labels import read_pose_csv
from pamtri.data.records import REAL, SYNTHETIC, Record

from .codec import HeatmapCodec
from .config import DataConfig, DataSource
from .transforms import Augment, colour_jitter, invert, normalise, sample_crop

log = logging.getLogger(__name__)


def source_paths(source: DataSource) -> tuple[Path, Path]:
    """(label CSV, image folder) of a data source."""
    root = Path(source.root)
    labels = root / (source.labels or f"pose_label_{source.split}.csv")
    images = root / (source.images or f"image_{source.split}")
    return labels, images


def read_source(source: DataSource) -> list[Record]:
    """Records (with keypoints) of one source; raises DataError naming the missing file."""
    labels, images = source_paths(source)
    if not labels.is_file():
        raise DataError(labels, f"pose labels of split {source.split!r} not found under {source.root}")
    domain = SYNTHETIC if source.format == "synthetic" else REAL
    records = read_pose_csv(labels, image_root=images, domain=domain, check_images=True)
    if not records:
        raise DataError(labels, "no labelled images")
    return records


class PoseDataset(Dataset):
    """Records -> dict(image (3, h, w) float32, target (36, H, W) and weight (36,) from ``codec``, keypoints
    (36, 3) original pixels, inverse (2, 3) network-input pixels -> image pixels, index).

    Crops are ``codec.input_size``; ``augment=None`` gives the plain evaluation crop. Items may be indexed by
    ``i`` or ``(i, seed)``.
    """

    def __init__(self, records: Sequence[Record], codec: HeatmapCodec, enlarge: float = 1.25,
                 augment: Augment | None = None):
        self.records = list(records)
        self.codec = codec
        self.enlarge = enlarge
        self.augment = augment

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, item) -> dict:
        index, seed = item if isinstance(item, tuple) else (item, index_seed(item))
        rec = self.records[index]
        # label sizes let a huge image be decoded shrunk: the keypoints follow below
        image = read_image(rec.path, MAX_SIDE if rec.width and rec.height else None)
        kps = rec.keypoints
        if rec.width and rec.height and (rec.width, rec.height) != (image.shape[1], image.shape[0]):
            # Labels refer to the size written in the label file; follow the actual image.
            kps = kps.copy()
            kps[:, 0] *= image.shape[1] / rec.width
            kps[:, 1] *= image.shape[0] / rec.height
        rng = np.random.default_rng(seed)
        if self.augment is not None:
            scale, rotation, flip = self.augment.sample(rng)
        else:
            scale, rotation, flip = 1.0, 0.0, False
        crop, crop_kps, m = sample_crop(image, kps, self.codec.input_size, self.enlarge, scale, rotation, flip)
        if self.augment is not None:
            crop = colour_jitter(crop, rng, self.augment.colour)
        target, weight = self.codec.encode(crop_kps[None])
        inverse = invert(m)
        return {
            "image": normalise(crop),
            "target": target[0],
            "weight": weight[0],
            "keypoints": np.asarray(kps, dtype=np.float32),
            "inverse": inverse.astype(np.float32),
            "index": index,
        }


def index_seed(index: int, epoch: int = 0, base: int = 0) -> int:
    """A 63-bit seed for sample ``index`` of ``epoch`` in a run seeded with ``base``."""
    state = np.random.SeedSequence([int(base), int(epoch), int(index)]).generate_state(1, dtype=np.uint64)
    return int(state[0] >> np.uint64(1))


class MixSampler(Sampler):
    """Per epoch, ``num_samples`` (index, seed) pairs over concatenated sources.

    One source: a random permutation (repeated when ``num_samples`` exceeds it). Several: each sample
    picks a source with probability proportional to its weight, then an image uniformly within it.
    Under DDP each of ``world_size`` ranks takes every world_size-th pair; call ``set_epoch``.
    """

    def __init__(self, sizes: Sequence[int], weights: Sequence[float] | None = None, num_samples: int = 0,
                 seed: int = 0, rank: int = 0, world_size: int = 1):
        self.sizes = [int(s) for s in sizes]
        self.weights = [float(w) for w in (weights or [1.0] * len(self.sizes))]
        self.num_samples = int(num_samples) or sum(self.sizes)
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def indices(self) -> np.ndarray:
        """All ranks' indices of the current epoch, (num_samples,) int64 into the concatenated sources."""
        rng = np.random.default_rng([self.seed, self.epoch, 7])
        if len(self.sizes) == 1:
            reps = math.ceil(self.num_samples / self.sizes[0])
            idx = np.concatenate([rng.permutation(self.sizes[0]) for _ in range(reps)])[:self.num_samples]
            return idx.astype(np.int64)
        p = np.asarray(self.weights) / np.sum(self.weights)
        which = rng.choice(len(self.sizes), size=self.num_samples, p=p)
        offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]])
        within = np.floor(rng.random(self.num_samples) * np.asarray(self.sizes)[which]).astype(np.int64)
        return offsets[which] + within

    def __iter__(self) -> Iterator[tuple[int, int]]:
        idx = self.indices()
        positions = range(self.rank, self._usable(), self.world_size)
        for pos in positions:
            yield int(idx[pos]), index_seed(pos, self.epoch, self.seed)

    def __len__(self) -> int:
        return len(range(self.rank, self._usable(), self.world_size))

    def _usable(self) -> int:
        # Every rank must see the same number of samples, or DDP waits forever on the longer one.
        return self.num_samples - self.num_samples % self.world_size


def build_datasets(cfg: DataConfig, codec: HeatmapCodec
                   ) -> tuple[PoseDataset, list[int], list[float], PoseDataset | None]:
    """(training set over all training sources, their sizes, their weights, validation set or None), with
    crops and targets of ``codec``."""
    sizes, weights, train_records = [], [], []
    for src in cfg.train:
        recs = read_source(src)
        sizes.append(len(recs))
        weights.append(src.weight)
        train_records += recs
        log.info("train source %s/%s (%s): %d images, weight %g", src.root, src.split, src.format, len(recs),
                 src.weight)
    augment = Augment(cfg.scale, cfg.rotation, cfg.rotation_prob, cfg.flip_prob, cfg.color_jitter)
    train = PoseDataset(train_records, codec, cfg.box_enlarge, augment)
    val_records: list[Record] = []
    for src in cfg.val:
        val_records += read_source(src)
    if cfg.max_val:
        val_records = val_records[:cfg.max_val]
    val = PoseDataset(val_records, codec, cfg.box_enlarge) if val_records else None
    return train, sizes, weights, val


def collate(items: list[dict]) -> dict:
    """Stack dataset items into tensors (index as int64)."""
    out = {}
    for key in items[0]:
        out[key] = torch.as_tensor(np.stack([np.asarray(it[key]) for it in items]))
    return out
