"""Any folder of crops: ``ROOT/train/``, ``ROOT/query/``, ``ROOT/gallery/`` (the gallery is the test split).

A split folder holds images named ``<vehicle id>_c<camera>_<anything>.jpg`` (the Market-1501 / VeRi naming:
``0002_c003_00084280_0.jpg``, ``0002_c1s1_000451_03.jpg``), or one sub-folder per vehicle id
(``train/<vehicle id>/*.jpg``) whose images may have any name; there the camera is taken from a name of the
form above and is otherwise unknown (-1). An image directly in a split folder whose name does not follow the
pattern is an error naming it, as are a sub-folder whose name is not a vehicle id and images nested deeper:
no image is skipped silently. Files that are not images (by suffix) are ignored.
"""
from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

from pamtri.common.errors import DataError
from pamtri.data.images import list_images
from pamtri.data.records import UNLABELLED, Problems, Record, check_image

from ._common import check_split

FOLDERS = {"train": "train", "query": "query", "test": "gallery"}
PATTERN = "<vehicle id>_c<camera>_<anything>.jpg"
_NAME = re.compile(r"^(\d+)_c(\d+)(?:s\d+)?_.+\.[A-Za-z]+$")


def parse_crop_name(name: str) -> tuple[int, int] | None:
    """(vehicle id, camera id) of a name ``<vehicle id>_c<camera>_<anything>.jpg``; None when not that form."""
    m = _NAME.match(name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def folder_splits(root: str | os.PathLike) -> tuple[str, ...]:
    """The splits whose folder (train/, query/, gallery/) is present."""
    return tuple(split for split, name in FOLDERS.items() if (Path(root) / name).is_dir())


def _vehicle_folder(folder: Path, sink: Problems) -> list[tuple[Path, int, int]]:
    """(image, vehicle id, camera) of the images in one ``<vehicle id>/`` sub-folder."""
    if not folder.name.isdigit():
        if list_images(folder, recursive=True):
            sink.error(DataError(folder, f"sub-folder {folder.name!r} is not a vehicle id (a number); name it by "
                                         f"the vehicle id, or move its images up and name them {PATTERN}"))
        return []
    vid, out = int(folder.name), []
    for name in list_images(folder, recursive=True):
        path = folder / name
        parsed = parse_crop_name(path.name)
        if "/" in name:
            sink.error(DataError(path, f"image nested below the vehicle folder {folder.name}/; put it directly "
                                       "in that folder"))
        elif parsed is not None and parsed[0] != vid:
            sink.error(DataError(path, f"the name says vehicle {parsed[0]} but the image is in the folder of "
                                       f"vehicle {vid}"))
        else:
            out.append((path, vid, parsed[1] if parsed else UNLABELLED))
    return out


def read_folder_split(root: str | os.PathLike, split: str, check_images: bool = False,
                      problems: Problems | None = None) -> list[Record]:
    """Records of one split folder (vehicle and camera from names or sub-folders), sorted by path."""
    root = Path(root)
    split = check_split(split, root)
    sink = Problems.of(problems)
    folder = root / FOLDERS[split]
    if not folder.is_dir():
        sink.error(DataError(root, f"no {FOLDERS[split]}/ folder for the {split} split (the folder format has "
                                   "train/, query/ and gallery/)"))
        return []
    if not list_images(folder, recursive=True):
        sink.error(DataError(folder, f"no images in this split folder (expected {PATTERN} or <vehicle id>/ "
                                     "sub-folders)"))
        return []
    found, images = [], set(list_images(folder))
    for entry in sorted(folder.iterdir()):
        if entry.is_dir():
            found += _vehicle_folder(entry, sink)
        elif entry.name in images:
            parsed = parse_crop_name(entry.name)
            if parsed is None:
                sink.error(DataError(entry, f"image name does not follow {PATTERN} (e.g. 0002_c003_00084280_0.jpg); "
                                            "rename it, or put it in a sub-folder named by its vehicle id"))
                continue
            found.append((entry, *parsed))
    records = []
    for path, vid, cam in found:
        try:
            if check_images:
                check_image(path, path.name, path)
        except DataError as err:
            sink.error(err)
            continue
        records.append(Record(path=os.path.abspath(path), vehicle_id=vid, camera_id=cam))
    _warn_repeated_names(folder, records, sink)
    return records


def _warn_repeated_names(folder: Path, records: list[Record], sink: Problems) -> None:
    """Warn when file names repeat in a split: pose caches key images by file name and refuse repeats."""
    repeated = sorted(n for n, c in Counter(r.name for r in records).items() if c > 1)
    if repeated:
        shown = ", ".join(repeated[:5]) + (", ..." if len(repeated) > 5 else "")
        sink.warn(DataError(folder, f"{len(repeated)} file name(s) appear in more than one vehicle folder ({shown});"
                                    " pose caches (pamtri cache build) key images by file name: rename them to use "
                                    "pose channels"))
