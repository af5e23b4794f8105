"""Search: embed the queries (or read them from a gallery file), search an index or a gallery file for them, and
write the results as a CSV (``RESULT_COLUMNS``, rank 1 first) and a rank-list picture (``pamtri search``,
``pamtri index search``)."""
from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pamtri.common.atomic import atomic_write
from pamtri.common.checkpoint import file_sha256
from pamtri.common.errors import DataError
from pamtri.reid.visualize import BLUE, tile_of_file, write_rank_sheet

from .index import (
    FeatureSet,
    GalleryIndex,
    _check_identity,
    _column,
    build_index,
    open_index,
    read_features,
    rerank_index,
    search_covisible,
)
from .infer import Pipeline

RESULT_COLUMNS = ("query", "rank", "image", "distance", "camera")


def search_gallery(query: Sequence[str], gallery: str | os.PathLike, out: str | os.PathLike, *, top: int = 10,
                   rerank: bool = False, part_weight: float | None = None, out_csv: str | os.PathLike | None = None,
                   **embed_options) -> list[dict]:
    """``pamtri search``, the simple form of ``pamtri index search``: embed the ``query`` image files with the
    weights the gallery records (or those given), search ``gallery`` (an index, or a gallery .npz / shard folder
    held as a flat Euclidean index for the call) -> result rows (columns ``index.RESULT_COLUMNS``, rank 1 first),
    written to the CSV ``out_csv`` when given and drawn as the rank list PNG ``out``. ``embed_options``:
    pose_weights, reid_weights and the ``Pipeline.from_weights`` options."""

    options = dict(images=list(query), top=top, rerank=rerank, part_weight=part_weight, out=out_csv, png=out,
                   **embed_options)
    if is_index(gallery):
        return search_to_csv(gallery, **options)
    with tempfile.TemporaryDirectory(prefix="pamtri-search-") as tmp:
        index = Path(tmp) / "gallery.faiss"
        build_index([gallery], index, "flat", "euclidean").close()
        return search_to_csv(index, **options)


def is_index(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a ``pamtri index`` (its SQLite metadata ``PATH.sqlite`` beside it)."""
    path = Path(path)
    return path.with_name(path.name + ".sqlite").exists()


def draw_search(query_paths: Sequence[str], gallery_paths: Sequence[str], order: np.ndarray, dist: np.ndarray,
                path: str | os.PathLike, tile: tuple[int, int] = (96, 96)) -> None:
    """One row per query: the query (blue border), then its matches ``order`` (Q, top) gallery indices (-1: none)
    with their distances ``dist`` (Q, top)."""
    light = (200, 200, 200)
    rows = [[tile_of_file(qp, tile, BLUE, "query")]
            + [tile_of_file(gallery_paths[gi], tile, light, f"{d:.3f}") for gi, d in zip(order[qi], dist[qi])
               if gi >= 0] for qi, qp in enumerate(query_paths)]
    write_rank_sheet(rows, path)


def query_features(features: str | os.PathLike | None, images: list[str] | None, idx: GalleryIndex,
                   pose_weights: str | None = None, reid_weights: str | None = None, **pipeline_options
                   ) -> FeatureSet:
    """The queries of ``pamtri index search``: an embed file (``features``) or image files embedded with the
    weights given (default: those the index records); DataError when their model is not the index's."""
    if features is not None:
        fs = read_features(features)
        source = features
    else:

        reid_w = reid_weights or idx.info["reid_weights"]
        pipe = Pipeline.from_weights(pose_weights or idx.info["pose_weights"] or None, reid_w, **pipeline_options)
        n = len(images)
        out = pipe.embed(list(images))
        fs = FeatureSet(out["features"], [os.path.basename(p) for p in images], list(images),
                        [None] * n, [None] * n, [None] * n, file_sha256(reid_w), reid_w, "", out.get("part_features"),
                        out.get("part_visibility"))
        source = reid_w
        if not np.isfinite(fs.features).all():
            bad = int(np.argmax(~np.isfinite(fs.features).all(1)))
            raise DataError(images[bad], f"the ReID network's feature of this image is not finite (NaN or "
                                         f"infinity; weights {reid_w}); check the weights")
    _check_identity(source, fs, idx.info["model_sha256"], idx.info["dim"])
    return fs


def search_to_csv(path: str | os.PathLike, features: str | os.PathLike | None = None, images: list[str] | None = None,
                  *, top: int = 10, exclude_same_camera: bool = False, rerank: bool = False, rerank_top: int = 100,
                  part_weight: float | None = None, out: str | os.PathLike | None = None,
                  png: str | os.PathLike | None = None, **embed_options) -> list[dict]:
    """Search the index at ``path`` for the queries of :func:`query_features` -> result rows (columns
    RESULT_COLUMNS, rank 1 first), written to the CSV ``out`` and drawn as a rank list PNG ``png`` when given;
    with ``rerank`` the ``rerank_top`` nearest are k-reciprocal re-ranked (:func:`rerank_index`); otherwise, for a
    model with part features, ``part_weight`` weighs the co-visible part term (``index.search_covisible``; 0: the
    global distance alone; None: the model's own). ``embed_options``: pose_weights, reid_weights and the
    ``Pipeline.from_weights`` options for ``images``."""
    idx = open_index(path)
    try:
        queries = query_features(features, images, idx, **embed_options)
        if exclude_same_camera and any(c is None for c in queries.cameras):
            raise DataError(features, "--exclude-same-camera needs query cameras (a `cameras` array in the features)")
        filters = {"query_cameras": queries.cameras, "exclude_same_camera": exclude_same_camera}
        if rerank:
            pos, dist = rerank_index(idx, queries.features, top, candidates=rerank_top, **filters)
        else:  # a model with part features: the global top RESCORE_TOP re-scored by the co-visible distance
            pos, dist = search_covisible(idx, queries.features, queries.parts, top, part_weight=part_weight,
                                         **filters)
        names, paths, cams = _column(idx, "name"), _column(idx, "path"), _column(idx, "camera")
    finally:
        idx.close()
    rows = [{"query": q, "rank": r + 1, "image": names[p], "distance": float(d), "camera": cams[p]}
            for q, qp, qd in zip(queries.names, pos, dist) for r, (p, d) in enumerate(zip(qp, qd)) if p >= 0]
    if out is not None:
        _write_csv(out, rows)
    if png is not None:
        draw_search(queries.paths, paths, pos, dist, png)
    return rows


def _write_csv(path: str | os.PathLike, rows: list[dict]) -> None:

    with atomic_write(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=RESULT_COLUMNS)
        writer.writeheader()
        writer.writerows({**r, "camera": "" if r["camera"] is None else r["camera"]} for r in rows)
