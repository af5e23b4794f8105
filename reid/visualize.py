"""Pictures of a ReID evaluation: the CMC curve and rank lists (query + top-k, green = same vehicle, red = not)."""
from __future__ import annotations

import os
from collections.abc import Sequence

import cv2
import numpy as np

from pamtri.common.atomic import atomic_write_bytes

GREEN = (40, 170, 40)   # BGR
RED = (40, 40, 220)
GREY = (90, 90, 90)


def plot_cmc(cmc: Sequence[float], path: str | os.PathLike, label: str = "") -> None:
    """Write a CMC curve (rank 1..len(cmc), matching rate in percent) as PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cmc = np.asarray(cmc, dtype=float)
    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=120)
    ranks = np.arange(1, len(cmc) + 1)
    ax.plot(ranks, 100 * cmc, marker="o", markersize=2.5, label=label or None)
    ax.set_xlabel("rank")
    ax.set_ylabel("matching rate (%)")
    ax.set_title("CMC")
    ax.set_xlim(1, max(len(cmc), 2))
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    if label:
        ax.legend(loc="lower right")
    fig.tight_layout()
    import io
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _tile(path: str, size: tuple[int, int], colour: tuple[int, int, int], border: int = 4) -> np.ndarray:
    w, h = size
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        img = np.full((h, w, 3), 127, np.uint8)
    img = cv2.resize(img, (w - 2 * border, h - 2 * border), interpolation=cv2.INTER_AREA)
    return cv2.copyMakeBorder(img, border, border, border, border, cv2.BORDER_CONSTANT, value=colour)


def rank_list_queries(num_queries: int) -> np.ndarray:
    """The query indices a rank list shows by default: up to 8, evenly spread over ``num_queries``."""
    return np.linspace(0, num_queries - 1, num=min(8, num_queries)).round().astype(int)


def rank_list_image(distmat: np.ndarray, query_paths: Sequence[str], gallery_paths: Sequence[str],
                    query_ids, gallery_ids, query_cams=None, gallery_cams=None, path: str | os.PathLike = "ranks.png",
                    queries: Sequence[int] | None = None, top: int = 10, tile: tuple[int, int] = (96, 96),
                    ignore_cameras: bool = False) -> None:
    """Write a PNG with one row per query: the query (grey border) then its ``top`` nearest gallery images,
    green when the same vehicle, red otherwise; same-vehicle-same-camera images are skipped (Market-1501 protocol)."""
    distmat = np.asarray(distmat)
    q_ids, g_ids = np.asarray(query_ids), np.asarray(gallery_ids)
    if queries is None:
        queries = rank_list_queries(len(q_ids))
    gap = 12
    rows = []
    for qi in queries:
        order = np.argsort(distmat[qi], kind="stable")
        if not ignore_cameras and query_cams is not None and gallery_cams is not None:
            junk = (g_ids[order] == q_ids[qi]) & (np.asarray(gallery_cams)[order] == np.asarray(query_cams)[qi])
            order = order[~junk]
        tiles = [_tile(query_paths[qi], tile, GREY), np.full((tile[1], gap, 3), 255, np.uint8)]
        for g in order[:top]:
            tiles.append(_tile(gallery_paths[g], tile, GREEN if g_ids[g] == q_ids[qi] else RED))
        while len(tiles) < top + 2:
            tiles.append(np.full((tile[1], tile[0], 3), 255, np.uint8))
        rows.append(np.concatenate(tiles, axis=1))
        rows.append(np.full((4, rows[-1].shape[1], 3), 255, np.uint8))
    canvas = np.concatenate(rows[:-1], axis=0) if rows else np.full((tile[1], tile[0], 3), 255, np.uint8)
    ok, png = cv2.imencode(".png", canvas)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    atomic_write_bytes(path, png.tobytes())
