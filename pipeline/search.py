"""Nearest-neighbour search over embeddings, optional re-ranking, and the rank-list picture."""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch


def search(query: np.ndarray, gallery: np.ndarray, top: int = 10, rerank: bool = False
           ) -> tuple[np.ndarray, np.ndarray]:
    """(Q, D) and (G, D) features -> (top indices (Q, top) nearest first, distances (Q, G)), Euclidean."""
    from pamtri.reid.metrics import pairwise_distance
    q, g = torch.from_numpy(np.asarray(query, np.float32)), torch.from_numpy(np.asarray(gallery, np.float32))
    dist = pairwise_distance(q, g).numpy()
    if rerank:
        from pamtri.reid.rerank import rerank as k_reciprocal
        dist = k_reciprocal(dist, pairwise_distance(q, q).numpy(), pairwise_distance(g, g).numpy())
    top = min(top, dist.shape[1])
    part = np.argpartition(dist, top - 1, axis=1)[:, :top]
    order = np.take_along_axis(part, np.argsort(np.take_along_axis(dist, part, 1), axis=1), 1)
    return order, dist


def draw_search(query_paths: Sequence[str], gallery_paths: Sequence[str], order: np.ndarray, dist: np.ndarray,
                path: str | os.PathLike, tile: tuple[int, int] = (96, 96)) -> None:
    """One row per query: the query (blue border), then its matches with their distances."""
    import cv2

    from pamtri.common.atomic import atomic_write_bytes
    from pamtri.data.images import read_image
    w, h = tile
    rows = []
    for qi, qp in enumerate(query_paths):
        cells = [_tile(read_image(qp), tile, (40, 90, 220), "query")]
        for gi in order[qi]:
            cells.append(_tile(read_image(gallery_paths[gi]), tile, (200, 200, 200), f"{dist[qi, gi]:.3f}"))
        rows.append(np.concatenate(cells, axis=1))
    width = max(r.shape[1] for r in rows)
    sheet = np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows])
    ok, buf = cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    atomic_write_bytes(path, buf.tobytes())


def _tile(image: np.ndarray, size: tuple[int, int], colour, label: str) -> np.ndarray:
    import cv2
    w, h = size
    img = cv2.resize(image, (w - 8, h - 22), interpolation=cv2.INTER_AREA)
    out = np.full((h, w, 3), 255, np.uint8)
    out[2:h - 18, 2:w - 2] = colour
    out[4:h - 18, 4:w - 4] = img[: h - 22, : w - 8]
    cv2.putText(out, label, (4, h - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    return out
