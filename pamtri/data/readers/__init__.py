"""Data set readers: one per on-disk format, each turning a split into a list of ``pamtri.data.records.Record``.

Formats (``read_split(root, split, fmt)``; ``detect_format(root)`` tells them apart):

- ``veri``: VeRi-776 (``train_label.xml`` + ``test_label.xml``, ``name_*.txt``, ``image_*/``).
- ``cityflow``: CityFlow-ReID / AI City Track 2 (``train_label.xml`` without colour, ``test_track.txt``).
- ``vehiclex``: AI City 2020 synthetic data (``train_label.xml`` with colour, type and orientation).
- ``pamtri-csv``: the reference implementation's ``label_*.csv`` / ``pose_label_*.csv`` beside ``image_*/``.
- ``synth``: our generator's tree (``meta_*.csv``, ``synth.json``).
- ``vehicleid``: VehicleID (``image/``, ``train_test_split/test_list_<size>.txt``; train and test splits).
- ``veriwild``: VERI-Wild (``images/<vid>/``, ``train_test_split/`` lists and ``vehicle_info.txt``).
- ``folder``: any folder of crops (``train/``, ``query/``, ``gallery/``; names or sub-folders give the ids).
- ``csv``: one CSV per split (``train.csv``, ``query.csv``, ``gallery.csv``; ``image``, ``vehicle_id``, ...).

Split names are ``train``, ``query`` and ``test`` (``gallery`` is accepted for ``test``). VehicleID and VERI-Wild
have several test sets: ``test_size`` picks one (``available_test_sizes`` lists those present; None: the smallest).
Readers are strict by default; pass ``problems=Problems()`` to collect every problem instead (``pamtri data
check``).
"""
from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path

from pamtri.common.atomic import atomic_write_text
from pamtri.common.errors import DataError
from pamtri.data.records import Problems, Record

from ._common import SPLITS, check_split
from .cityflow import read_cityflow_split, read_ground_truth, read_tracks, require_ground_truth
from .folder import folder_splits, read_folder_split
from .pamtri_csv import read_pamtri_csv_split
from .synth import read_synth_split
from .table import read_table_split, table_splits
from .vehicleid import gallery_draws, read_vehicleid_split, vehicleid_splits, vehicleid_test_sizes
from .vehiclex import read_vehiclex_split
from .veri import read_veri_split
from .veriwild import read_vehicle_info, read_veriwild_split, veriwild_splits, veriwild_test_sizes

FORMATS = ("veri", "cityflow", "vehiclex", "pamtri-csv", "synth", "vehicleid", "veriwild", "folder", "csv")
SIZED_SPLITS = {"vehicleid": ("test",), "veriwild": ("query", "test")}  # splits with several test sets

__all__ = ["FORMATS", "SIZED_SPLITS", "SPLITS", "Problems", "detect_format", "read_split", "available_splits",
           "check_split", "available_test_sizes", "resolve_test_size", "read_veri_split", "read_cityflow_split",
           "read_vehiclex_split", "read_pamtri_csv_split", "read_synth_split", "read_vehicleid_split",
           "read_veriwild_split", "read_folder_split", "read_table_split", "read_vehicle_info", "gallery_draws",
           "read_tracks", "read_ground_truth", "require_ground_truth", "attribute_names", "write_attribute_names",
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
    if (root / "train_test_split" / "vehicle_info.txt").is_file() or veriwild_test_sizes(root):
        return "veriwild"
    if vehicleid_splits(root):
        return "vehicleid"
    if table_splits(root):
        return "csv"
    if folder_splits(root):
        return "folder"
    raise DataError(root, "cannot tell the data set format: expected train_label.xml / test_label.xml (VeRi, "
                          "CityFlow, VehicleX), label_*.csv (reference PAMTRI CSVs), meta_*.csv (pamtri synth), "
                          "train_test_split/ (VehicleID, VERI-Wild), train.csv / query.csv / gallery.csv (csv) or "
                          f"train/ query/ gallery/ folders (folder); name it with --format ({', '.join(FORMATS)})")


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
    others = {"vehicleid": vehicleid_splits, "veriwild": veriwild_splits, "folder": folder_splits,
              "csv": table_splits}
    if fmt in others:
        return others[fmt](root)
    present = []
    for split in SPLITS:
        files = [f"image_{split}", f"name_{split}.txt", f"label_{split}.csv", f"pose_label_{split}.csv",
                 f"meta_{split}.csv"]
        if fmt == "cityflow" and split == "train":
            files.append("train_label.xml")
        if any((root / f).exists() for f in files):
            present.append(split)
    return tuple(present)


def available_test_sizes(root: str | os.PathLike, fmt: str = "auto") -> tuple[int, ...]:
    """The test set sizes a VehicleID (vehicles) or VERI-Wild (queries) tree has, smallest first; () for others."""
    fmt = check_format(fmt, root)
    if fmt == "vehicleid":
        return vehicleid_test_sizes(root)
    return veriwild_test_sizes(root) if fmt == "veriwild" else ()


def resolve_test_size(root: str | os.PathLike, fmt: str = "auto", size: int | None = None) -> int | None:
    """The test set size a read of ``size`` uses (None -> the smallest present); None for formats without sizes."""
    sizes = available_test_sizes(root, fmt)
    if not sizes:
        return None
    return sizes[0] if size is None else size


def read_split(root: str | os.PathLike, split: str, fmt: str = "auto", *, check_images: bool = False,
               problems: Problems | None = None, gt: str | os.PathLike | None = None,
               test_size: int | None = None) -> list[Record]:
    """Records of one split (``train``, ``query``, ``test``) of the tree at ``root`` in format ``fmt``.

    ``check_images``: also require every image file to exist and be non-empty.
    ``gt``: CityFlow only, a ground-truth file for query/test (see ``pamtri.data.readers.cityflow``).
    ``test_size``: VehicleID (800, 1600, 2400 vehicles) and VERI-Wild (3000, 5000, 10000 queries) only, which
    test set the query / test split is read from (None: the smallest present).
    """
    root = Path(root)
    split = check_split(split, root)
    fmt = check_format(fmt, root)
    if gt is not None and fmt != "cityflow":
        raise DataError(gt, f"a ground-truth file is only used with the cityflow format, not {fmt}")
    if test_size is not None and fmt not in SIZED_SPLITS:
        raise DataError(root, f"test size {test_size} (--test-size, data.test_size): the {fmt} format has one test "
                              "set; test sizes are for vehicleid and veriwild")
    if fmt == "vehicleid":
        return read_vehicleid_split(root, split, test_size, check_images=check_images, problems=problems)
    if fmt == "veriwild":
        return read_veriwild_split(root, split, test_size, check_images=check_images, problems=problems)
    if fmt == "folder":
        return read_folder_split(root, split, check_images=check_images, problems=problems)
    if fmt == "csv":
        return read_table_split(root, split, check_images=check_images, problems=problems)
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
                           "(reid eval --ignore-cameras) to keep every same-identity gallery image, or add camera "
                           "ids (folder format: name the images <vehicle id>_c<camera>_<anything>.jpg; csv format: "
                           "a camera_id column)")


# --- class names of the colour and type ids, written beside a run's results ---

def attribute_names(root: str | os.PathLike, fmt: str = "auto") -> dict[str, list[str]] | None:
    """{"color": names, "type": names} of the 0-based ids a VERI-Wild tree's records hold (numbered from the names
    in its vehicle_info.txt); None for the other formats, whose files hold the ids themselves (VeRi's and
    VehicleX's vocabularies are ``pamtri.data.attributes``)."""
    if check_format(fmt, root) != "veriwild":
        return None
    info = read_vehicle_info(Path(root) / "train_test_split" / "vehicle_info.txt")
    return {"color": list(info.colors), "type": list(info.types)}


def write_attribute_names(path: str | os.PathLike, sources: list[tuple[str, str]]) -> bool:
    """Write ``attributes.json``: the colour and type names of each (root, format) that has them (VERI-Wild);
    False (and no file) when none has."""
    entries = [{"root": str(root), "format": check_format(fmt, root), **names}
               for root, fmt in sources if (names := attribute_names(root, fmt)) is not None]
    if entries:
        atomic_write_text(path, json.dumps({"sources": entries}, indent=2) + "\n")
    return bool(entries)
