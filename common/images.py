"""Reading images robustly: every format quirk is converted, every broken file is a clear DataError."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from .errors import DataError

MIN_SIDE = 4          # smaller images cannot hold a vehicle crop
MAX_SIDE = 4096       # larger images are decoded reduced / resized so the longer side fits


def read_image(path: str | os.PathLike, max_side: int = MAX_SIDE, min_side: int = MIN_SIDE) -> np.ndarray:
    """Decode an image file to RGB uint8 (H, W, 3): grayscale/RGBA/16-bit are converted, huge images shrunk.

    Raises DataError naming the file for a missing, empty, truncated, corrupt or too small image, or a
    folder where a file should be.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(path, "is a folder, expected an image file")
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(path, "image file not found") from None
    except OSError as exc:
        raise DataError(path, f"cannot read image file ({exc.strerror})") from None
    if data.size == 0:
        raise DataError(path, "image file is empty (0 bytes)")
    if data[:2].tobytes() == b"\xff\xd8" and b"\xff\xd9" not in data[-1024:].tobytes():
        raise DataError(path, "truncated JPEG (no end-of-image marker); re-copy or re-encode the file")
    flags = cv2.IMREAD_UNCHANGED
    img = cv2.imdecode(data, flags)
    if img is None:
        raise DataError(path, "cannot decode image (corrupt file or not an image format OpenCV reads)")
    if img.ndim == 2:
        img = img[:, :, None]
    h, w = img.shape[:2]
    if min(h, w) < min_side:
        raise DataError(path, f"image is {w}x{h} pixels, smaller than the minimum {min_side}x{min_side}")
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype in (np.float32, np.float64):
        img = np.clip(img * 255.0, 0, 255).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise DataError(path, f"unsupported pixel type {img.dtype}")
    c = img.shape[2]
    if c == 1:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    elif c == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    elif c == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    else:
        raise DataError(path, f"image has {c} channels; expected 1 (gray), 3 (colour) or 4 (with alpha)")
    if max(h, w) > max_side:
        scale = max_side / max(h, w)
        img = cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(img)
