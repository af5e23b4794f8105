"""Galleries: image embeddings in an .npz (``pamtri embed``), nearest-neighbour search over them with optional
re-ranking (``pamtri search``), and the rank-list picture."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from pamtri.common.errors import DataError

# What every gallery file holds besides the embed_arrays outputs.
GALLERY_KEYS = ("features", "paths", "reid_weights")


def image_source(images: str | os.PathLike | None = None, data: str | os.PathLike | None = None, split: str = "test",
                 fmt: str = "auto", test_size: int | None = None) -> tuple[Path, list[str]]:
    """(base folder, image names relative to it) of a folder or list file ``images``, or of a data set split
    (``data`` root in format ``fmt``; ``test_size``: the VehicleID / VERI-Wild test set)."""
    from pamtri.data.images import read_image_list
    if images is not None:
        return read_image_list(images)
    from .cachebuild import split_images
    base = Path(data)
    return base, [os.path.relpath(p, base) for p in split_images(base, split, fmt, test_size)]


def embed_to_file(source: tuple[Path, list[str]], out: str | os.PathLike, pose_weights: str | os.PathLike | None,
                  reid_weights: str | os.PathLike, **pipeline_options) -> tuple[int, int]:
    """Embed every image of ``source`` (base folder, names: :func:`image_source`) into the gallery .npz ``out``:
    names, paths (absolute), features (N, D), the other ``Pipeline.embed`` outputs, both weights paths and the
    ReID checkpoint's SHA-256 (the model identity ``pamtri index`` checks) ->
    (N, D). ``pipeline_options``: device, precision, batch_size, flip_test, compile of ``Pipeline.from_weights``."""
    import io

    from pamtri.common.atomic import atomic_write_bytes
    from pamtri.pose.cache import file_sha256

    from .infer import Pipeline
    base, names = source
    pipe = Pipeline.from_weights(pose_weights, reid_weights, **pipeline_options)
    arrays = pipe.embed([str(base / n) for n in names], progress=True)
    buf = io.BytesIO()
    np.savez(buf, names=np.asarray(names), paths=np.asarray([str((base / n).resolve()) for n in names]),
             pose_weights=np.asarray(str(pose_weights or "")), reid_weights=np.asarray(str(reid_weights)),
             reid_weights_sha256=np.asarray(file_sha256(reid_weights)), **arrays)
    atomic_write_bytes(out, buf.getvalue())
    return len(names), int(arrays["features"].shape[1])


def read_gallery(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of a gallery file written by :func:`embed_to_file`; DataError naming the file otherwise."""
    try:
        gallery = dict(np.load(path, allow_pickle=False))
    except (OSError, ValueError) as exc:
        raise DataError(path, f"cannot read gallery file ({exc}); write it with `pamtri embed`") from None
    missing = [k for k in GALLERY_KEYS if k not in gallery]
    if missing:
        raise DataError(path, f"not a `pamtri embed` file (missing {', '.join(missing)})")
    return gallery


def search_gallery(query: Sequence[str], gallery_path: str | os.PathLike, out: str | os.PathLike, *,
                   top: int = 10, rerank: bool = False, pose_weights: str | os.PathLike | None = None,
                   reid_weights: str | os.PathLike | None = None, **pipeline_options
                   ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Embed the ``query`` image files with the weights the gallery file records (or those given), search the
    gallery and draw the rank list PNG ``out`` -> (gallery paths, top indices (Q, top), distances (Q, G))."""
    from .infer import Pipeline
    gallery = read_gallery(gallery_path)
    pose_w = pose_weights or str(gallery["pose_weights"]) or None
    reid_w = reid_weights or str(gallery["reid_weights"])
    pipe = Pipeline.from_weights(pose_w, reid_w, **pipeline_options)
    order, dist = search(pipe.embed(list(query))["features"], gallery["features"], top, rerank=rerank)
    paths = [str(p) for p in gallery["paths"]]
    draw_search(query, paths, order, np.take_along_axis(dist, order, 1), out)
    return paths, order, dist


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
    """One row per query: the query (blue border), then its matches ``order`` (Q, top) gallery indices (-1: none)
    with their distances ``dist`` (Q, top)."""
    import cv2

    from pamtri.common.atomic import atomic_write_bytes
    from pamtri.data.images import read_image
    w, h = tile
    rows = []
    for qi, qp in enumerate(query_paths):
        cells = [_tile(read_image(qp), tile, (40, 90, 220), "query")]
        for gi, d in zip(order[qi], dist[qi]):
            if gi >= 0:
                cells.append(_tile(read_image(gallery_paths[gi]), tile, (200, 200, 200), f"{d:.3f}"))
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
