"""The reference implementation's label CSVs (docs/facts.md, "Label files"): pose and ReID labels, read and write.

Pose label row:  ``image,width,height,`` + 36 x ``x,y,visibility(0|1)`` (integers).
ReID label row:  ``image,vehicle_id,colour_id,type_id,`` + 36 x ``x,y,confidence`` (floats).
Colour and type ids in these files are 1-based (0 = unknown); records hold 0-based ids (-1 = unknown).

Readers are strict by default (the first malformed row raises DataError naming the file and line); pass
``problems=Problems()`` to collect every problem instead and skip the bad rows.
"""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np

from pamtri.common.atomic import atomic_write_text
from pamtri.common.errors import DataError
from pamtri.pose.keypoints import NUM_KEYPOINTS

from .records import REAL, UNLABELLED, Problems, Record, check_image, parse_veri_name, resolve_image

KP_FIELDS = NUM_KEYPOINTS * 3
POSE_COLUMNS = 3 + KP_FIELDS
REID_COLUMNS = 4 + KP_FIELDS


def read_csv_rows(path: str | os.PathLike):
    """Yield (line number, stripped cells) of a CSV file, skipping blank lines; DataError when unreadable."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "label file does not exist" if not path.exists() else "is not a file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    reader = csv.reader(io.StringIO(text))
    try:
        for row in reader:
            if not row or all(not c.strip() for c in row):
                continue
            yield reader.line_num, [c.strip() for c in row]
    except csv.Error as exc:
        raise DataError(path, f"not valid CSV ({exc})", reader.line_num) from None


def parse_numbers(fields, path, lineno, first_col: int) -> np.ndarray:
    """Fields as float64; DataError naming the 1-based column of the first non-number."""
    try:
        return np.array(fields, dtype=np.float64)
    except ValueError:
        pass
    for i, f in enumerate(fields):
        try:
            float(f)
        except ValueError:
            raise DataError(path, f"column {first_col + i + 1}: {f!r} is not a number", lineno) from None
    raise DataError(path, "a field is not a number", lineno)  # unreachable in practice


def _column_count_message(got: int, fixed: int, what: str) -> str:
    third = "v" if fixed == 3 else "confidence"
    msg = f"expected {fixed + KP_FIELDS} columns ({what}, 36 x (x, y, {third})), got {got}"
    extra = got - fixed
    if extra > 0 and extra % 3 == 0 and extra != KP_FIELDS:
        msg += f": {extra // 3} keypoints instead of {NUM_KEYPOINTS}"
    return msg


def _keypoints(values: np.ndarray, path, lineno) -> np.ndarray:
    kps = values.reshape(NUM_KEYPOINTS, 3).astype(np.float32)
    bad = ~np.isfinite(kps)
    if bad.any():
        k = int(np.argwhere(bad)[0][0])
        raise DataError(path, f"keypoint {k} is not finite (NaN or infinity)", lineno)
    return kps


def _as_int(value: float, text: str, what: str, path, lineno) -> int:
    if not np.isfinite(value) or value != int(value):
        raise DataError(path, f"{what} {text!r} is not an integer", lineno)
    return int(value)


def _check_duplicate(seen: dict, name: str, path, lineno) -> None:
    if name in seen:
        raise DataError(path, f"duplicate image name {name!r} (first on line {seen[name]})", lineno)


def _locate(name, image_root, path, lineno, check_images: bool) -> str:
    if image_root is None:
        resolve_image(".", name, path, lineno)  # still refuse escaping names
        return name
    full = str(resolve_image(image_root, name, path, lineno))
    if check_images:
        check_image(full, name, path, lineno)
    return full


def _class_id(value: int, text: str, what: str, limit: int | None, path, lineno) -> int:
    """1-based file id (0 = unknown) -> 0-based record id (-1 = unknown), range-checked."""
    if value < 0 or (limit is not None and value > limit):
        allowed = f"0 (unknown) or 1-{limit}" if limit is not None else "0 (unknown) or a positive id"
        raise DataError(path, f"{what} id {text!r} out of range: expected {allowed}", lineno)
    return value - 1 if value > 0 else UNLABELLED


def read_pose_csv(path: str | os.PathLike, image_root: str | os.PathLike | None = None,
                  check_images: bool = False, domain: int = REAL,
                  problems: Problems | None = None) -> list[Record]:
    """Read a reference pose label CSV into records with (36, 3) keypoints (x, y, visibility 0/1), pixels."""
    path = Path(path)
    sink = Problems.of(problems)
    records, seen = [], {}
    try:
        rows = list(read_csv_rows(path))
    except DataError as err:
        sink.error(err)
        return records
    for lineno, row in rows:
        try:
            if len(row) != POSE_COLUMNS:
                raise DataError(path, _column_count_message(len(row), 3, "image, width, height"), lineno)
            name = row[0]
            _check_duplicate(seen, name, path, lineno)
            seen[name] = lineno
            values = parse_numbers(row[1:], path, lineno, 1)
            w, h = values[0], values[1]
            if not (np.isfinite(w) and np.isfinite(h) and w > 0 and h > 0 and w == int(w) and h == int(h)):
                raise DataError(path, f"image size {row[1]}x{row[2]} is not a positive integer width and height",
                                lineno)
            kps = _keypoints(values[2:], path, lineno)
            vis = kps[:, 2]
            bad = (vis != 0.0) & (vis != 1.0)
            if bad.any():
                k = int(np.argwhere(bad)[0][0])
                raise DataError(path, f"keypoint {k}: visibility {vis[k]:g} is not 0 or 1", lineno)
            full = _locate(name, image_root, path, lineno, check_images)
        except DataError as err:
            sink.error(err)
            continue
        ids = parse_veri_name(name)
        records.append(Record(path=full, vehicle_id=ids[0] if ids else UNLABELLED,
                              camera_id=ids[1] if ids else UNLABELLED, domain=domain,
                              keypoints=kps, width=int(w), height=int(h)))
    return records


def read_reid_csv(path: str | os.PathLike, image_root: str | os.PathLike | None = None,
                  check_images: bool = False, domain: int = REAL, problems: Problems | None = None,
                  num_colors: int | None = None, num_types: int | None = None) -> list[Record]:
    """Read a reference ReID label CSV into records (0-based colour/type, keypoints x, y, confidence in pixels).

    ``num_colors`` / ``num_types`` bound the 1-based ids of the file (None: any id >= 0).
    """
    path = Path(path)
    sink = Problems.of(problems)
    records, seen = [], {}
    try:
        rows = list(read_csv_rows(path))
    except DataError as err:
        sink.error(err)
        return records
    for lineno, row in rows:
        try:
            if len(row) != REID_COLUMNS:
                raise DataError(path, _column_count_message(len(row), 4, "image, vehicle id, colour, type"), lineno)
            name = row[0]
            _check_duplicate(seen, name, path, lineno)
            seen[name] = lineno
            values = parse_numbers(row[1:], path, lineno, 1)
            vid = _as_int(values[0], row[1], "vehicle id", path, lineno)
            color = _as_int(values[1], row[2], "colour id", path, lineno)
            vtype = _as_int(values[2], row[3], "type id", path, lineno)
            if vid < UNLABELLED:
                raise DataError(path, f"vehicle id {row[1]!r} is negative", lineno)
            color = _class_id(color, row[2], "colour", num_colors, path, lineno)
            vtype = _class_id(vtype, row[3], "type", num_types, path, lineno)
            kps = _keypoints(values[3:], path, lineno)
            full = _locate(name, image_root, path, lineno, check_images)
        except DataError as err:
            sink.error(err)
            continue
        parsed = parse_veri_name(name)
        records.append(Record(path=full, vehicle_id=vid, camera_id=parsed[1] if parsed else UNLABELLED,
                              color_id=color, type_id=vtype, domain=domain, keypoints=kps))
    return records


def _fmt_kps(kps: np.ndarray, integer: bool) -> list[str]:
    if integer:
        return [str(int(round(float(v)))) for v in kps.reshape(-1)]
    return [f"{float(v):.3f}" for v in kps.reshape(-1)]


def write_pose_csv(records: list[Record], path: str | os.PathLike) -> None:
    """Write records as a reference pose label CSV (integers; visibility = keypoint[:, 2] >= 0.5)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for r in records:
        if r.keypoints is None:
            raise DataError(path, f"record {r.name!r} has no keypoints to write")
        kps = np.asarray(r.keypoints, dtype=np.float64).copy()
        kps[:, 2] = kps[:, 2] >= 0.5
        w.writerow([r.name, int(r.width), int(r.height)] + _fmt_kps(kps, integer=True))
    atomic_write_text(path, buf.getvalue())


def write_reid_csv(records: list[Record], path: str | os.PathLike) -> None:
    """Write records as a reference ReID label CSV (1-based colour/type, 0 = unknown; 3-decimal floats)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for r in records:
        kps = np.zeros((NUM_KEYPOINTS, 3)) if r.keypoints is None else r.keypoints
        w.writerow([r.name, int(r.vehicle_id), int(r.color_id) + 1 if r.color_id >= 0 else 0,
                    int(r.type_id) + 1 if r.type_id >= 0 else 0] + _fmt_kps(np.asarray(kps), integer=False))
    atomic_write_text(path, buf.getvalue())
