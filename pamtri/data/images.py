"""Reading images robustly: every format quirk is converted, every broken file is a clear DataError."""
from __future__ import annotations

import io
import os
import struct
import warnings
from pathlib import Path

import cv2
import numpy as np

from pamtri.common.errors import DataError

MIN_SIDE = 4          # smaller images cannot hold a vehicle crop
MAX_SIDE = 4096       # larger images are decoded reduced / resized so the longer side fits
# The most pixels one decode may produce (10000 x 10000: 300 MB as RGB), checked on the header before decoding, so
# a decompression bomb (a 1 MB PNG of 20000 x 20000) is refused instead of taking gigabytes. JPEGs count at the
# reduced size libjpeg decodes them at.
MAX_PIXELS = 10000 * 10000
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}


def image_header(path: str | os.PathLike) -> tuple[int, int, int]:
    """(width, height, channels) read from a JPEG, PNG or BMP header without decoding; DataError otherwise."""
    path = Path(path)
    with open(path, "rb") as fh:
        return _header(fh, path)


def _header(fh, path) -> tuple[int, int, int]:
    """(width, height, channels) from the header bytes of an open binary file."""
    head = fh.read(32)
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        if len(head) < 26 or head[12:16] != b"IHDR":
            raise DataError(path, "truncated PNG header")
        w, h = struct.unpack(">II", head[16:24])
        return w, h, _PNG_CHANNELS.get(head[25], 3)
    if head.startswith(b"BM"):
        if len(head) < 30:
            raise DataError(path, "truncated BMP header")
        w, h = struct.unpack("<ii", head[18:26])
        bpp = struct.unpack("<H", head[28:30])[0]
        return w, abs(h), 1 if bpp <= 8 else (4 if bpp == 32 else 3)
    if not head.startswith(b"\xff\xd8"):
        raise DataError(path, "not a JPEG, PNG or BMP file (unknown header bytes)")
    fh.seek(2)
    while True:
        b = fh.read(1)
        if not b:
            raise DataError(path, "truncated JPEG: no frame header before the end of the file")
        if b != b"\xff":
            raise DataError(path, f"corrupt JPEG: expected a marker at byte {fh.tell() - 1}")
        marker = fh.read(1)
        while marker == b"\xff":
            marker = fh.read(1)
        if not marker:
            raise DataError(path, "truncated JPEG: no frame header before the end of the file")
        m = marker[0]
        if m == 0x01 or 0xD0 <= m <= 0xD8:
            continue
        if m in (0xD9, 0xDA):
            raise DataError(path, "corrupt JPEG: image data starts before any frame header")
        seg = fh.read(2)
        if len(seg) < 2:
            raise DataError(path, "truncated JPEG header")
        length = struct.unpack(">H", seg)[0]
        if m in _SOF:
            body = fh.read(6)
            if len(body) < 6:
                raise DataError(path, "truncated JPEG frame header")
            h, w = struct.unpack(">HH", body[1:5])
            return w, h, body[5]
        if length < 2:
            raise DataError(path, f"corrupt JPEG: segment length {length} at byte {fh.tell() - 2}")
        fh.seek(length - 2, os.SEEK_CUR)


def _webp_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) from the first 30 bytes of a WebP file (VP8X canvas, VP8 frame or VP8L header)."""
    kind = head[12:16]
    if kind == b"VP8X" and len(head) >= 30:
        return 1 + int.from_bytes(head[24:27], "little"), 1 + int.from_bytes(head[27:30], "little")
    if kind == b"VP8 " and len(head) >= 30:
        w, h = struct.unpack("<HH", head[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if kind == b"VP8L" and len(head) >= 25:
        bits = int.from_bytes(head[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    return None


def pixel_size(data: np.ndarray) -> tuple[int, int] | None:
    """(width, height) an encoded image declares in its header (JPEG, PNG, BMP, WebP here; other formats through
    Pillow's header reader), read without decoding; None when no header can be read."""
    head = data[:32].tobytes()
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return _webp_size(head)
    if head.startswith((b"\x89PNG", b"BM", b"\xff\xd8")):
        try:
            return _header(io.BytesIO(data[:1 << 20].tobytes()), "<image>")[:2]
        except (DataError, struct.error):
            return None
    try:

        from PIL import Image
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's own bomb warning: the limit here is MAX_PIXELS
            with Image.open(io.BytesIO(data.tobytes())) as im:
                return im.size
    except Exception as exc:  # noqa: BLE001 - any header Pillow cannot read: leave it to OpenCV's decoder
        if type(exc).__name__ == "DecompressionBombError":
            return (1 << 16, 1 << 16)
        return None


def too_small(width: int, height: int, min_side: int = MIN_SIDE) -> str | None:
    """The problem with an image of ``width`` x ``height`` pixels that is too small to use, or None."""
    if min(width, height) < min_side:
        return f"image is {width}x{height} pixels, smaller than the minimum {min_side}x{min_side}"
    return None


_REDUCED = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2))


def _reduced_jpeg_flags(data: np.ndarray, max_side: int | None) -> int | None:
    """For a JPEG at least twice ``max_side``: the flag that lets libjpeg decode it at 1/2, 1/4 or 1/8 size
    (still at least ``max_side``), so a huge image never takes its full size in memory; else None."""
    return _reduction(data, max_side)[1]


def _reduction(data: np.ndarray, max_side: int | None) -> tuple[int, int | None]:
    """(factor, imdecode flag) of :func:`_reduced_jpeg_flags`; (1, None) when decoded at full size."""
    if not max_side or data[:2].tobytes() != b"\xff\xd8":
        return 1, None
    try:
        w, h, _ = _header(io.BytesIO(data[:1 << 20].tobytes()), "<jpeg>")
    except (DataError, struct.error):
        return 1, None
    for factor, flag in _REDUCED:
        if max(w, h) >= factor * max_side:
            return factor, flag
    return 1, None


def read_image(path: str | os.PathLike, max_side: int | None = MAX_SIDE, min_side: int = MIN_SIDE) -> np.ndarray:
    """Decode an image file to RGB uint8 (H, W, 3): grayscale/RGBA/16-bit are converted, huge images shrunk
    so the longer side is ``max_side`` (None: kept at full size, for callers whose keypoints are in
    original-image pixels).

    Raises DataError naming the file for a missing, empty, truncated, corrupt or too small image, one whose
    header declares more than MAX_PIXELS to decode, or a folder where a file should be.
    """
    return read_image_and_size(path, max_side, min_side)[0]


def read_image_and_size(path: str | os.PathLike, max_side: int | None = MAX_SIDE, min_side: int = MIN_SIDE
                        ) -> tuple[np.ndarray, tuple[int, int]]:
    """:func:`read_image` and the image's size in the file (width, height) pixels, to map what is found on the
    (possibly shrunk) image back to original-image pixels."""
    path = Path(path)
    if path.is_dir():
        raise DataError(path, "is a folder, expected an image file")
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(path, "image file not found") from None
    except OSError as exc:
        raise DataError(path, f"cannot read image file ({exc.strerror})") from None
    return _decode(data, path, max_side, min_side)


def decode_image(data: bytes, source: str, max_side: int | None = MAX_SIDE, min_side: int = MIN_SIDE) -> np.ndarray:
    """:func:`read_image` of an encoded image held in memory (an upload): RGB uint8 (H, W, 3), with the same
    checks (empty, truncated, corrupt, too small, more than MAX_PIXELS declared in the header: refused before
    decoding); DataError naming ``source`` (a label for messages, never opened)."""
    return _decode(np.frombuffer(data, dtype=np.uint8), source, max_side, min_side)[0]


def _decode(data: np.ndarray, path, max_side: int | None, min_side: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The checks and decoding of :func:`read_image_and_size` on the encoded bytes ``data`` (uint8 (n,)) of
    ``path`` (a file name or a label)."""
    if data.size == 0:
        raise DataError(path, "image file is empty (0 bytes)")
    if data[:2].tobytes() == b"\xff\xd8" and b"\xff\xd9" not in data[-1024:].tobytes():
        raise DataError(path, "truncated JPEG (no end-of-image marker); re-copy or re-encode the file")
    size = pixel_size(data)
    if size is None:
        raise DataError(path, "cannot decode image (corrupt file or not an image format OpenCV reads)")
    factor, flags = _reduction(data, max_side)
    if (size[0] // factor) * (size[1] // factor) > MAX_PIXELS:
        raise DataError(path, f"image is {size[0]}x{size[1]} pixels, more than the {MAX_PIXELS:,} a decode may "
                              "produce (a decompression bomb?); shrink it first")
    flags = flags or cv2.IMREAD_UNCHANGED
    try:
        img = cv2.imdecode(data, flags)
    except cv2.error:  # e.g. more pixels than OpenCV's decoding limit
        img = None
    if img is None:
        raise DataError(path, "cannot decode image (corrupt file or not an image format OpenCV reads)")
    if img.ndim == 2:
        img = img[:, :, None]
    h, w = img.shape[:2]
    if (small := too_small(w, h, min_side)) is not None:
        raise DataError(path, small)
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
    if max_side and max(h, w) > max_side:
        scale = max_side / max(h, w)
        img = cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    # the header's size, unless the decoder turned the image (EXIF orientation of a reduced JPEG decode)
    fits = abs(w * factor - size[0]) <= factor and abs(h * factor - size[1]) <= factor
    return np.ascontiguousarray(img), (int(size[0]), int(size[1])) if fits else (w * factor, h * factor)


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def list_images(folder: str | os.PathLike, recursive: bool = False) -> list[str]:
    """Sorted names of the image files in ``folder`` (relative to it; with ``recursive``, in sub-folders too)."""
    folder = Path(folder)
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p.relative_to(folder).as_posix() for p in found if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def read_image_list(spec: str | os.PathLike) -> tuple[Path, list[str]]:
    """(base folder, image names relative to it) from a folder (sorted, recursive) or a list file (one path a
    line, relative to the list's folder; blank lines and # comments skipped)."""
    spec = Path(spec)
    if spec.is_dir():
        names = list_images(spec, recursive=True)
        if not names:
            raise DataError(spec, "no images in this folder")
        return spec, names
    if not spec.is_file():
        raise DataError(spec, "neither an image folder nor a list file")
    names = []
    for lineno, line in enumerate(spec.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not (spec.parent / line).is_file():
            raise DataError(spec, f"image {line!r} not found (paths are relative to the list's folder)", lineno)
        names.append(line)
    if not names:
        raise DataError(spec, "the list names no images")
    return spec.parent, names


# The ImageNet RGB mean and std (of images in [0, 1]) that every pretrained backbone here expects: the one
# definition, used by the pose stage's input, the ReID input (reid.inputs.ReidInput) and every export.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
