"""The reference implementation's heatmap / segment folders, for users who migrate (36 + 13 grayscale JPEGs per image).

The reference stores, per image and split, 36 grayscale JPEGs of predicted heatmaps and 13 of segments:

```
<root>/heatmap_<split>/<image stem>/00.jpg ... 35.jpg
<root>/segment_<split>/<image stem>/00.jpg ... 12.jpg
```

Values are kept as stored (uint8 0-255, JPEG-compressed); converting them to the cache's representation
is the caller's job. Every missing, undecodable, unexpected or differently sized file raises DataError
naming it.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import cv2
import numpy as np

from pamtri.common.atomic import atomic_write_bytes
from pamtri.common.errors import DataError

from .keypoints import NUM_KEYPOINTS, NUM_SEGMENTS

HEATMAP_PREFIX = "heatmap_"
SEGMENT_PREFIX = "segment_"
_MAP_FILE = re.compile(r"^\d+\.jpe?g$", re.IGNORECASE)


def legacy_folders(root: str | os.PathLike, split: str, image_name: str) -> tuple[Path, Path]:
    """(heatmap folder, segment folder) of one image: ``<root>/heatmap_<split>/<stem>``, ``segment_<split>/<stem>``."""
    stem = Path(image_name).stem
    if not stem or stem in (".", "..") or Path(image_name).name != image_name:
        raise DataError(image_name, "expected a plain image file name (no folders)")
    root = Path(root)
    return root / f"{HEATMAP_PREFIX}{split}" / stem, root / f"{SEGMENT_PREFIX}{split}" / stem


def sibling_folder(folder: str | os.PathLike) -> Path:
    """The segment folder of a heatmap folder (``heatmap_<split>/<stem>`` -> ``segment_<split>/<stem>``) and back."""
    folder = Path(folder)
    parent = folder.parent.name
    for a, b in ((HEATMAP_PREFIX, SEGMENT_PREFIX), (SEGMENT_PREFIX, HEATMAP_PREFIX)):
        if parent.startswith(a):
            return folder.parent.parent / (b + parent[len(a):]) / folder.name
    raise DataError(folder, f"not inside a {HEATMAP_PREFIX}<split>/ or {SEGMENT_PREFIX}<split>/ folder; "
                            f"name the other folder explicitly")


def _read_stack(folder: Path, count: int, what: str) -> np.ndarray:
    """``count`` grayscale maps ``00.jpg`` .. from ``folder`` as uint8 (count, h, w)."""
    if not folder.is_dir():
        raise DataError(folder, f"{what} folder does not exist" if not folder.exists() else "is not a folder")
    expected = {f"{i:02d}.jpg" for i in range(count)}
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if p.name not in expected:
            hint = f" (a {what} folder holds 00.jpg-{count - 1:02d}.jpg)" if _MAP_FILE.match(p.name) else ""
            raise DataError(p, f"unexpected file in a {what} folder{hint}")
    maps = []
    for i in range(count):
        path = folder / f"{i:02d}.jpg"
        if not path.is_file():
            raise DataError(path, f"{what} {i} is missing (expected {count} files 00.jpg-{count - 1:02d}.jpg)")
        data = np.fromfile(path, dtype=np.uint8)
        img = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE) if data.size else None
        if img is None:
            raise DataError(path, f"cannot decode {what} {i} as an image" + (" (empty file)" if not data.size else ""))
        if maps and img.shape != maps[0].shape:
            raise DataError(path, f"{what} {i} is {img.shape[1]}x{img.shape[0]} pixels, but 00.jpg is "
                                  f"{maps[0].shape[1]}x{maps[0].shape[0]}")
        maps.append(img)
    return np.stack(maps)


def read_legacy_heatmaps(folder: str | os.PathLike) -> np.ndarray:
    """The 36 heatmaps of one image from a reference heatmap folder: uint8 (36, h, w), 0-255 as stored."""
    return _read_stack(Path(folder), NUM_KEYPOINTS, "heatmap")


def read_legacy_segments(folder: str | os.PathLike) -> np.ndarray:
    """The 13 segments of one image from a reference segment folder: uint8 (13, H, W), 0-255 as stored."""
    return _read_stack(Path(folder), NUM_SEGMENTS, "segment")


def read_legacy_maps(folder: str | os.PathLike, segment_folder: str | os.PathLike | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(heatmaps uint8 (36, h, w), segments uint8 (13, H, W)) of one image.

    ``folder`` is the image's heatmap folder ``heatmap_<split>/<stem>`` or its segment folder
    ``segment_<split>/<stem>``; the other one is found beside it unless ``segment_folder`` names it.
    """
    folder = Path(folder)
    if folder.parent.name.startswith(SEGMENT_PREFIX) and segment_folder is None:
        heat_dir, seg_dir = sibling_folder(folder), folder
    else:
        heat_dir = folder
        seg_dir = Path(segment_folder) if segment_folder is not None else sibling_folder(folder)
    return read_legacy_heatmaps(heat_dir), read_legacy_segments(seg_dir)


def _to_uint8(maps: np.ndarray, count: int, what: str) -> np.ndarray:
    maps = np.asarray(maps)
    if maps.ndim != 3 or maps.shape[0] != count or min(maps.shape[1:]) < 1:
        raise DataError(None, f"expected {what} of shape ({count}, h, w), got {maps.shape}")
    if maps.dtype == np.uint8:
        return maps
    if maps.dtype == bool:
        return maps.astype(np.uint8) * 255
    maps = maps.astype(np.float32)
    if not np.isfinite(maps).all():
        raise DataError(None, f"{what} contain NaN or infinity")
    return np.clip(np.rint(maps * 255.0), 0, 255).astype(np.uint8)


def _write_stack(folder: Path, maps: np.ndarray, quality: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, m in enumerate(maps):
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(m), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        if not ok:
            raise DataError(folder / f"{i:02d}.jpg", "JPEG encoding failed")
        atomic_write_bytes(folder / f"{i:02d}.jpg", buf.tobytes())


def write_legacy_maps(folder: str | os.PathLike, heatmaps: np.ndarray | None, segments: np.ndarray | None,
                      segment_folder: str | os.PathLike | None = None, quality: int = 95) -> None:
    """Write one image's maps in the reference layout (each file atomically): heatmaps (36, h, w) into
    ``folder`` (``heatmap_<split>/<stem>``), segments (13, H, W) into ``segment_folder`` or the sibling
    ``segment_<split>/<stem>``. uint8 is written as is; float in [0, 1] and bool are scaled to 0-255.
    """
    folder = Path(folder)
    if heatmaps is not None:
        _write_stack(folder, _to_uint8(heatmaps, NUM_KEYPOINTS, "heatmaps"), quality)
    if segments is not None:
        seg_dir = Path(segment_folder) if segment_folder is not None else sibling_folder(folder)
        _write_stack(seg_dir, _to_uint8(segments, NUM_SEGMENTS, "segments"), quality)
