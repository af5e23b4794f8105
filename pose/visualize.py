"""Drawing: keypoints coloured by PCK group (marker size by confidence), segments overlaid, sample grids."""
from __future__ import annotations

import os
from collections.abc import Sequence

import cv2
import numpy as np

from pamtri.common.atomic import atomic_write_bytes

from .keypoints import NUM_KEYPOINTS, NUM_SEGMENTS, PCK_GROUPS
from .segments import rasterise

# RGB colour per PCK group, and per keypoint through its group.
GROUP_COLOURS: dict[str, tuple[int, int, int]] = {
    "wheel": (230, 25, 75), "fender": (245, 130, 48), "back": (60, 180, 75),
    "front": (0, 130, 200), "back_windshield": (145, 30, 180), "front_windshield": (240, 50, 230),
}
KEYPOINT_COLOURS = np.zeros((NUM_KEYPOINTS, 3), np.uint8)
for _name, _idx in PCK_GROUPS.items():
    KEYPOINT_COLOURS[list(_idx)] = GROUP_COLOURS[_name]
SEGMENT_COLOURS = (cv2.applyColorMap(np.linspace(0, 255, NUM_SEGMENTS).astype(np.uint8)[:, None],
                                     cv2.COLORMAP_JET)[:, 0, ::-1]).astype(np.uint8)  # (13, 3) RGB


def draw_pose(image: np.ndarray, keypoints: np.ndarray, segments: np.ndarray | None = None,
              conf_threshold: float = 0.5, alpha: float = 0.35, radius: float = 4.0) -> np.ndarray:
    """uint8 RGB (H, W, 3) with segments (13, H, W) tinted and keypoints (36, 3) pixels drawn -> a new image.

    Marker radius grows with confidence (or visibility); keypoints below ``conf_threshold`` are hollow.
    ``segments=None`` rasterises them from the keypoints.
    """
    out = np.ascontiguousarray(image, dtype=np.uint8).copy()
    h, w = out.shape[:2]
    kps = np.asarray(keypoints, dtype=np.float64)
    if segments is None:
        segments = rasterise(kps, (h, w), conf_threshold)
    seg = np.asarray(segments).astype(bool)
    if seg.any():
        # Each pixel takes the colour of the last segment covering it.
        owner = np.where(seg.any(0), NUM_SEGMENTS - 1 - np.argmax(seg[::-1], axis=0), -1)
        tint = SEGMENT_COLOURS[np.clip(owner, 0, None)].astype(np.float32)
        mask = owner >= 0
        out[mask] = (out[mask] * (1 - alpha) + tint[mask] * alpha).astype(np.uint8)
    scale = max(h, w) / 256.0
    for k in np.argsort(kps[:, 2]):  # most confident drawn last, on top
        x, y, c = kps[k]
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        r = max(1, int(round(radius * scale * (0.4 + 0.6 * float(np.clip(c, 0, 1))))))
        colour = tuple(int(v) for v in KEYPOINT_COLOURS[k])
        cv2.circle(out, (int(round(x)), int(round(y))), r, colour, -1 if c >= conf_threshold else 1,
                   lineType=cv2.LINE_AA)
    return out


def _fit(image: np.ndarray, size: int) -> np.ndarray:
    h, w = image.shape[:2]
    s = size / max(h, w)
    resized = cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    canvas = np.zeros((size, size, 3), np.uint8)
    oy, ox = (size - resized.shape[0]) // 2, (size - resized.shape[1]) // 2
    canvas[oy:oy + resized.shape[0], ox:ox + resized.shape[1]] = resized
    return canvas


def pose_grid(images: Sequence[np.ndarray], ground_truth: Sequence[np.ndarray] | None,
              predictions: Sequence[np.ndarray], cell: int = 192, columns: int = 4) -> np.ndarray:
    """uint8 RGB grid: per sample, ground truth (if given) and prediction side by side, ``cell`` pixels each."""
    tiles = []
    for i, image in enumerate(images):
        pair = []
        if ground_truth is not None:
            pair.append(_fit(draw_pose(image, ground_truth[i]), cell))
        pair.append(_fit(draw_pose(image, predictions[i]), cell))
        tiles.append(np.concatenate(pair, axis=1))
    if not tiles:
        raise ValueError("no samples to draw")
    columns = max(1, min(columns, len(tiles)))
    rows = -(-len(tiles) // columns)
    th, tw = tiles[0].shape[:2]
    grid = np.full((rows * th + (rows - 1) * 4, columns * tw + (columns - 1) * 4, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        grid[r * (th + 4):r * (th + 4) + th, c * (tw + 4):c * (tw + 4) + tw] = tile
    return grid


def save_image(image: np.ndarray, path: str | os.PathLike) -> None:
    """Write uint8 RGB (H, W, 3) as PNG/JPEG (by suffix), atomically."""
    suffix = os.path.splitext(str(path))[1] or ".png"
    ok, buf = cv2.imencode(suffix, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"cannot encode an image as {suffix}")
    atomic_write_bytes(path, buf.tobytes())
