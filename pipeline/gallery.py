"""Gallery files: image embeddings in an .npz (``pamtri embed``), written whole or in resumable shards.

A gallery file holds the per-image arrays (names, absolute paths, features (N, D), keypoints, colour, type and
the source's cameras / tracks) and the header scalars (both weights paths and the ReID checkpoint's SHA-256,
the model identity ``pamtri index`` checks); :func:`read_gallery` reads it, or its shard folder.

Sharded, resumable embedding (``pamtri embed --chunk N``, and every rank under ``torchrun``): the source list
is cut into chunks of ``chunk`` images; chunk i is embedded by rank i % world size and written
atomically as ``OUT.shards/chunk-{i:06d}.npz``. ``OUT.shards/manifest.json`` records the source list's SHA-256,
the chunk size, the model identity (both checkpoints' SHA-256) and the SHA-256 of each chunk's image paths, so
a re-run of the same command skips the chunks that exist (no recompute, no duplicates) and a run with other
inputs or weights is refused. Each chunk holds the manifest's SHA-256 and its own names and paths, and is checked
against both whenever it is read: a chunk of another run, another chunk's file or a broken one is redone on
resume and refused by :func:`read_shards`. A folder without its manifest reuses nothing. When every
chunk is there, rank 0 writes ``OUT`` as one gallery .npz in source order; the shard folder reads as the same
gallery (:func:`read_shards`). Under several machines the folder must be on a file system they share.

Import order of the gallery modules: ``gallery`` (this file) <- ``index`` (FAISS + SQLite storage and search)
<- ``search`` (embedding queries, result CSVs and pictures).
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import zipfile
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from pamtri.common.atomic import atomic_write_bytes, atomic_write_text
from pamtri.common.checkpoint import file_sha256
from pamtri.common.distributed import barrier, init_distributed, shutdown
from pamtri.common.errors import ConfigError, DataError
from pamtri.data.images import read_image_list
from pamtri.data.readers import read_split

from .infer import Pipeline

log = logging.getLogger(__name__)

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
    if images is not None:
        return ImageSource(*read_image_list(images), {})
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
    chunks (:func:`embed_chunks`). ``pipeline_options``: device, precision, batch_size,
    flip_test, compile, runtime of ``Pipeline.from_weights``."""

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
    return {"pose_weights": str(pose_weights or ""), "reid_weights": str(reid_weights),
            "reid_weights_sha256": file_sha256(reid_weights)}


def gallery_bytes(header: dict[str, str], arrays: dict[str, np.ndarray]) -> bytes:
    """A gallery .npz's bytes: the per-image ``arrays`` (names and paths first) and the ``header`` scalars."""
    buf = io.BytesIO()
    np.savez(buf, names=arrays["names"], paths=arrays["paths"], **{k: np.asarray(v) for k, v in header.items()},
             **{k: v for k, v in arrays.items() if k not in ("names", "paths", *header)})
    return buf.getvalue()


def read_gallery(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of a gallery file written by :func:`embed_to_file`, or of its shard folder (``OUT.shards``, all
    chunks in source order); DataError naming the file otherwise."""
    if Path(path).is_dir():
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

MANIFEST = "manifest.json"
MANIFEST_KEY = "manifest_sha256"  # the scalar each chunk file holds besides its gallery arrays
DEFAULT_CHUNK = 1024  # images per chunk under torchrun when --chunk is not given
# A resume must match these manifest entries: what each one means, for the refusal message.
_MUST_MATCH = (("source_sha256", "another source list"), ("images", "another number of images"),
               ("chunk", "another --chunk"), ("reid_weights_sha256", "other ReID weights"),
               ("pose_weights_sha256", "other pose weights"))


def use_chunks(chunk: int | None) -> bool:
    """Whether embedding goes through chunks: ``--chunk`` given, or several ranks (WORLD_SIZE > 1)."""
    return chunk is not None or int(os.environ.get("WORLD_SIZE", "1")) > 1


def shard_folder(out: str | os.PathLike) -> Path:
    """The shard folder of the gallery file ``out``: ``OUT.shards`` beside it."""
    out = Path(out)
    return out.with_name(out.name + ".shards")


def chunk_path(folder: Path, i: int) -> Path:
    return folder / f"chunk-{i:06d}.npz"


def make_manifest(source: ImageSource, chunk: int, pose_weights: str | os.PathLike | None,
                  reid_weights: str | os.PathLike) -> dict:
    """What a shard folder is made of: source list hash and size, chunk size, the gallery header, both weights'
    SHA-256 (pose: empty without pose weights)."""
    paths = source.paths()
    header = gallery_header(pose_weights, reid_weights)
    return {"source_sha256": _paths_sha256(paths), "images": len(source.names), "chunk": chunk,
            "reid_weights_sha256": header["reid_weights_sha256"],
            "pose_weights_sha256": file_sha256(pose_weights) if pose_weights else "", "header": header,
            "chunk_paths_sha256": [_paths_sha256(paths[i:i + chunk]) for i in range(0, len(paths), chunk)]}


def _paths_sha256(paths) -> str:
    return hashlib.sha256("\n".join(paths).encode()).hexdigest()


def manifest_sha256(manifest: dict) -> str:
    """The SHA-256 of a manifest (canonical JSON), which each of its chunks records."""
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


def chunk_problem(path: Path, i: int, manifest: dict) -> str | None:
    """What is wrong with chunk file ``path`` as chunk ``i`` of ``manifest`` (unreadable, of another run, holding
    other images than its share of the source list, arrays of different lengths), or None when it fits."""
    want = manifest.get("chunk_paths_sha256", [])
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = {"names", "paths", "features", MANIFEST_KEY} - set(z.files)
            if missing:
                return f"not a chunk of this run (missing {', '.join(sorted(missing))})"
            if str(z[MANIFEST_KEY]) != manifest_sha256(manifest):
                return "made by another run (its manifest SHA-256 differs: other inputs or weights)"
            names, paths, features = z["names"], z["paths"], z["features"]
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        return f"cannot read chunk ({str(exc).strip() or type(exc).__name__})"
    if i >= len(want) or names.ndim != 1 or _paths_sha256(paths.tolist()) != want[i]:
        return f"does not hold the images of chunk {i} (its paths differ from the source list's)"
    if features.ndim != 2 or len(features) != len(names) or len(paths) != len(names):
        return f"holds {len(names)} names, {len(paths)} paths and features of shape {features.shape}"
    return None


def read_manifest(folder: Path) -> dict | None:
    """The manifest of a shard folder, None when it has none yet."""
    path = folder / MANIFEST
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(path, f"cannot read the shard manifest ({exc}); delete {folder} to start again") from None


def check_resume(folder: Path, manifest: dict) -> bool:
    """Whether ``folder`` was started already (True) or not (False); DataError naming its manifest when it was
    started with other inputs, chunk size or weights."""
    old = read_manifest(folder)
    if old is None:
        return False
    if "chunk_paths_sha256" not in old:
        raise DataError(folder / MANIFEST, f"these shards were started by an older pamtri whose chunks cannot be "
                                           f"checked; delete {folder} and run the command again")
    for key, what in _MUST_MATCH:
        if old.get(key) != manifest[key]:
            raise DataError(folder / MANIFEST, f"these shards were started with {what} ({key} {old.get(key)}, now "
                                               f"{manifest[key]}); re-run the original command or delete {folder}")
    return True


def chunks_of(info, n_chunks: int, folder: Path, manifest: dict | None = None) -> list[int]:
    """The chunks this rank embeds: i % world size == rank, not written yet (or, given the ``manifest``, whose
    file does not fit it: :func:`chunk_problem`)."""
    todo = []
    for i in range(info.rank, n_chunks, info.world_size):
        path = chunk_path(folder, i)
        if path.exists() and manifest is not None and (problem := chunk_problem(path, i, manifest)):
            log.warning("%s: %s; embedding it again", path, problem)
        elif path.exists():
            continue
        todo.append(i)
    return todo


def embed_chunks(source: ImageSource, out: str | os.PathLike, pose_weights: str | os.PathLike | None,
                 reid_weights: str | os.PathLike, chunk: int | None = None, **pipeline_options) -> tuple[int, int]:
    """Embed ``source`` chunk by chunk into ``OUT.shards`` (this rank's missing chunks only), then (rank 0, after
    a barrier) write the gallery ``out`` -> (N, D). ``chunk``: images per chunk (default DEFAULT_CHUNK)."""
    chunk = DEFAULT_CHUNK if chunk is None else chunk
    if chunk < 1:
        raise ConfigError(f"--chunk must be at least 1 (got {chunk})")
    if not source.names:
        raise DataError(source.base, "no images to embed")
    folder = shard_folder(out)
    manifest = make_manifest(source, chunk, pose_weights, reid_weights)
    started = check_resume(folder, manifest)  # every rank refuses alike, before any collective
    recorded = read_manifest(folder) if started else manifest  # what the chunks are checked against
    info = init_distributed()
    try:
        if info.is_main and not started:
            folder.mkdir(parents=True, exist_ok=True)
            for stale in sorted(folder.glob("chunk-*.npz")):  # no manifest, no reuse: they may be anyone's
                log.warning("%s: a chunk without its manifest; removing it", stale)
                stale.unlink()
            atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=1))
        barrier(info)
        n_chunks = math.ceil(len(source.names) / chunk)
        todo = chunks_of(info, n_chunks, folder, recorded)
        log.info("rank %d: %d chunk(s) to embed, %d of its share already done", info.rank, len(todo),
                 len(range(info.rank, n_chunks, info.world_size)) - len(todo))
        if todo:
            pipe = Pipeline.from_weights(pose_weights, reid_weights, **pipeline_options)
            for i in todo:
                arrays = embed_images(pipe, source, i * chunk, (i + 1) * chunk)
                atomic_write_bytes(chunk_path(folder, i), gallery_bytes({MANIFEST_KEY: manifest_sha256(recorded)},
                                                                        arrays))
        barrier(info)
        if info.is_main:
            atomic_write_bytes(out, gallery_bytes(manifest["header"], read_shards(folder)))
        barrier(info)
    finally:
        shutdown(info)
    with np.load(chunk_path(folder, 0)) as first:
        return len(source.names), int(first["features"].shape[1])


def read_shards(folder: str | os.PathLike) -> dict[str, np.ndarray]:
    """A finished shard folder as one gallery's arrays (the keys :func:`embed_to_file` writes), in source order;
    DataError naming the folder when chunks are missing, or the chunk file that does not fit."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is None:
        raise DataError(folder, f"not a shard folder of `pamtri embed` (no {MANIFEST})")
    n, chunk = manifest["images"], manifest["chunk"]
    paths = [chunk_path(folder, i) for i in range(math.ceil(n / chunk))]
    missing = [p.name for p in paths if not p.exists()]
    if missing:
        raise DataError(folder, f"{len(missing)} of {len(paths)} chunks missing (first: {missing[0]}); re-run the "
                                "`pamtri embed` command that started it to finish them")
    parts = []
    for i, p in enumerate(paths):
        if (problem := chunk_problem(p, i, manifest)) is not None:
            raise DataError(p, f"{problem}; delete it and re-run `pamtri embed` to redo it")
        part = dict(np.load(p, allow_pickle=False))
        del part[MANIFEST_KEY]
        parts.append(part)
    arrays = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return {**arrays, **{k: np.asarray(v) for k, v in manifest["header"].items()}}
