"""The reference implementation's label CSVs (SPEC section 6): pose labels and ReID labels, read and write.

Pose label row:  ``image,width,height,`` + 36 x ``x,y,visibility(0|1)`` (integers).
ReID label row:  ``image,vehicle_id,colour_id,type_id,`` + 36 x ``x,y,confidence`` (floats).
Colour and type ids in these files are 1-based (0 = unknown); records hold 0-based ids (-1 = unknown).
"""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np

from common.atomic import atomic_write_text
from common.errors import DataError

from .keypoints import NUM_KEYPOINTS
from .records import REAL, UNLABELLED, Record, parse_veri_name, resolve_image

KP_FIELDS = NUM_KEYPOINTS * 3
POSE_COLUMNS = 3 + KP_FIELDS
REID_COLUMNS = 4 + KP_FIELDS


def _rows(path: Path):
    if not path.is_file():
        raise DataError(path, "label file does not exist" if not path.exists() else "is not a file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    for lineno, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or all(not c.strip() for c in row):
            continue
        yield lineno, [c.strip() for c in row]


def _numbers(fields, path, lineno, first_col, kind=float):
    out = np.empty(len(fields), dtype=np.float64)
    for i, f in enumerate(fields):
        try:
            out[i] = kind(f)
        except ValueError:
            raise DataError(path, f"column {first_col + i + 1}: {f!r} is not a number", lineno) from None
    return out


def _keypoints(values: np.ndarray, path, lineno) -> np.ndarray:
    kps = values.reshape(NUM_KEYPOINTS, 3).astype(np.float32)
    bad = ~np.isfinite(kps)
    if bad.any():
        k = int(np.argwhere(bad)[0][0])
        raise DataError(path, f"keypoint {k} is not finite (NaN or infinity)", lineno)
    return kps


def _check_duplicate(seen: dict, name: str, path, lineno) -> None:
    if name in seen:
        raise DataError(path, f"duplicate image name {name!r} (first on line {seen[name]})", lineno)
    seen[name] = lineno


def _locate(name, image_root, path, lineno) -> str:
    if image_root is None:
        resolve_image(Path(path).parent, name, path, lineno)  # still refuse escaping names
        return name
    full = resolve_image(image_root, name, path, lineno)
    return str(full)


def read_pose_csv(path: str | os.PathLike, image_root: str | os.PathLike | None = None,
                  check_images: bool = False, domain: int = REAL) -> list[Record]:
    """Read a reference pose label CSV into records with (36, 3) keypoints (x, y, visibility 0/1)."""
    path = Path(path)
    records, seen = [], {}
    for lineno, row in _rows(path):
        if len(row) != POSE_COLUMNS:
            raise DataError(path, f"expected {POSE_COLUMNS} columns (image, width, height, 36 x (x, y, v)), "
                                  f"got {len(row)}", lineno)
        name = row[0]
        _check_duplicate(seen, name, path, lineno)
        values = _numbers(row[1:], path, lineno, 1)
        w, h = values[0], values[1]
        if not (w > 0 and h > 0 and w == int(w) and h == int(h)):
            raise DataError(path, f"image size {row[1]}x{row[2]} is not a positive integer width and height", lineno)
        kps = _keypoints(values[2:], path, lineno)
        vis = kps[:, 2]
        if not np.isin(vis, (0.0, 1.0)).all():
            k = int(np.argwhere(~np.isin(vis, (0.0, 1.0)))[0][0])
            raise DataError(path, f"keypoint {k}: visibility {vis[k]:g} is not 0 or 1", lineno)
        full = _locate(name, image_root, path, lineno)
        if check_images and not os.path.isfile(full):
            raise DataError(path, f"image {name!r} not found at {full}", lineno)
        ids = parse_veri_name(name)
        records.append(Record(path=full, vehicle_id=ids[0] if ids else UNLABELLED,
                              camera_id=ids[1] if ids else UNLABELLED, domain=domain,
                              keypoints=kps, width=int(w), height=int(h)))
    return records


def read_reid_csv(path: str | os.PathLike, image_root: str | os.PathLike | None = None,
                  check_images: bool = False, domain: int = REAL) -> list[Record]:
    """Read a reference ReID label CSV into records (0-based colour/type, keypoints x, y, confidence)."""
    path = Path(path)
    records, seen = [], {}
    for lineno, row in _rows(path):
        if len(row) != REID_COLUMNS:
            raise DataError(path, f"expected {REID_COLUMNS} columns (image, vehicle id, colour, type, "
                                  f"36 x (x, y, confidence)), got {len(row)}", lineno)
        name = row[0]
        _check_duplicate(seen, name, path, lineno)
        ids = _numbers(row[1:4], path, lineno, 1)
        if not all(v == int(v) for v in ids):
            raise DataError(path, f"vehicle/colour/type ids {row[1:4]} must be integers", lineno)
        vid, color, vtype = (int(v) for v in ids)
        kps = _keypoints(_numbers(row[4:], path, lineno, 4), path, lineno)
        full = _locate(name, image_root, path, lineno)
        if check_images and not os.path.isfile(full):
            raise DataError(path, f"image {name!r} not found at {full}", lineno)
        parsed = parse_veri_name(name)
        records.append(Record(path=full, vehicle_id=vid, camera_id=parsed[1] if parsed else UNLABELLED,
                              color_id=color - 1 if color > 0 else UNLABELLED,
                              type_id=vtype - 1 if vtype > 0 else UNLABELLED,
                              domain=domain, keypoints=kps))
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
