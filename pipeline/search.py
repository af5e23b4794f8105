"""Galleries: image embeddings in an .npz (``pamtri embed``), ``pamtri search`` over them (the simple form of
``pamtri index search``, optionally re-ranked), and the rank-list picture."""
from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from pamtri.common.errors import DataError

# What every gallery file holds besides the embed_arrays outputs.
GALLERY_KEYS = ("features", "paths", "reid_weights")


class ImageSource(NamedTuple):
    """Images to embed: base folder, names relative to it, and per-image metadata arrays (``cameras``,
    ``tracks``: (N,) int64, present when the data set labels every image with one)."""
    base: Path
    names: list[str]
    meta: dict[str, np.ndarray]

    def paths(self) -> list[str]:
        """Absolute paths of the images, in source order."""
        return [str((self.base / n).resolve()) for n in self.names]


def image_source(images: str | os.PathLike | None = None, data: str | os.PathLike | None = None, split: str = "test",
                 fmt: str = "auto", test_size: int | None = None) -> ImageSource:
    """The images of a folder or list file ``images``, or of a data set split (``data`` root in format ``fmt``;
    ``test_size``: the VehicleID / VERI-Wild test set) with its cameras and track ids."""
    from pamtri.data.images import read_image_list
    if images is not None:
        return ImageSource(*read_image_list(images), {})
    from pamtri.data.readers import read_split
    base = Path(data)
    records = read_split(base, split, fmt, test_size=test_size)
    meta = {key: np.asarray(values, np.int64) for key, values in
            (("cameras", [r.camera_id for r in records]), ("tracks", [r.track_id for r in records]))
            if values and min(values) >= 0}
    return ImageSource(base, [os.path.relpath(r.path, base) for r in records], meta)


def embed_to_file(source: ImageSource, out: str | os.PathLike, pose_weights: str | os.PathLike | None,
                  reid_weights: str | os.PathLike, chunk: int | None = None, **pipeline_options) -> tuple[int, int]:
    """Embed every image of ``source`` into the gallery .npz ``out``: names, paths (absolute), features (N, D), the
    other ``Pipeline.embed`` outputs, the source's cameras / tracks, both weights paths and the ReID checkpoint's
    SHA-256 (the model identity ``pamtri index`` checks) -> (N, D). With ``chunk`` or under torchrun, in resumable
    chunks (:func:`pamtri.pipeline.shards.embed_chunks`). ``pipeline_options``: device, precision, batch_size,
    flip_test, compile, runtime of ``Pipeline.from_weights``."""
    from pamtri.common.atomic import atomic_write_bytes

    from .infer import Pipeline
    from .shards import embed_chunks, use_chunks
    if use_chunks(chunk):
        return embed_chunks(source, out, pose_weights, reid_weights, chunk, **pipeline_options)
    pipe = Pipeline.from_weights(pose_weights, reid_weights, **pipeline_options)
    arrays = embed_images(pipe, source, progress=True)
    atomic_write_bytes(out, gallery_bytes(gallery_header(pose_weights, reid_weights), arrays))
    return len(source.names), int(arrays["features"].shape[1])


def embed_images(pipe, source: ImageSource, start: int = 0, stop: int | None = None, progress: bool = False
                 ) -> dict[str, np.ndarray]:
    """The per-image arrays of a gallery file for images ``start:stop`` of ``source``: names, paths, the
    ``Pipeline.embed`` outputs (features (n, D), ...) and the source's metadata."""
    names = source.names[start:stop]
    arrays = pipe.embed([str(source.base / n) for n in names], progress=progress)
    return {"names": np.asarray(names), "paths": np.asarray([str((source.base / n).resolve()) for n in names]),
            **arrays, **{k: v[start:stop] for k, v in source.meta.items()}}


def gallery_header(pose_weights: str | os.PathLike | None, reid_weights: str | os.PathLike) -> dict[str, str]:
    """The scalar entries of a gallery file: both weights paths and the ReID checkpoint's SHA-256."""
    from pamtri.common.checkpoint import file_sha256
    return {"pose_weights": str(pose_weights or ""), "reid_weights": str(reid_weights),
            "reid_weights_sha256": file_sha256(reid_weights)}


def gallery_bytes(header: dict[str, str], arrays: dict[str, np.ndarray]) -> bytes:
    """A gallery .npz's bytes: the per-image ``arrays`` (names and paths first) and the ``header`` scalars."""
    import io
    buf = io.BytesIO()
    np.savez(buf, names=arrays["names"], paths=arrays["paths"], **{k: np.asarray(v) for k, v in header.items()},
             **{k: v for k, v in arrays.items() if k not in ("names", "paths", *header)})
    return buf.getvalue()


def read_gallery(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of a gallery file written by :func:`embed_to_file`, or of its shard folder (``OUT.shards``, all
    chunks in source order); DataError naming the file otherwise."""
    if Path(path).is_dir():
        from .shards import read_shards
        return read_shards(path)
    try:
        gallery = dict(np.load(path, allow_pickle=False))
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        # a truncated or altered .npz fails in the zip reader, the inflater or numpy's header parser
        raise DataError(path, f"cannot read gallery file ({str(exc).strip() or type(exc).__name__}; truncated or "
                              "not an .npz?); write it with `pamtri embed`") from None
    missing = [k for k in GALLERY_KEYS if k not in gallery]
    if missing:
        raise DataError(path, f"not a `pamtri embed` file (missing {', '.join(missing)})")
    return gallery


def search_gallery(query: Sequence[str], gallery: str | os.PathLike, out: str | os.PathLike, *, top: int = 10,
                   rerank: bool = False, out_csv: str | os.PathLike | None = None, **embed_options) -> list[dict]:
    """``pamtri search``, the simple form of ``pamtri index search``: embed the ``query`` image files with the
    weights the gallery records (or those given), search ``gallery`` (an index, or a gallery .npz / shard folder
    held as a flat Euclidean index for the call) -> result rows (columns ``index.RESULT_COLUMNS``, rank 1 first),
    written to the CSV ``out_csv`` when given and drawn as the rank list PNG ``out``. ``embed_options``:
    pose_weights, reid_weights and the ``Pipeline.from_weights`` options."""
    import tempfile

    from .index import build_index, search_to_csv
    options = dict(images=list(query), top=top, rerank=rerank, out=out_csv, png=out, **embed_options)
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
    from pamtri.reid.visualize import BLUE, tile_of_file, write_rank_sheet
    light = (200, 200, 200)
    rows = [[tile_of_file(qp, tile, BLUE, "query")]
            + [tile_of_file(gallery_paths[gi], tile, light, f"{d:.3f}") for gi, d in zip(order[qi], dist[qi])
               if gi >= 0] for qi, qp in enumerate(query_paths)]
    write_rank_sheet(rows, path)
