"""Data set readers: one per on-disk format, each turning a split into a list of ``pamtri.data.records.Record``.

Formats (``read_split(root, split, fmt)``; ``detect_format(root)`` tells them apart):

- ``veri``: VeRi-776 (``train_label.xml`` + ``test_label.xml``, ``name_*.txt``, ``image_*/``).
- ``cityflow``: CityFlow-ReID / AI City Track 2 (``train_label.xml`` without colour, ``test_track.txt``).
- ``vehiclex``: AI City 2020 synthetic data (``train_label.xml`` with colour, type and orientation).
- ``pamtri-csv``: the reference implementation's ``label_*.csv`` / ``pose_label_*.csv`` beside ``image_*/``.
- ``synth``: our generator's tree (``meta_*.csv``, ``synth.json``).

Split names are ``train``, ``query`` and ``test`` (``gallery`` is accepted for ``test``). Readers are strict
by default; pass ``problems=Problems()`` to collect every problem instead (``pamtri data check``).
"""
from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

from pamtri.common.errors import DataError
from pamtri.data.records import Problems, Record

from ._common import SPLITS, check_split
from .cityflow import read_cityflow_split, read_ground_truth, read_tracks, require_ground_truth
from .pamtri_csv import read_pamtri_csv_split
from .synth import read_synth_split
from .vehiclex import read_vehiclex_split
from .veri import read_veri_split

FORMATS = ("veri", "cityflow", "vehiclex", "pamtri-csv", "synth")

__all__ = ["FORMATS", "SPLITS", "Problems", "detect_format", "read_split", "available_splits", "check_split",
           "read_veri_split", "read_cityflow_split", "read_vehiclex_split", "read_pamtri_csv_split",
           "read_synth_split", "read_tracks", "read_ground_truth", "require_ground_truth",
           "single_image_identities", "queries_without_gallery", "missing_cameras"]

_ITEM = re.compile(rb"<Item\b([^>]*)>")


def _first_item_attrs(path: Path) -> bytes:
    """The attribute text of the first ``<Item`` of a label XML (enough to tell the formats apart)."""
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
    m = _ITEM.search(head)
    return m.group(1) if m else b""


def detect_format(root: str | os.PathLike) -> str:
    """The format of the data set tree at ``root`` (one of FORMATS); DataError when it cannot tell."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "no such data set folder")
    if (root / "synth.json").is_file() or any(root.glob("meta_*.csv")):
        return "synth"
    if (root / "train_label.xml").is_file() or (root / "test_label.xml").is_file():
        if (root / "test_label.xml").is_file():
            return "veri"
        attrs = _first_item_attrs(root / "train_label.xml")
        if re.search(rb"\borientation\s*=", attrs):
            return "vehiclex"
        if re.search(rb"\bcolorID\s*=", attrs) and not (root / "test_track.txt").is_file():
            return "veri"
        return "cityflow"
    if any(root.glob("label_*.csv")) or any(root.glob("pose_label_*.csv")):
        return "pamtri-csv"
    raise DataError(root, "cannot tell the data set format: expected train_label.xml / test_label.xml (VeRi, "
                          "CityFlow, VehicleX), label_*.csv (reference PAMTRI CSVs) or meta_*.csv (pamtri synth); "
                          f"name it with --format ({', '.join(FORMATS)})")


def check_format(fmt: str, root: str | os.PathLike) -> str:
    """``fmt`` itself, or the detected format for ``auto``; DataError for an unknown name."""
    if fmt == "auto":
        return detect_format(root)
    if fmt not in FORMATS:
        raise DataError(root, f"unknown data set format {fmt!r}; valid formats: auto, {', '.join(FORMATS)}")
    return fmt


def available_splits(root: str | os.PathLike, fmt: str = "auto") -> tuple[str, ...]:
    """The splits a tree of format ``fmt`` has on disk (VehicleX: train only; others: those with files)."""
    root = Path(root)
    fmt = check_format(fmt, root)
    if fmt == "vehiclex":
        return ("train",)
    present = []
    for split in SPLITS:
        files = [f"image_{split}", f"name_{split}.txt", f"label_{split}.csv", f"pose_label_{split}.csv",
                 f"meta_{split}.csv"]
        if fmt == "cityflow" and split == "train":
            files.append("train_label.xml")
        if any((root / f).exists() for f in files):
            present.append(split)
    return tuple(present)


def read_split(root: str | os.PathLike, split: str, fmt: str = "auto", *, check_images: bool = False,
               problems: Problems | None = None, gt: str | os.PathLike | None = None) -> list[Record]:
    """Records of one split (``train``, ``query``, ``test``) of the tree at ``root`` in format ``fmt``.

    ``check_images``: also require every image file to exist and be non-empty.
    ``gt``: CityFlow only, a ground-truth file for query/test (see ``pamtri.data.readers.cityflow``).
    """
    root = Path(root)
    split = check_split(split, root)
    fmt = check_format(fmt, root)
    if gt is not None and fmt != "cityflow":
        raise DataError(gt, f"a ground-truth file is only used with the cityflow format, not {fmt}")
    if fmt == "veri":
        return read_veri_split(root, split, check_images=check_images, problems=problems)
    if fmt == "cityflow":
        return read_cityflow_split(root, split, gt=gt, check_images=check_images, problems=problems)
    if fmt == "vehiclex":
        return read_vehiclex_split(root, split, check_images=check_images, problems=problems)
    if fmt == "pamtri-csv":
        return read_pamtri_csv_split(root, split, check_images=check_images, problems=problems)
    return read_synth_split(root, split, check_images=check_images, problems=problems)


# --- checks across a split's records: one message each, shared by training, evaluation and `pamtri data check` ---

def _ids_text(ids) -> str:
    ids = sorted(ids)
    return ", ".join(str(i) for i in ids[:10]) + (", ..." if len(ids) > 10 else "")


def single_image_identities(records: list[Record], root: str | os.PathLike | None,
                            split: str = "train") -> DataError | None:
    """The problem of identities with a single image (a P x K batch's triplet loss needs two), or None."""
    counts = Counter(r.vehicle_id for r in records if r.vehicle_id >= 0)
    single = [v for v, c in counts.items() if c == 1]
    if not single:
        return None
    return DataError(root, f"{len(single)} {split} identities have a single image (a triplet needs two): "
                           f"{_ids_text(single)}; remove them from the split, or set loss.triplet: 0")


def queries_without_gallery(query: list[Record], gallery: list[Record], gallery_split: str = "test"
                            ) -> list[DataError]:
    """One problem per labelled query image whose identity has no image at all in the gallery."""
    ids = {r.vehicle_id for r in gallery if r.vehicle_id >= 0}
    return [DataError(r.path, f"query identity {r.vehicle_id} has no image in the gallery ({gallery_split}); "
                              "remove the query image or add the identity's gallery images")
            for r in query if r.vehicle_id >= 0 and r.vehicle_id not in ids]


def missing_cameras(records: list[Record], split: str, root: str | os.PathLike | None) -> DataError | None:
    """The problem of evaluation images without a camera id (the same-camera rule needs them), or None."""
    missing = sum(r.camera_id < 0 for r in records)
    if not records or not missing:
        return None
    what = f"split {split!r} has no camera ids" if missing == len(records) else \
        f"{missing} of {len(records)} {split} images have no camera id"
    return DataError(root, f"{what}; evaluation cannot apply the same-camera rule: set eval.ignore_cameras: true "
                           "(reid eval --ignore-cameras) to keep every same-identity gallery image")
