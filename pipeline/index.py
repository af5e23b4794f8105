"""A growing gallery: a FAISS index of ``pamtri embed`` features plus an SQLite database beside it (one row per
vector: image, camera, optional track and timestamp; the model identity; the index kind and its parameters).

``IDX`` is the FAISS file; its metadata is ``IDX.sqlite``. One writer at a time (``.IDX.lock``, a
:class:`~pamtri.common.atomic.RunLock`; a second writer waits for it, then is refused). An add writes the new FAISS
file under its generation's temporary name, commits the SQLite transaction that records it (rows and generation
together), then renames it onto ``IDX``. A build writes both files under temporary names, and renaming the
metadata into place is its commit. A reader opens the committed generation (its temporary file while the rename
is pending) and never removes a writer's files; the next writer, or a reader finding no writer at work, finishes
or discards what a dead writer left, so a crash leaves the last committed state.
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pamtri.common.atomic import RunLock
from pamtri.common.errors import ConfigError, DataError, PamtriError, WriteError
from pamtri.reid.distance import (
    covisible_distance,
    from_similarity,
    pairwise_distance,
    part_scale,
    prepared,
    squared_pairs,
)
from pamtri.reid.rerank import rerank_space, smallest_k
from pamtri.reid.weights import evaluated_part_weight

from .gallery import read_gallery

log = logging.getLogger(__name__)

KINDS = ("flat", "ivf", "ivfpq")
LOCK_WAIT = 60.0  # seconds a second writer of an index waits for the first before it is refused
MIN_POINTS = 39  # FAISS's minimum training vectors per k-means centroid
METRICS = ("cosine", "euclidean")


# OpenBLAS kernel families by the CPU capability torch reports: faiss-cpu's bundled OpenBLAS (0.3.15 in faiss-cpu
# 1.15) does not recognise Sapphire Rapids and falls back to its Prescott kernels, which made exact search and
# k-means 5.6x slower on such a CPU (docs/perf.md).
_OPENBLAS_CORES = {"AVX512": "SkylakeX", "AVX2": "Haswell"}


def import_faiss():
    """The ``faiss`` module, its OpenBLAS told the kernel family this CPU supports (OPENBLAS_CORETYPE, unless the
    user set it; it takes effect only where faiss loads first in the process)."""
    core = _OPENBLAS_CORES.get(torch.backends.cpu.get_cpu_capability())
    if core:
        os.environ.setdefault("OPENBLAS_CORETYPE", core)
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its INFO lines list every SIMD module it lacks
    import faiss
    return faiss


_SCHEMA = """
CREATE TABLE IF NOT EXISTS info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (pos INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, path TEXT NOT NULL,
                                   camera INTEGER, track INTEGER, timestamp REAL);
CREATE TABLE IF NOT EXISTS parts (pos INTEGER PRIMARY KEY, features BLOB NOT NULL, visibility BLOB NOT NULL);
"""
RESCORE_TOP = 100  # candidates the co-visible distance re-scores per query (models with part features)


@dataclass(frozen=True)
class FeatureSet:
    """Features (N, D) float32 of one or more embed files, with their per-image metadata and model identity."""
    features: np.ndarray
    names: list[str]
    paths: list[str]
    cameras: list[int | None]
    tracks: list[int | None]
    timestamps: list[float | None]
    model_sha256: str
    reid_weights: str
    pose_weights: str
    part_features: np.ndarray | None = None    # (N, P, d) float32 of a model with parts (model.parts), else None
    part_visibility: np.ndarray | None = None  # (N, P) float32

    @property
    def parts(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(part features, visibilities), or None for a model without parts."""
        return None if self.part_features is None else (self.part_features, self.part_visibility)


def _optional(arrays: dict, key: str, n: int, cast) -> list:
    return [cast(v) for v in arrays[key]] if key in arrays else [None] * n


def read_features(path: str | os.PathLike) -> FeatureSet:
    """One ``pamtri embed`` .npz as a FeatureSet; DataError naming the file when it lacks the model identity."""
    g = read_gallery(path)
    if "reid_weights_sha256" not in g:
        raise DataError(path, "no model identity (reid_weights_sha256); re-run `pamtri embed` to write it")
    n = _check_arrays(path, g)
    return FeatureSet(np.ascontiguousarray(g["features"], np.float32), [str(s) for s in g["names"]],
                      [str(s) for s in g["paths"]], _optional(g, "cameras", n, int), _optional(g, "tracks", n, int),
                      _optional(g, "timestamps", n, float), str(g["reid_weights_sha256"]), str(g["reid_weights"]),
                      str(g.get("pose_weights", "")), *_read_parts(path, g, n))


def _read_parts(path, g: dict, n: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """A gallery's part features (N, P, d) and visibilities (N, P), (None, None) when it has none (files of models
    without parts and of pamtri before issue 25); DataError naming ``path`` when their shapes do not fit."""
    if "part_features" not in g:
        return None, None
    pf, pv = np.ascontiguousarray(g["part_features"], np.float32), np.ascontiguousarray(g.get("part_visibility"),
                                                                                         np.float32)
    if pf.ndim != 3 or pv.shape != pf.shape[:2] or len(pf) != n:
        raise DataError(path, f"part_features {pf.shape} and part_visibility {pv.shape} do not fit {n} images; "
                              "write it with `pamtri embed`")
    return pf, pv


_PER_IMAGE = ("names", "paths", "cameras", "tracks", "timestamps")


def _check_arrays(path, g: dict) -> int:
    """The number of images of gallery arrays ``g``; DataError naming ``path`` and what is wrong when the
    features are not a non-empty finite (N, D) array or a per-image array has another length."""
    x = g["features"]
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.number):
        raise DataError(path, f"features must be a 2-D numeric array (images x embedding), got shape "
                              f"{x.shape} of {x.dtype}; write it with `pamtri embed`")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise DataError(path, f"holds no features (shape {x.shape})")
    for key in _PER_IMAGE:
        if key in g and (g[key].ndim != 1 or len(g[key]) != len(x)):
            raise DataError(path, f"{key} has {len(g[key]) if g[key].ndim else 'no'} entries (shape "
                                  f"{g[key].shape}) for {len(x)} feature rows; each image needs one")
    bad = ~np.isfinite(x).all(1)
    if bad.any():
        first = int(np.argmax(bad))
        raise DataError(path, f"{int(bad.sum())} feature row(s) not finite (NaN or infinity; first: row {first}, "
                              f"{printable(g['names'][first])}); re-embed those images")
    return len(x)


def printable(name) -> str:
    """``name`` as it can be printed on one line: quoted with escapes when it holds control characters."""
    name = str(name)
    return name if name.isprintable() else repr(name)


def concat_features(paths: list[str | os.PathLike]) -> FeatureSet:
    """Several embed files as one FeatureSet; DataError naming the file whose model differs from the first."""
    sets = [read_features(p) for p in paths]
    for p, s in zip(paths[1:], sets[1:]):
        _check_identity(p, s, sets[0].model_sha256, sets[0].features.shape[1])
    first = sets[0]
    parts = [np.concatenate([getattr(s, f) for s in sets]) if first.parts is not None else None
             for f in ("part_features", "part_visibility")]
    return FeatureSet(np.concatenate([s.features for s in sets]), *(sum((getattr(s, f) for s in sets), []) for f in
                      ("names", "paths", "cameras", "tracks", "timestamps")),
                      first.model_sha256, first.reid_weights, first.pose_weights, *parts)


def _check_identity(source, fs: FeatureSet, sha256: str, dim: int) -> None:
    if fs.features.shape[1] != dim:
        raise DataError(source, f"embedding size {fs.features.shape[1]} differs from the index's {dim}")
    if fs.model_sha256 != sha256:
        raise DataError(source, f"features of another model (checkpoint sha256 {fs.model_sha256[:12]}, the index "
                                f"holds {sha256[:12]}); embed with the index's weights or build a new index")


def _prepare(x: np.ndarray, metric: str) -> np.ndarray:
    """(N, D) float32 contiguous; L2-normalised for cosine (so inner product is cosine similarity)."""
    return np.ascontiguousarray(prepared(x, metric))


def ivf_params(n: int, dim: int, kind: str) -> dict:
    """The parameters an ``ivf`` / ``ivfpq`` index picks for ``n`` training vectors of size ``dim``: nlist the power
    of two nearest 2 sqrt(n) (at most n / 39, FAISS's minimum points per centroid), a starting nprobe of nlist / 32
    (at least 8; :func:`calibrated_nprobe` sets the one used once the vectors are in), k-means on 64 vectors per
    list (1M vectors: 2,048 lists trained on 131k vectors, 45 s for IVF-Flat train + add on 2 cores, where 256 per
    list over 4 sqrt(n) lists took hours); for PQ, m sub-quantisers of about 4 dimensions each (a
    divisor of dim) and 8 bits each (fewer when the training sample is small: at most one centroid per
    MIN_POINTS vectors, so FAISS never warns of too few training points); ConfigError when ``n`` is too small for
    ``kind``."""
    least = MIN_POINTS * (2 if kind == "ivfpq" else 1)
    if n < least:
        raise ConfigError(f"--kind {kind} needs at least {least} vectors to train its quantiser (got {n}); use "
                          "--kind flat for a gallery this small")
    target = 2 ** round(math.log2(max(1.0, 2 * math.sqrt(n))))
    nlist = max(1, min(target, n // 39))
    params = {"nlist": nlist, "nprobe": min(nlist, max(8, nlist // 32)), "train_size": min(n, 64 * nlist)}
    if kind == "ivfpq":
        m = max(d for d in range(1, dim + 1) if dim % d == 0 and d <= max(1, dim // 4))
        params.update(m=m, nbits=int(min(8, math.floor(math.log2(params["train_size"] / MIN_POINTS)))))
    return params


def new_faiss_index(train: np.ndarray, kind: str, metric: str, seed: int = 0):
    """An empty FAISS index of ``kind``, its quantiser trained on a seeded sample of ``train`` (N, D) ->
    (index, parameters chosen)."""
    faiss = import_faiss()
    dim = train.shape[1]
    faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
    if kind == "flat":
        return (faiss.IndexFlatIP(dim) if metric == "cosine" else faiss.IndexFlatL2(dim)), {}
    params = ivf_params(len(train), dim, kind)
    quantiser = faiss.IndexFlatIP(dim) if metric == "cosine" else faiss.IndexFlatL2(dim)
    if kind == "ivf":
        index = faiss.IndexIVFFlat(quantiser, dim, params["nlist"], faiss_metric)
    else:
        index = faiss.IndexIVFPQ(quantiser, dim, params["nlist"], params["m"], params["nbits"], faiss_metric)
    sample = np.random.default_rng(seed).choice(len(train), params["train_size"], replace=False)
    index.train(train[np.sort(sample)])
    index.nprobe = params["nprobe"]
    return index, params


RECALL_TARGET = 0.95


def calibrated_nprobe(index, x: np.ndarray, metric: str, target: float = RECALL_TARGET, sample: int = 256,
                      seed: int = 0) -> tuple[int, float]:
    """Twice the smallest power-of-two nprobe of IVF ``index`` (holding ``x`` (N, D)) whose recall@10 against
    exact search reaches ``target``, or stops gaining (< 0.005 a doubling: PQ codes cap it), on ``sample`` seeded
    vectors of ``x`` used as queries (each one's own vector left out) -> (nprobe, recall there); sets
    ``index.nprobe``. The doubling is a margin for queries unlike the gallery (other clusters: recall 0.87 at
    the gallery-calibrated nprobe, 0.97 at twice it, in the tests)."""
    faiss = import_faiss()
    k = min(11, len(x))
    q = x[np.sort(np.random.default_rng(seed).choice(len(x), min(sample, len(x)), replace=False))]
    exact = faiss.knn(q, x, k, faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2)[1]

    def recall(nprobe: int) -> float:
        index.nprobe = nprobe
        return _recall_without_self(index.search(q, k)[1], exact)
    nprobe, last, now = 1, -1.0, recall(1)
    while nprobe < index.nlist and now < target and now - last >= 0.005:
        nprobe, last, now = 2 * nprobe, now, recall(2 * nprobe)
    nprobe = min(2 * nprobe, index.nlist)
    return nprobe, recall(nprobe)


def _recall_without_self(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each row of ``exact`` (Q, k) but its first hit (the query's own vector) found in the same row
    of ``found``."""
    return float(np.mean([len(set(f) & set(e[1:])) / max(1, len(e) - 1) for f, e in zip(found, exact)]))


class GalleryIndex:
    """An open index: ``.faiss`` (the FAISS index), ``.db`` (SQLite connection), ``.info`` (model identity, kind,
    metric, parameters). Open with :func:`open_index` or :func:`build_index`."""

    def __init__(self, path: Path, faiss_index, db: sqlite3.Connection):
        self.path, self.faiss, self.db = path, faiss_index, db
        self.info = {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM info")}

    def __len__(self) -> int:
        return self.faiss.ntotal

    def close(self) -> None:
        self.db.close()


def _meta_path(path: Path) -> Path:
    return path.with_name(path.name + ".sqlite")


def _pending_path(path: Path, generation: int) -> Path:
    return path.with_name(f".{path.name}.g{generation}.tmp")


def _build_meta_path(path: Path) -> Path:
    """Where a build writes the metadata before renaming it into place (its commit)."""
    return path.with_name(f".{path.name}.sqlite.build.tmp")


def _lock(path: Path) -> RunLock:
    return RunLock(path, path.with_name(f".{path.name}.lock"), what="index",
                   hint="it is released when that process ends; run the command again then")


def _connect(path: Path, meta: Path | None = None) -> sqlite3.Connection:
    meta = meta or _meta_path(path)
    try:
        db = sqlite3.connect(meta, isolation_level=None)  # transactions are explicit (BEGIN / COMMIT)
        db.executescript(_SCHEMA)
    except sqlite3.DatabaseError as exc:
        raise DataError(meta, f"cannot read the index metadata ({exc}); restore it from a backup or build the "
                              "index again") from None
    return db


def _write_error(path: Path, exc: Exception, existed: bool) -> WriteError:
    """A WriteError naming ``path`` for an OSError, a FAISS RuntimeError or an SQLite error while writing it."""
    if not isinstance(exc, OSError):
        text = str(exc)
        full = "No space left" in text or "disk is full" in text
        code = errno.ENOSPC if full else errno.EIO
        exc = OSError(code, os.strerror(code) if full else text.strip().splitlines()[-1])
    return WriteError(path, exc, existed)


def _write_pending(index, path: Path, generation: int) -> Path:
    """Write ``index`` under the temporary name of ``generation`` beside ``path`` (fsynced) -> that name; on a
    failure (disk full) the temporary file is removed and WriteError names ``path``."""
    faiss = import_faiss()
    tmp = _pending_path(path, generation)
    try:
        faiss.write_index(index, str(tmp))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
    except (RuntimeError, OSError) as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise _write_error(path, exc, path.exists()) from None
    return tmp


def _commit(db: sqlite3.Connection, fs: FeatureSet, start: int, generation: int, info: dict | None = None) -> None:
    """One transaction: the new rows (positions from ``start``), the generation and (on build) the info."""
    db.execute("BEGIN")
    try:
        for key, value in {**(info or {}), "generation": generation}.items():
            db.execute("INSERT OR REPLACE INTO info VALUES (?, ?)", (key, json.dumps(value)))
        db.executemany("INSERT INTO images VALUES (?, ?, ?, ?, ?, ?)",
                       zip(range(start, start + len(fs.names)), fs.names, fs.paths, fs.cameras, fs.tracks,
                           fs.timestamps))
        if fs.parts is not None:  # one row per vector: its (P, d) part features and (P,) visibilities, float32 bytes
            db.executemany("INSERT INTO parts VALUES (?, ?, ?)",
                           zip(range(start, start + len(fs.names)), (f.tobytes() for f in fs.part_features),
                               (v.tobytes() for v in fs.part_visibility)))
        db.execute("COMMIT")
    except BaseException as exc:
        if db.in_transaction:  # SQLite has already rolled back after some errors (disk full)
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        if isinstance(exc, sqlite3.OperationalError):
            meta = Path(db.execute("PRAGMA database_list").fetchone()[2])
            raise _write_error(meta, exc, True) from None
        raise


def _recover(path: Path) -> None:
    """Under the writer lock: finish a committed add whose rename was cut (its pending file renamed onto
    ``path``) and remove every other temporary file a dead writer left."""
    generation = None
    if _meta_path(path).exists():
        db = _connect(path)
        try:
            row = db.execute("SELECT value FROM info WHERE key = 'generation'").fetchone()
            generation = json.loads(row[0]) if row else None
        finally:
            db.close()
    for stale in sorted(path.parent.glob(f".{path.name}.*tmp*")):
        if generation is not None and stale == _pending_path(path, generation):
            os.replace(stale, path)
        else:
            log.info("removing %s, left by a writer that did not finish", stale)
            stale.unlink()


def _recover_if_idle(path: Path) -> None:
    """:func:`_recover` when no writer is at work (the lock is free and can be taken here); otherwise nothing is
    touched (a reader never removes a live writer's files)."""
    lock = _lock(path)
    try:
        lock.acquire()
    except (PamtriError, OSError):  # a writer is at work, or the folder is read-only
        return
    try:
        _recover(path)
    finally:
        lock.release()


def _refuse_to_build(out: Path) -> None:
    if _meta_path(out).exists() and not out.exists() and not list(out.parent.glob(f".{out.name}.g*.tmp")):
        raise DataError(out, f"{_meta_path(out).name} is there without its FAISS file (left by an interrupted "
                             f"build of an older pamtri); delete {_meta_path(out)} and build again")
    if out.exists() or _meta_path(out).exists():
        raise DataError(out, "index already exists; add to it with `pamtri index add` or choose another --out")


def build_index(feature_files: list[str | os.PathLike], out: str | os.PathLike, kind: str = "flat",
                metric: str = "cosine", wait: float = LOCK_WAIT) -> GalleryIndex:
    """A new index ``out`` (refused if it exists) of every vector of ``feature_files`` -> the open index. Both
    files appear together or neither: the FAISS file and the metadata are written under temporary names, and
    the metadata's rename is the commit."""
    if kind not in KINDS or metric not in METRICS:
        raise ConfigError(f"index kind must be one of {', '.join(KINDS)} and metric one of {', '.join(METRICS)} "
                          f"(got --kind {kind}, --metric {metric})")
    out = Path(out)
    _refuse_to_build(out)
    fs = concat_features(feature_files)
    _refuse_duplicates(feature_files[0], fs.names, set())
    x = _prepare(fs.features, metric)
    index, params = new_faiss_index(x, kind, metric)
    index.add(x)
    if kind != "flat":
        nprobe, recall = calibrated_nprobe(index, x, metric)
        params.update(nprobe=nprobe, nprobe_recall=round(recall, 3))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WriteError(out, exc, False) from None
    info = {"model_sha256": fs.model_sha256, "dim": int(x.shape[1]), "metric": metric, "kind": kind,
            "params": params, "reid_weights": fs.reid_weights, "pose_weights": fs.pose_weights,
            "parts": None if fs.parts is None else list(fs.part_features.shape[1:]),
            "part_scale": None if fs.parts is None else part_scale((x, *fs.parts), metric),
            "part_weight": None if fs.parts is None else evaluated_part_weight(fs.reid_weights)}
    with _lock(out).acquire(wait):
        _recover(out)
        _refuse_to_build(out)  # another build may have finished while this one computed
        tmp = _write_pending(index, out, 1)
        meta_tmp = _build_meta_path(out)
        try:
            db = _connect(out, meta_tmp)
            try:
                _commit(db, fs, 0, 1, info)
            finally:
                db.close()
            with open(meta_tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(meta_tmp, _meta_path(out))  # the commit: the index exists from here on
        except BaseException as exc:
            for f in (tmp, meta_tmp):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f)
            if isinstance(exc, OSError) and not isinstance(exc, WriteError):
                raise _write_error(_meta_path(out), exc, False) from None
            raise
        os.replace(tmp, out)
    return _open(out)


def open_index(path: str | os.PathLike) -> GalleryIndex:
    """The index at ``path`` as last committed, whole, even while a writer adds to it. When no writer is at work,
    what a dead one left is finished or removed first (:func:`_recover`)."""
    path = Path(path)
    if not _meta_path(path).exists():
        raise DataError(path, f"not a pamtri index (no {_meta_path(path).name}); create it with `pamtri index build`")
    _recover_if_idle(path)
    return _open(path)


def _snapshot(db: sqlite3.Connection, meta: Path) -> tuple[dict, int]:
    """(info, rows) of one read transaction."""
    db.execute("BEGIN")
    try:
        info = {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM info")}
        rows = db.execute("SELECT COUNT(*) FROM images").fetchone()[0]
    except (sqlite3.DatabaseError, ValueError) as exc:
        raise DataError(meta, f"cannot read the index metadata ({exc}); restore it from a backup or build the "
                              "index again") from None
    finally:
        db.execute("COMMIT")
    missing = [k for k in ("generation", "model_sha256", "dim", "metric", "kind", "params") if k not in info]
    if missing:
        raise DataError(meta, f"index metadata without {', '.join(missing)}; build the index again")
    return info, rows


def _open(path: Path, tries: int = 50) -> GalleryIndex:
    """The committed generation of the index at ``path``, its FAISS file read from the generation's pending name
    while the rename is not done; re-read when a writer commits in between."""
    faiss = import_faiss()
    meta = _meta_path(path)
    db = _connect(path)
    try:
        for _ in range(tries):
            info, rows = _snapshot(db, meta)
            pending = _pending_path(path, info["generation"])
            source = pending if pending.exists() else path
            try:
                index = faiss.read_index(str(source))
            except RuntimeError as exc:
                index, error = None, exc
            if index is not None and index.ntotal == rows:
                if hasattr(index, "nprobe"):
                    index.nprobe = info["params"]["nprobe"]
                idx = GalleryIndex(path, index, db)
                idx.info = info
                return idx
            if _snapshot(db, meta)[0]["generation"] != info["generation"] or (source == pending
                                                                               and not pending.exists()):
                continue  # a writer committed or renamed meanwhile: read again
            if index is not None:
                raise DataError(path, f"FAISS file holds {index.ntotal} vectors, its metadata {rows}")
            if not source.exists():
                raise DataError(path, "the FAISS file of this index is missing")
            raise DataError(source, f"cannot read the FAISS file ({str(error).strip().splitlines()[-1]}); restore "
                                    "it from a backup or build the index again")
        raise DataError(path, "the index changed under every read (a writer is busy); try again")
    except BaseException:
        db.close()
        raise


def _refuse_duplicates(source, names: list[str], existing: set[str]) -> None:
    seen, dupes = set(existing), []
    for n in names:
        if n in seen:
            dupes.append(n)
        seen.add(n)
    if dupes:
        raise DataError(source, f"{len(dupes)} image(s) already in the index or repeated (first: "
                                f"{printable(dupes[0])}); pass --skip-existing to add only the new ones")


def _subset(fs: FeatureSet, keep: list[int]) -> FeatureSet:
    def pick(values: list) -> list:
        return [values[i] for i in keep]
    return FeatureSet(fs.features[keep], pick(fs.names), pick(fs.paths), pick(fs.cameras), pick(fs.tracks),
                      pick(fs.timestamps), fs.model_sha256, fs.reid_weights, fs.pose_weights,
                      *(None if a is None else a[keep] for a in (fs.part_features, fs.part_visibility)))


def add_to_index(path: str | os.PathLike, feature_files: list[str | os.PathLike], skip_existing: bool = False,
                 wait: float = LOCK_WAIT) -> tuple[int, int]:
    """Add the vectors of ``feature_files`` to the index at ``path`` atomically -> (added, skipped). Images
    already there are refused (DataError) or, with ``skip_existing``, skipped by name. Every input is checked
    before anything is written; a second writer waits up to ``wait`` seconds for the first, then is refused."""
    path = Path(path)
    if not _meta_path(path).exists():
        raise DataError(path, f"not a pamtri index (no {_meta_path(path).name}); create it with `pamtri index build`")
    return add_features(path, concat_features(feature_files), feature_files[0], skip_existing, wait)


def add_features(path: str | os.PathLike, fs: FeatureSet, source, skip_existing: bool = False,
                 wait: float = LOCK_WAIT) -> tuple[int, int]:
    """:func:`add_to_index` of a FeatureSet held in memory (``source`` names it in errors: a file, the service's
    upload) -> (added, skipped), with the same checks, lock and atomic commit."""
    path = Path(path)
    with _lock(path).acquire(wait):
        _recover(path)
        idx = _open(path)
        try:
            _check_identity(source, fs, idx.info["model_sha256"], idx.info["dim"])
            existing = {r[0] for r in idx.db.execute("SELECT name FROM images")}
            total = len(fs.names)
            if skip_existing:
                fs = _subset(fs, [i for i, n in enumerate(fs.names) if n not in existing])
            _refuse_duplicates(source, fs.names, existing)
            if fs.names:
                generation = idx.info["generation"] + 1
                start = len(idx)
                idx.faiss.add(_prepare(fs.features, idx.info["metric"]))
                tmp = _write_pending(idx.faiss, idx.path, generation)
                try:
                    _commit(idx.db, fs, start, generation)
                except BaseException:
                    with contextlib.suppress(FileNotFoundError):
                        tmp.unlink()
                    raise
                os.replace(tmp, idx.path)
            return len(fs.names), total - len(fs.names)
        finally:
            idx.close()


def _faiss_search(idx: GalleryIndex, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(Q, D) prepared queries -> (positions (Q, k), distances (Q, k)) nearest first; cosine distance is
    1 - cosine similarity, euclidean the L2 distance (not squared); missing results have position -1."""
    sim, pos = idx.faiss.search(x, k)
    return pos, from_similarity(sim, idx.info["metric"])


def search_index(idx: GalleryIndex, query: np.ndarray, top: int = 10, query_cameras: list | None = None,
                 exclude_same_camera: bool = False, keep: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(Q, D) features -> (positions (Q, top), distances (Q, top)) rank 1 first, -1 / inf past the gallery's end.
    With ``exclude_same_camera``, gallery images of the query's camera (``query_cameras``) are left out; with
    ``keep`` ((N,) bool over index positions: a camera or time filter), only the positions it marks are returned."""
    x = _prepare(query, idx.info["metric"])
    top = max(1, top)
    if len(idx) == 0:
        raise DataError(idx.path, "the index holds no vectors; add some with `pamtri index add`")
    if not exclude_same_camera and keep is None:
        pos, dist = _faiss_search(idx, x, min(top, len(idx)))
        return _pad(pos, dist, top)
    allowed = np.ones(len(idx), bool) if keep is None else np.asarray(keep, bool)[:len(idx)]
    cams = np.array([-1 if c is None else c for c in _column(idx, "camera")]) if exclude_same_camera else None
    out_pos, out_dist = np.full((len(x), top), -1), np.full((len(x), top), np.inf, np.float32)
    for qi in range(len(x)):
        mask = allowed if cams is None else allowed & (cams[:len(idx)] != query_cameras[qi])
        want = min(top, int(mask.sum()))
        if want == 0:
            continue
        k = min(len(idx), 4 * top)
        while True:  # widen the search until enough allowed results (or the whole gallery)
            pos, dist = _faiss_search(idx, x[qi:qi + 1], k)
            ok = (pos[0] >= 0) & mask[np.maximum(pos[0], 0)]
            if ok.sum() >= want or k == len(idx):
                break
            k = min(len(idx), 4 * k)
        p, d = pos[0][ok][:top], dist[0][ok][:top]
        out_pos[qi, :len(p)], out_dist[qi, :len(d)] = p, d
    return out_pos, out_dist


def _search_full(idx: GalleryIndex, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_faiss_search` with all k results (k <= len(idx)): IVF rows whose probed lists held fewer than k
    vectors are searched again over every list."""
    pos, dist = _faiss_search(idx, x, k)
    short = (pos < 0).any(1)
    if short.any() and hasattr(idx.faiss, "nprobe"):
        nprobe, idx.faiss.nprobe = idx.faiss.nprobe, idx.faiss.nlist
        try:
            pos[short], dist[short] = _faiss_search(idx, np.ascontiguousarray(x[short]), k)
        finally:
            idx.faiss.nprobe = nprobe
    return pos, dist


class IndexSpace:
    """The re-ranking space (a ``reid.distance.RerankSpace``) of (Q, D) prepared queries and an index's vectors:
    gallery-side neighbours from the index (the same index: flat exact, IVF approximate), query-side by matmul;
    vectors read back with ``reconstruct_batch`` (IVF-PQ: decoded, approximate). Row maxima of d^2: cosine from
    the index's nearest to -x (the farthest vector), euclidean by a blocked pass over the index's vectors."""

    def __init__(self, idx: GalleryIndex, queries: np.ndarray, block: int = 4096):

        self.idx, self.q, self.metric, self.block = idx, torch.from_numpy(queries), idx.info["metric"], block
        self._dist = pairwise_distance
        self.nq, self.n = len(queries), len(queries) + len(idx)
        if hasattr(idx.faiss, "make_direct_map"):
            idx.faiss.make_direct_map()

    def _vectors(self, rows: np.ndarray):
        out = torch.empty(len(rows), self.q.shape[1])
        q = rows < self.nq
        out[torch.from_numpy(q)] = self.q[rows[q]]
        if (~q).any():
            out[torch.from_numpy(~q)] = torch.from_numpy(self.idx.faiss.reconstruct_batch(rows[~q] - self.nq))
        return out

    def _rowmax(self, x) -> np.ndarray:
        """(R,) float64 largest d^2 from each of x (R, D) to any query or indexed vector."""
        top = np.square(self._dist(x, self.q, self.metric).numpy()).max(1).astype(np.float64)
        if self.metric == "cosine":
            far = 1.0 + self.idx.faiss.search(-x.numpy(), 1)[0][:, 0]  # 1 - min cos = 1 + max(-x . g)
            return np.maximum(top, np.square(far))
        for s in range(0, len(self.idx), self.block):
            g = self._vectors(np.arange(s, min(s + self.block, len(self.idx))) + self.nq)
            top = np.maximum(top, np.square(self._dist(x, g, self.metric).numpy()).max(1))
        return top

    def nearest(self, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        x = self._vectors(rows)
        pos, dist = _search_full(self.idx, np.ascontiguousarray(x.numpy()), min(k, len(self.idx)))
        d2 = np.concatenate([np.square(self._dist(x, self.q, self.metric).numpy()), np.square(dist)], 1)
        ids = np.concatenate([np.broadcast_to(np.arange(self.nq), (len(rows), self.nq)), pos + self.nq], 1)
        return smallest_k(d2, ids, k)[0], self._rowmax(x)

    def gallery_nearest(self, top: int) -> tuple[np.ndarray, np.ndarray]:
        pos, dist = _search_full(self.idx, self.q.numpy(), top)
        return pos, np.square(dist)

    def pairs(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return squared_pairs(self._vectors(rows), self._vectors(cols), self.metric)


def rerank_index(idx: GalleryIndex, query: np.ndarray, top: int = 10, candidates: int = 100,
                 query_cameras: list | None = None, exclude_same_camera: bool = False,
                 keep: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`search_index` with k-reciprocal re-ranking of each query's ``candidates`` nearest (at least
    ``top``) from the index's neighbour lists -> (positions (Q, top), re-ranked distances (Q, top)); the
    filters (``exclude_same_camera``, ``keep``) apply to the re-ranked candidates."""
    pos, dist = rerank_space(IndexSpace(idx, _prepare(query, idx.info["metric"])), max(top, candidates))
    if exclude_same_camera or keep is not None:
        allowed = np.ones(len(idx), bool) if keep is None else np.asarray(keep, bool)[:len(idx)]
        keep = allowed[pos]
        if exclude_same_camera:
            cams = np.array([-1 if c is None else c for c in _column(idx, "camera")])
            keep &= cams[pos] != np.asarray(query_cameras)[:, None]
        rank = np.where(keep, np.arange(pos.shape[1]), pos.shape[1]).argsort(1, kind="stable")
        pos = np.where(np.take_along_axis(keep, rank, 1), np.take_along_axis(pos, rank, 1), -1)
        dist = np.where(pos >= 0, np.take_along_axis(dist, rank, 1), np.inf)
    return _pad(pos[:, :top], dist[:, :top], top)


def _pad(pos: np.ndarray, dist: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
    extra = top - pos.shape[1]
    return (np.pad(pos, ((0, 0), (0, extra)), constant_values=-1),
            np.pad(dist.astype(np.float32), ((0, 0), (0, extra)), constant_values=np.inf))


def _column(idx: GalleryIndex, name: str) -> list:
    """One metadata column of every vector, in index position order."""
    return [r[0] for r in idx.db.execute(f"SELECT {name} FROM images ORDER BY pos")]


def committed_generation(idx: GalleryIndex) -> int:
    """The generation last committed to the index of ``idx`` (greater than ``idx.info['generation']`` once a
    writer has added since it was opened: a long-lived reader re-opens then)."""
    row = idx.db.execute("SELECT value FROM info WHERE key = 'generation'").fetchone()
    return json.loads(row[0]) if row else 0


def index_parts(idx: GalleryIndex, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Part features (K, P, d) and visibilities (K, P) of index ``positions`` (K,) >= 0, read from the SQLite
    ``parts`` table."""
    p, d = idx.info["parts"]
    want = [int(i) for i in positions]
    rows = {}
    for s in range(0, len(want), 900):  # SQLite's limit on bound parameters
        chunk = want[s:s + 900]
        rows.update({pos: (f, v) for pos, f, v in idx.db.execute(
            f"SELECT pos, features, visibility FROM parts WHERE pos IN ({','.join('?' * len(chunk))})", chunk)})
    missing = [i for i in want if i not in rows]
    if missing:
        raise DataError(idx.path, f"no part features stored for position {missing[0]}; build the index again")
    feats = np.stack([np.frombuffer(rows[i][0], np.float32).reshape(p, d) for i in want]) if want else \
        np.zeros((0, p, d), np.float32)
    vis = np.stack([np.frombuffer(rows[i][1], np.float32) for i in want]) if want else np.zeros((0, p), np.float32)
    return feats, vis


def rescore_covisible(idx: GalleryIndex, query: np.ndarray, query_parts: tuple[np.ndarray, np.ndarray],
                      pos: np.ndarray, part_weight: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Re-score each query's candidates ``pos`` (Q, L) (-1: none) with the co-visible distance
    (``reid.distance.covisible_distance``: global distance of the index's metric + lambda ``part_weight`` x the
    visibility-weighted part distance) -> (positions (Q, L), distances (Q, L)) nearest first; the global features are
    read back from the FAISS index (IVF-PQ: decoded, approximate)."""
    if hasattr(idx.faiss, "make_direct_map"):
        idx.faiss.make_direct_map()
    out_pos, out_dist = np.full(pos.shape, -1), np.full(pos.shape, np.inf, np.float32)
    metric = idx.info["metric"]
    qf, qv = query_parts
    for qi in range(len(pos)):
        cand = pos[qi][pos[qi] >= 0]
        if not len(cand):
            continue
        g = idx.faiss.reconstruct_batch(cand.astype(np.int64))
        gp, gv = index_parts(idx, cand)
        d = covisible_distance((query[qi:qi + 1], qf[qi:qi + 1], qv[qi:qi + 1]), (g, gp, gv), metric,
                               part_weight).numpy()[0]
        order = np.argsort(d, kind="stable")
        out_pos[qi, :len(cand)], out_dist[qi, :len(cand)] = cand[order], d[order]
    return out_pos, out_dist


def search_covisible(idx: GalleryIndex, query: np.ndarray, query_parts: tuple[np.ndarray, np.ndarray] | None,
                     top: int = 10, candidates: int = RESCORE_TOP, part_weight: float | None = None, **filters
                     ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`search_index`, then for an index of part features (and queries with theirs) the ``candidates``
    nearest by the global feature (at least ``top``) re-scored by the co-visible distance (:func:`rescore_covisible`)
    -> (positions (Q, top), distances (Q, top)). ``filters``: search_index's query_cameras, exclude_same_camera,
    keep. ``part_weight`` is relative: lambda = part_weight x the index's ``part_scale`` (``reid.distance.part_scale``
    of the vectors it was built with); None: the model's own (its ``eval.part_weight``, recorded at build; 1 in
    indexes built before). Without parts on either side, or with part_weight 0: search_index itself."""
    if part_weight is None:
        recorded = idx.info.get("part_weight")
        part_weight = 1.0 if recorded is None else float(recorded)
    if query_parts is None or not idx.info.get("parts") or part_weight == 0:
        return search_index(idx, query, top, **filters)
    pos, _ = search_index(idx, query, max(top, candidates), **filters)
    weight = part_weight * idx.info.get("part_scale", 1.0)  # relative to the global scale, measured at build
    pos, dist = rescore_covisible(idx, np.ascontiguousarray(query, np.float32), query_parts, pos, weight)
    return pos[:, :top], dist[:, :top]
