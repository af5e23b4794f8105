"""Our synthetic generator's layout (``pamtri synth``): VeRi-style folders plus both reference CSVs and a meta CSV.

```
image_{train,query,test}/            <id:4>_c<camera:3>_<frame:8>_<n>.jpg
name_{split}.txt                     one image name per line
label_{split}.csv                    reference ReID labels (colour/type 1-based, keypoints x, y, confidence)
pose_label_{split}.csv               reference pose labels (width, height, keypoints x, y, visibility 0/1)
meta_{split}.csv                     header ``image,vehicle_id,camera_id,color_id,type_id,orientation_deg,domain``
                                     (0-based ids, -1 = none; degrees, empty = none; ``real`` / ``synthetic``)
synth.json                           generator arguments and version
```

The meta CSV is the primary source (one record per row, in its order); the pose CSV gives keypoints with
visibility and the image size; the ReID CSV and the name list are cross-checked against it.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

from pamtri.common.errors import DataError
from pamtri.data.attributes import VERI_COLORS, VERI_TYPES
from pamtri.data.labels import read_csv_rows, read_pose_csv, read_reid_csv
from pamtri.data.records import DOMAIN_NAMES, Problems, Record

from ._common import check_split, image_dir, locate_image, read_name_list

META_COLUMNS = ("image", "vehicle_id", "camera_id", "color_id", "type_id", "orientation_deg", "domain")
_DOMAINS = {v: k for k, v in DOMAIN_NAMES.items()}


def _int_field(text: str, what: str, lo: int, hi: int | None, path, line) -> int:
    try:
        value = int(text)
    except ValueError:
        raise DataError(path, f"{what} {text!r} is not an integer", line) from None
    if value < lo or (hi is not None and value > hi):
        rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise DataError(path, f"{what} {value} out of range ({rng}; -1 = no label)", line)
    return value


def _orientation(text: str, path, line) -> float:
    if text == "" or text.lower() == "nan":
        return math.nan
    try:
        value = float(text)
    except ValueError:
        raise DataError(path, f"orientation_deg {text!r} is not a number", line) from None
    if not math.isfinite(value) or not 0.0 <= value <= 360.0:
        raise DataError(path, f"orientation_deg {text!r} is not within 0-360 degrees", line)
    return value


def read_meta_csv(path: str | os.PathLike, image_root: str | os.PathLike, check_images: bool = False,
                  problems: Problems | None = None, rejected: set | None = None) -> list[tuple[int, Record]]:
    """(line, record) per row of a ``meta_<split>.csv`` (header required; 0-based ids, degrees, domain name).

    ``rejected`` (lenient mode) receives the image names of rows that were reported and skipped.
    """
    path = Path(path)
    sink = Problems.of(problems)
    rejected = set() if rejected is None else rejected
    try:
        rows = list(read_csv_rows(path))
    except DataError as err:
        sink.error(err)
        return []
    if not rows:
        sink.error(DataError(path, "empty file: expected a header row " + ",".join(META_COLUMNS)))
        return []
    header_line, header = rows[0]
    missing = [c for c in META_COLUMNS if c not in header]
    if missing:
        sink.error(DataError(path, f"header lacks column(s) {', '.join(missing)}; expected "
                                   + ",".join(META_COLUMNS), header_line))
        return []
    col = {c: header.index(c) for c in META_COLUMNS}
    out, seen = [], {}
    for line, row in rows[1:]:
        try:
            if len(row) != len(header):
                raise DataError(path, f"expected {len(header)} columns (as the header), got {len(row)}", line)
            name = row[col["image"]]
            if name in seen:
                raise DataError(path, f"duplicate image name {name!r} (first on line {seen[name]})", line)
            seen[name] = line
            vid = _int_field(row[col["vehicle_id"]], "vehicle_id", -1, None, path, line)
            cam = _int_field(row[col["camera_id"]], "camera_id", -1, None, path, line)
            color = _int_field(row[col["color_id"]], "color_id", -1, len(VERI_COLORS) - 1, path, line)
            vtype = _int_field(row[col["type_id"]], "type_id", -1, len(VERI_TYPES) - 1, path, line)
            orient = _orientation(row[col["orientation_deg"]], path, line)
            dom = row[col["domain"]].lower()
            if dom not in _DOMAINS:
                raise DataError(path, f"domain {row[col['domain']]!r} is not one of {', '.join(_DOMAINS)}", line)
            full = locate_image(Path(image_root), name, path, line, check_images)
        except DataError as err:
            sink.error(err)
            if row and row[0]:
                rejected.add(row[col["image"]] if len(row) > col["image"] else row[0])
            continue
        out.append((line, Record(path=full, vehicle_id=vid, camera_id=cam, color_id=color, type_id=vtype,
                                 orientation=orient, domain=_DOMAINS[dom])))
    return out


def read_synth_split(root: str | os.PathLike, split: str, check_images: bool = False,
                     problems: Problems | None = None) -> list[Record]:
    """Records of one split of a ``pamtri synth`` tree: ids, camera, colour, type, orientation, domain,
    keypoints (36, 3) x, y in pixels + visibility 0/1, width and height."""
    root = Path(root)
    split = check_split(split, root)
    sink = Problems.of(problems)
    meta_path = root / f"meta_{split}.csv"
    rejected: set[str] = set()  # rows already reported: their other files' rows are not reported again
    rows = read_meta_csv(meta_path, image_dir(root, split), check_images, sink, rejected)
    by_name = {r.name: (line, r) for line, r in rows}

    pose_path = root / f"pose_label_{split}.csv"
    if pose_path.exists():
        pose_lines = _lines_by_name(pose_path)
        for p in read_pose_csv(pose_path, problems=sink):
            hit = by_name.get(p.name)
            if hit is None:
                if p.name not in rejected:
                    sink.error(DataError(pose_path, f"image {p.name!r} is not in {meta_path.name}",
                                         pose_lines.get(p.name)))
                continue
            hit[1].keypoints, hit[1].width, hit[1].height = p.keypoints, p.width, p.height
        for line, r in rows:
            if r.keypoints is None and r.name not in pose_lines:
                sink.error(DataError(meta_path, f"image {r.name!r} has no row in {pose_path.name}", line))

    reid_path = root / f"label_{split}.csv"
    if reid_path.exists():
        reid_lines = _lines_by_name(reid_path)
        for q in read_reid_csv(reid_path, problems=sink, num_colors=len(VERI_COLORS), num_types=len(VERI_TYPES)):
            line = reid_lines.get(q.name)
            hit = by_name.get(q.name)
            if hit is None:
                if q.name not in rejected:
                    sink.error(DataError(reid_path, f"image {q.name!r} is not in {meta_path.name}", line))
                continue
            r = hit[1]
            for what, a, b in (("vehicle id", q.vehicle_id, r.vehicle_id), ("colour", q.color_id, r.color_id),
                               ("type", q.type_id, r.type_id)):
                if a != b:
                    sink.error(DataError(reid_path, f"{what} of {q.name!r} (0-based {a}) disagrees with "
                                                    f"{meta_path.name} line {hit[0]} ({b})", line))

    name_path = root / f"name_{split}.txt"
    if name_path.exists():
        listed = read_name_list(name_path, sink)
        listed_names = {n for _, n in listed}
        for line, n in listed:
            if n not in by_name and n not in rejected:
                sink.error(DataError(name_path, f"image {n!r} is not in {meta_path.name}", line))
        for line, r in rows:
            if r.name not in listed_names:
                sink.error(DataError(meta_path, f"image {r.name!r} is not listed in {name_path.name}", line))
    return [r for _, r in rows]


def _lines_by_name(path: Path) -> dict[str, int]:
    """First line of each image name in a label CSV (to point problems found after parsing at their line)."""
    out: dict[str, int] = {}
    try:
        for line, row in read_csv_rows(path):
            if row:
                out.setdefault(row[0], line)
    except DataError:
        pass  # the reader itself reports it
    return out
