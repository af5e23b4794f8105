"""Contact sheets: samples with keypoints coloured by PCK group (hollow = invisible) and translucent segments."""
from __future__ import annotations

import cv2
import numpy as np

from pamtri.pose.keypoints import NUM_SEGMENTS, PCK_GROUP_TITLES, PCK_GROUPS, keypoint_group
from pamtri.pose.segments import rasterise

from .render import render_sample

# BGR colours per PCK group and per segment (distinct, readable on dark and light paint).
GROUP_BGR = {"wheel": (40, 220, 255), "fender": (255, 160, 40), "back": (60, 60, 255), "front": (80, 255, 80),
             "back_windshield": (255, 80, 255), "front_windshield": (255, 255, 60)}
assert set(GROUP_BGR) == set(PCK_GROUPS)
_KP_BGR = np.array([GROUP_BGR[keypoint_group(k)] for k in range(36)], dtype=np.float64)
_SEG_BGR = np.array([cv2.cvtColor(np.uint8([[[int(180 * s / NUM_SEGMENTS), 200, 255]]]), cv2.COLOR_HSV2BGR)[0, 0]
                     for s in range(NUM_SEGMENTS)], dtype=np.float32)


def annotate(image: np.ndarray, keypoints: np.ndarray, tile: int = 192, alpha: float = 0.25) -> np.ndarray:
    """Letterbox a BGR image (H, W, 3) into a tile x tile canvas and draw segments and keypoints (36, 3) px."""
    h, w = image.shape[:2]
    s = tile / max(h, w)
    nw, nh = max(1, int(round(w * s))), max(1, int(round(h * s)))
    ox, oy = (tile - nw) // 2, (tile - nh) // 2
    canvas = np.full((tile, tile, 3), 32, dtype=np.uint8)
    canvas[oy:oy + nh, ox:ox + nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    kps = np.asarray(keypoints, dtype=np.float64).copy()
    # pixel centres at integers: x' = (x + 0.5) * s - 0.5 (+ offset)
    kps[:, 0] = (kps[:, 0] + 0.5) * (nw / w) - 0.5 + ox
    kps[:, 1] = (kps[:, 1] + 0.5) * (nh / h) - 0.5 + oy
    segs = rasterise(kps, (tile, tile)).astype(np.float32)            # (13, T, T), visibility as confidence
    cover = segs.sum(axis=0)
    if cover.any():
        colour = np.einsum("shw,sc->hwc", segs, _SEG_BGR) / np.maximum(cover, 1)[..., None]
        a = (alpha * (cover > 0))[..., None]
        canvas = (canvas * (1 - a) + colour * a).astype(np.uint8)
    radius = max(3, tile // 50)
    for k in np.argsort(kps[:, 2], kind="stable"):                    # invisible first, visible on top
        x, y, v = kps[k]
        c = tuple(float(t) for t in _KP_BGR[k])
        centre = (int(round(x * 16)), int(round(y * 16)))
        if v >= 0.5:
            cv2.circle(canvas, centre, radius * 16, (0, 0, 0), -1, cv2.LINE_AA, 4)
            cv2.circle(canvas, centre, radius * 16 - 20, c, -1, cv2.LINE_AA, 4)
        else:
            cv2.circle(canvas, centre, radius * 16 - 8, c, 1, cv2.LINE_AA, 4)
    return canvas


def contact_sheet(images: list[np.ndarray], keypoints: list[np.ndarray], cols: int = 6, tile: int = 192,
                  captions: list[str] | None = None) -> np.ndarray:
    """Grid of annotated samples (BGR uint8) with a legend row of the PCK group colours at the bottom."""
    n = len(images)
    rows = max(1, -(-n // cols))
    cols = min(cols, max(n, 1))
    sheet = np.full((rows * tile + 28, cols * tile, 3), 255, dtype=np.uint8)
    for i, (img, kps) in enumerate(zip(images, keypoints)):
        r, c = divmod(i, cols)
        t = annotate(img, kps, tile)
        if captions:
            cv2.putText(t, captions[i], (3, tile - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1, cv2.LINE_AA)
        sheet[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile] = t
    x, y = 6, rows * tile + 19
    for name, colour in GROUP_BGR.items():
        cv2.circle(sheet, (x + 5, y - 4), 5, colour, -1, cv2.LINE_AA)
        cv2.circle(sheet, (x + 5, y - 4), 5, (0, 0, 0), 1, cv2.LINE_AA)
        label = PCK_GROUP_TITLES[name]
        cv2.putText(sheet, label, (x + 14, y), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        x += 22 + cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)[0][0]
    cv2.putText(sheet, "filled = visible, hollow = invisible", (x + 8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                (90, 90, 90), 1, cv2.LINE_AA)
    return sheet


def sample_sheet(seed: int = 0, n: int = 18, size: int = 160, cols: int = 6, tile: int = 160,
                 styles: tuple[str, ...] = ("synthetic", "realistic")) -> np.ndarray:
    """Contact sheet (BGR uint8) of ``n`` fresh renders at ``size`` px, split evenly between ``styles``, one
    random identity and camera each (render_sample with seeds seed*1000 + i)."""

    images, kps, captions = [], [], []
    per_style = -(-n // len(styles))
    for i in range(n):
        style = styles[min(i // per_style, len(styles) - 1)]
        img, k, meta = render_sample(seed * 1000 + i, size=size, style=style)
        images.append(img)
        kps.append(k)
        captions.append(f"{style[:5]} yaw {meta['orientation_deg']:.0f}")
    return contact_sheet(images, kps, cols=cols, tile=tile, captions=captions)
