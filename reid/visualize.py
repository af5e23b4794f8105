"""Pictures of a ReID evaluation: the CMC curve and rank lists (query + top-k, green = same vehicle, red = not)."""
from __future__ import annotations

import io
import os
from collections.abc import Sequence

import cv2
import numpy as np

from pamtri.common.atomic import atomic_write_bytes
from pamtri.common.errors import DataError
from pamtri.data.images import read_image

GREEN = (40, 170, 40)   # RGB
RED = (220, 40, 40)
GREY = (90, 90, 90)
BLUE = (40, 90, 220)


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
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def image_tile(image: np.ndarray | None, size: tuple[int, int], colour: tuple[int, int, int], label: str = "",
         border: int = 4) -> np.ndarray:
    """An RGB uint8 (H, W, 3) image (None: a grey stand-in) fitted into a ``size`` (W, H) tile with a ``colour``
    (RGB) border and, when given, a caption under it -> the (H, W, 3) tile."""
    w, h = size
    text = 18 if label else 0
    inner = (w - 2 * border, h - 2 * border - text)
    img = np.full((inner[1], inner[0], 3), 127, np.uint8) if image is None else cv2.resize(
        image, inner, interpolation=cv2.INTER_AREA)
    out = np.full((h, w, 3), 255, np.uint8)
    out[:h - text] = colour
    out[border:border + inner[1], border:border + inner[0]] = img
    if label:
        cv2.putText(out, label, (border, h - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    return out


def tile_of_file(path: str | os.PathLike, size: tuple[int, int], colour: tuple[int, int, int], label: str = ""
                 ) -> np.ndarray:
    """:func:`image_tile` of an image file read by the one image reader (a grey stand-in when it cannot be read)."""
    try:
        image = read_image(path)
    except DataError:
        image = None
    return image_tile(image, size, colour, label)


def write_rank_sheet(rows: Sequence[Sequence[np.ndarray]], path: str | os.PathLike, gap: int = 4) -> None:
    """Rows of RGB tiles (one row per query) -> one PNG, rows left-aligned on white, ``gap`` pixels between."""
    lines = [np.concatenate(list(r), axis=1) for r in rows if len(r)]
    if not lines:
        lines = [np.full((8, 8, 3), 255, np.uint8)]
    width = max(line.shape[1] for line in lines)
    spaced = []
    for line in lines:
        spaced.append(np.pad(line, ((0, gap), (0, width - line.shape[1]), (0, 0)), constant_values=255))
    sheet = np.concatenate(spaced)[:-gap]
    ok, png = cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    atomic_write_bytes(path, png.tobytes())


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
    gap = np.full((tile[1], 12, 3), 255, np.uint8)
    rows = []
    for qi in queries:
        order = np.argsort(distmat[qi], kind="stable")
        if not ignore_cameras and query_cams is not None and gallery_cams is not None:
            junk = (g_ids[order] == q_ids[qi]) & (np.asarray(gallery_cams)[order] == np.asarray(query_cams)[qi])
            order = order[~junk]
        tiles = [tile_of_file(query_paths[qi], tile, GREY), gap]
        for g in order[:top]:
            tiles.append(tile_of_file(gallery_paths[g], tile, GREEN if g_ids[g] == q_ids[qi] else RED))
        while len(tiles) < top + 2:
            tiles.append(np.full((tile[1], tile[0], 3), 255, np.uint8))
        rows.append(tiles)
    write_rank_sheet(rows, path)
