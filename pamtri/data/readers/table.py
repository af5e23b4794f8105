"""The csv format: ``ROOT/train.csv``, ``ROOT/query.csv``, ``ROOT/gallery.csv`` (the gallery is the test split).

Each file has a header. Required columns: ``image`` (path relative to ROOT) and ``vehicle_id`` (an integer >= 0).
Optional: ``camera_id`` (``12`` or ``c012``), ``color`` and ``type`` (0-based class ids: your own numbering,
the same in every split), ``orientation`` (degrees 0-360), ``track`` (an integer tracklet id). An empty
optional cell means no label (-1, or NaN for the orientation). Any other column is an error naming it.

```
image,vehicle_id,camera_id,color
crops/0001_a.jpg,1,c003,4
crops/0001_b.jpg,1,c005,4
```
"""
from __future__ import annotations

import math
import os
from pathlib import Path

from pamtri.common.errors import DataError
from pamtri.data.labels import read_csv_rows
from pamtri.data.records import UNLABELLED, Problems, Record

from ._common import check_split, locate_image, parse_camera, parse_int

FILES = {"train": "train.csv", "query": "query.csv", "test": "gallery.csv"}
REQUIRED = ("image", "vehicle_id")
OPTIONAL = ("camera_id", "color", "type", "orientation", "track")


def table_splits(root: str | os.PathLike) -> tuple[str, ...]:
    """The splits whose file (train.csv, query.csv, gallery.csv) is present."""
    return tuple(split for split, name in FILES.items() if (Path(root) / name).is_file())


def _header(path: Path, line: int, header: list[str]) -> dict[str, int]:
    """Column name -> index; DataError naming missing, unknown or repeated columns."""
    unknown = [c for c in header if c not in REQUIRED + OPTIONAL]
    if unknown:
        raise DataError(path, f"unknown column{'s' * (len(unknown) > 1)} {', '.join(map(repr, unknown))} (valid: "
                              f"{', '.join(REQUIRED + OPTIONAL)})", line)
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise DataError(path, f"header lacks the required column{'s' * (len(missing) > 1)} {', '.join(missing)}",
                        line)
    repeated = sorted({c for c in header if header.count(c) > 1})
    if repeated:
        raise DataError(path, f"column{'s' * (len(repeated) > 1)} {', '.join(repeated)} appear more than once", line)
    return {c: header.index(c) for c in header}


def _optional_int(text: str, what: str, path: Path, line: int) -> int:
    """An integer >= 0, or -1 for an empty cell."""
    if text == "":
        return UNLABELLED
    value = parse_int(text, what, path, line)
    if value < 0:
        raise DataError(path, f"{what} {text!r} is negative (leave the cell empty for no label)", line)
    return value


def _orientation(text: str, path: Path, line: int) -> float:
    if text == "":
        return math.nan
    try:
        value = float(text)
    except ValueError:
        raise DataError(path, f"orientation {text!r} is not a number", line) from None
    if not math.isfinite(value) or not 0.0 <= value <= 360.0:
        raise DataError(path, f"orientation {text!r} is not within 0-360 degrees", line)
    return value


def _record(cells: dict[str, str], root: Path, path: Path, line: int, check_images: bool) -> Record:
    """One row -> Record; DataError naming the file, line and column of a bad value."""
    vid = parse_int(cells["vehicle_id"], "vehicle_id", path, line)
    if vid < 0:
        raise DataError(path, f"vehicle_id {cells['vehicle_id']!r} is negative", line)
    cam = cells.get("camera_id", "")
    return Record(path=locate_image(root, cells["image"], path, line, check_images), vehicle_id=vid,
                  camera_id=parse_camera(cam, path, line) if cam else UNLABELLED,
                  color_id=_optional_int(cells.get("color", ""), "color", path, line),
                  type_id=_optional_int(cells.get("type", ""), "type", path, line),
                  orientation=_orientation(cells.get("orientation", ""), path, line),
                  track_id=_optional_int(cells.get("track", ""), "track", path, line))


def read_table_split(root: str | os.PathLike, split: str, check_images: bool = False,
                     problems: Problems | None = None) -> list[Record]:
    """Records of one split file of the csv format, in file order."""
    root = Path(root)
    split = check_split(split, root)
    sink = Problems.of(problems)
    path = root / FILES[split]
    try:
        rows = list(read_csv_rows(path))
        if not rows:
            raise DataError(path, f"empty file: expected a header with {', '.join(REQUIRED)}")
        columns = _header(path, *rows[0])
    except DataError as err:
        sink.error(err)
        return []
    records, first = [], {}
    for line, row in rows[1:]:
        try:
            if len(row) != len(columns):
                raise DataError(path, f"expected {len(columns)} fields (as the header), got {len(row)}", line)
            cells = {c: row[i] for c, i in columns.items()}
            if cells["image"] in first:
                raise DataError(path, f"duplicate image {cells['image']!r} (first on line {first[cells['image']]})",
                                line)
            records.append(_record(cells, root, path, line, check_images))
            first[cells["image"]] = line
        except DataError as err:
            sink.error(err)
    return records
