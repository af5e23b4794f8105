"""A growing gallery: a FAISS index of ``pamtri embed`` features plus an SQLite database beside it (one row per
vector: image, camera, optional track and timestamp; the model identity; the index kind and its parameters).

``IDX`` is the FAISS file; its metadata is ``IDX.sqlite``. An add writes the new FAISS file under a temporary
name, commits the SQLite transaction that records it (rows and generation together), then renames it onto
``IDX``; :func:`open_index` finishes or discards a half-done add, so a crash leaves the last committed state.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pamtri.common.errors import ConfigError, DataError

KINDS = ("flat", "ivf", "ivfpq")
METRICS = ("cosine", "euclidean")
RESULT_COLUMNS = ("query", "rank", "image", "distance", "camera")


# OpenBLAS kernel families by the CPU capability torch reports: faiss-cpu's bundled OpenBLAS (0.3.15 in faiss-cpu
# 1.15) does not recognise Sapphire Rapids and falls back to its Prescott kernels, which made exact search and
# k-means 5.6x slower on such a CPU (docs/perf.md).
_OPENBLAS_CORES = {"AVX512": "SkylakeX", "AVX2": "Haswell"}


def import_faiss():
    """The ``faiss`` module, its OpenBLAS told the kernel family this CPU supports (OPENBLAS_CORETYPE, unless the
    user set it; it takes effect only where faiss loads first in the process)."""
    import torch
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
"""


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


def _optional(arrays: dict, key: str, n: int, cast) -> list:
    return [cast(v) for v in arrays[key]] if key in arrays else [None] * n


def read_features(path: str | os.PathLike) -> FeatureSet:
    """One ``pamtri embed`` .npz as a FeatureSet; DataError naming the file when it lacks the model identity."""
    from .search import read_gallery
    g = read_gallery(path)
    if "reid_weights_sha256" not in g:
        raise DataError(path, "no model identity (reid_weights_sha256); re-run `pamtri embed` to write it")
    n = len(g["names"])
    return FeatureSet(np.ascontiguousarray(g["features"], np.float32), [str(s) for s in g["names"]],
                      [str(s) for s in g["paths"]], _optional(g, "cameras", n, int), _optional(g, "tracks", n, int),
                      _optional(g, "timestamps", n, float), str(g["reid_weights_sha256"]), str(g["reid_weights"]),
                      str(g.get("pose_weights", "")))


def concat_features(paths: list[str | os.PathLike]) -> FeatureSet:
    """Several embed files as one FeatureSet; DataError naming the file whose model differs from the first."""
    sets = [read_features(p) for p in paths]
    for p, s in zip(paths[1:], sets[1:]):
        _check_identity(p, s, sets[0].model_sha256, sets[0].features.shape[1])
    first = sets[0]
    return FeatureSet(np.concatenate([s.features for s in sets]), *(sum((getattr(s, f) for s in sets), []) for f in
                      ("names", "paths", "cameras", "tracks", "timestamps")),
                      first.model_sha256, first.reid_weights, first.pose_weights)


def _check_identity(source, fs: FeatureSet, sha256: str, dim: int) -> None:
    if fs.features.shape[1] != dim:
        raise DataError(source, f"embedding size {fs.features.shape[1]} differs from the index's {dim}")
    if fs.model_sha256 != sha256:
        raise DataError(source, f"features of another model (checkpoint sha256 {fs.model_sha256[:12]}, the index "
                                f"holds {sha256[:12]}); embed with the index's weights or build a new index")


def _prepare(x: np.ndarray, metric: str) -> np.ndarray:
    """(N, D) float32 contiguous; L2-normalised for cosine (so inner product is cosine similarity)."""
    from pamtri.reid.distance import prepared
    return np.ascontiguousarray(prepared(x, metric))


def ivf_params(n: int, dim: int, kind: str) -> dict:
    """The parameters an ``ivf`` / ``ivfpq`` index picks for ``n`` training vectors of size ``dim``: nlist the power
    of two nearest 2 sqrt(n) (at most n / 39, FAISS's minimum points per centroid), a starting nprobe of nlist / 32
    (at least 8; :func:`calibrated_nprobe` sets the one used once the vectors are in), k-means on 64 vectors per
    list (1M vectors: 2,048 lists trained on 131k vectors, 45 s for IVF-Flat train + add on 2 cores, where 256 per
    list over 4 sqrt(n) lists took hours); for PQ, m sub-quantisers of about 4 dimensions each (a
    divisor of dim) and 8 bits each (fewer when n is small)."""
    target = 2 ** round(math.log2(max(1.0, 2 * math.sqrt(n))))
    nlist = max(1, min(target, n // 39))
    params = {"nlist": nlist, "nprobe": min(nlist, max(8, nlist // 32)), "train_size": min(n, 64 * nlist)}
    if kind == "ivfpq":
        m = max(d for d in range(1, dim + 1) if dim % d == 0 and d <= max(1, dim // 4))
        params.update(m=m, nbits=int(max(4, min(8, math.floor(math.log2(max(16, n // 39)))))))
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


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(_meta_path(path), isolation_level=None)  # transactions are explicit (BEGIN / COMMIT)
    db.executescript(_SCHEMA)
    return db


def _write_pending(index, path: Path, generation: int) -> Path:
    """Write ``index`` under the temporary name of ``generation`` beside ``path`` (fsynced) -> that name."""
    faiss = import_faiss()
    tmp = _pending_path(path, generation)
    faiss.write_index(index, str(tmp))
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
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
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def build_index(feature_files: list[str | os.PathLike], out: str | os.PathLike, kind: str = "flat",
                metric: str = "cosine") -> GalleryIndex:
    """A new index ``out`` (refused if it exists) of every vector of ``feature_files`` -> the open index."""
    if kind not in KINDS or metric not in METRICS:
        raise ConfigError(f"index kind must be one of {', '.join(KINDS)} and metric one of {', '.join(METRICS)} "
                          f"(got --kind {kind}, --metric {metric})")
    out = Path(out)
    if out.exists() or _meta_path(out).exists():
        raise DataError(out, "index already exists; add to it with `pamtri index add` or choose another --out")
    fs = concat_features(feature_files)
    _refuse_duplicates(feature_files[0], fs.names, set())
    x = _prepare(fs.features, metric)
    index, params = new_faiss_index(x, kind, metric)
    index.add(x)
    if kind != "flat":
        nprobe, recall = calibrated_nprobe(index, x, metric)
        params.update(nprobe=nprobe, nprobe_recall=round(recall, 3))
    out.parent.mkdir(parents=True, exist_ok=True)
    db = _connect(out)
    info = {"model_sha256": fs.model_sha256, "dim": int(x.shape[1]), "metric": metric, "kind": kind,
            "params": params, "reid_weights": fs.reid_weights, "pose_weights": fs.pose_weights}
    tmp = _write_pending(index, out, 1)
    _commit(db, fs, 0, 1, info)
    os.replace(tmp, out)
    return GalleryIndex(out, index, db)


def open_index(path: str | os.PathLike) -> GalleryIndex:
    """The index at ``path`` as last committed: a pending FAISS file the metadata records is renamed into place,
    one it does not record (an add that failed before its commit) is removed."""
    faiss = import_faiss()
    path = Path(path)
    if not _meta_path(path).exists():
        raise DataError(path, f"not a pamtri index (no {_meta_path(path).name}); create it with `pamtri index build`")
    db = _connect(path)
    row = db.execute("SELECT value FROM info WHERE key = 'generation'").fetchone()
    generation = json.loads(row[0]) if row else 0
    for stale in path.parent.glob(f".{path.name}.g*.tmp"):
        if stale == _pending_path(path, generation):
            os.replace(stale, path)
        else:
            stale.unlink()
    if not path.exists():
        raise DataError(path, "the FAISS file of this index is missing")
    index = faiss.read_index(str(path))
    rows = db.execute("SELECT COUNT(*) FROM images").fetchone()[0]
    if index.ntotal != rows:
        raise DataError(path, f"FAISS file holds {index.ntotal} vectors, its metadata {rows}")
    if hasattr(index, "nprobe"):
        index.nprobe = json.loads(db.execute("SELECT value FROM info WHERE key = 'params'").fetchone()[0])["nprobe"]
    return GalleryIndex(path, index, db)


def _refuse_duplicates(source, names: list[str], existing: set[str]) -> None:
    seen, dupes = set(existing), []
    for n in names:
        if n in seen:
            dupes.append(n)
        seen.add(n)
    if dupes:
        raise DataError(source, f"{len(dupes)} image(s) already in the index or repeated (first: {dupes[0]}); "
                                "pass --skip-existing to add only the new ones")


def _subset(fs: FeatureSet, keep: list[int]) -> FeatureSet:
    def pick(values: list) -> list:
        return [values[i] for i in keep]
    return FeatureSet(fs.features[keep], pick(fs.names), pick(fs.paths), pick(fs.cameras), pick(fs.tracks),
                      pick(fs.timestamps), fs.model_sha256, fs.reid_weights, fs.pose_weights)


def add_to_index(path: str | os.PathLike, feature_files: list[str | os.PathLike], skip_existing: bool = False
                 ) -> tuple[int, int]:
    """Add the vectors of ``feature_files`` to the index at ``path`` atomically -> (added, skipped). Images
    already there are refused (DataError) or, with ``skip_existing``, skipped by name."""
    idx = open_index(path)
    try:
        fs = concat_features(feature_files)
        _check_identity(feature_files[0], fs, idx.info["model_sha256"], idx.info["dim"])
        existing = {r[0] for r in idx.db.execute("SELECT name FROM images")}
        total = len(fs.names)
        if skip_existing:
            fs = _subset(fs, [i for i, n in enumerate(fs.names) if n not in existing])
        _refuse_duplicates(feature_files[0], fs.names, existing)
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
    from pamtri.reid.distance import from_similarity
    sim, pos = idx.faiss.search(x, k)
    return pos, from_similarity(sim, idx.info["metric"])


def search_index(idx: GalleryIndex, query: np.ndarray, top: int = 10, query_cameras: list | None = None,
                 exclude_same_camera: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(Q, D) features -> (positions (Q, top), distances (Q, top)) rank 1 first, -1 / inf past the gallery's end.
    With ``exclude_same_camera``, gallery images of the query's camera (``query_cameras``) are left out."""
    x = _prepare(query, idx.info["metric"])
    top = max(1, top)
    if not exclude_same_camera:
        pos, dist = _faiss_search(idx, x, min(top, len(idx)))
        return _pad(pos, dist, top)
    cams = np.array([-1 if c is None else c for c in _column(idx, "camera")])
    out_pos, out_dist = np.full((len(x), top), -1), np.full((len(x), top), np.inf, np.float32)
    for qi in range(len(x)):
        k = min(len(idx), 4 * top)
        while True:  # widen the search until enough other-camera results (or the whole gallery)
            pos, dist = _faiss_search(idx, x[qi:qi + 1], k)
            ok = (pos[0] >= 0) & (cams[np.maximum(pos[0], 0)] != query_cameras[qi])
            if ok.sum() >= top or k == len(idx):
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
        import torch

        from pamtri.reid.distance import pairwise_distance
        self.idx, self.q, self.metric, self.block = idx, torch.from_numpy(queries), idx.info["metric"], block
        self._dist = pairwise_distance
        self.nq, self.n = len(queries), len(queries) + len(idx)
        if hasattr(idx.faiss, "make_direct_map"):
            idx.faiss.make_direct_map()

    def _vectors(self, rows: np.ndarray):
        import torch
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
        from pamtri.reid.rerank import smallest_k
        x = self._vectors(rows)
        pos, dist = _search_full(self.idx, np.ascontiguousarray(x.numpy()), min(k, len(self.idx)))
        d2 = np.concatenate([np.square(self._dist(x, self.q, self.metric).numpy()), np.square(dist)], 1)
        ids = np.concatenate([np.broadcast_to(np.arange(self.nq), (len(rows), self.nq)), pos + self.nq], 1)
        return smallest_k(d2, ids, k)[0], self._rowmax(x)

    def gallery_nearest(self, top: int) -> tuple[np.ndarray, np.ndarray]:
        pos, dist = _search_full(self.idx, self.q.numpy(), top)
        return pos, np.square(dist)

    def pairs(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        from pamtri.reid.distance import squared_pairs
        return squared_pairs(self._vectors(rows), self._vectors(cols), self.metric)


def rerank_index(idx: GalleryIndex, query: np.ndarray, top: int = 10, candidates: int = 100,
                 query_cameras: list | None = None, exclude_same_camera: bool = False
                 ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`search_index` with k-reciprocal re-ranking of each query's ``candidates`` nearest (at least
    ``top``) from the index's neighbour lists -> (positions (Q, top), re-ranked distances (Q, top))."""
    from pamtri.reid.rerank import rerank_space
    pos, dist = rerank_space(IndexSpace(idx, _prepare(query, idx.info["metric"])), max(top, candidates))
    if exclude_same_camera:
        cams = np.array([-1 if c is None else c for c in _column(idx, "camera")])
        keep = cams[pos] != np.asarray(query_cameras)[:, None]
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


def query_features(features: str | os.PathLike | None, images: list[str] | None, idx: GalleryIndex,
                   pose_weights: str | None = None, reid_weights: str | None = None, **pipeline_options
                   ) -> FeatureSet:
    """The queries of ``pamtri index search``: an embed file (``features``) or image files embedded with the
    weights given (default: those the index records); DataError when their model is not the index's."""
    if features is not None:
        fs = read_features(features)
        source = features
    else:
        from pamtri.common.checkpoint import file_sha256

        from .infer import Pipeline
        reid_w = reid_weights or idx.info["reid_weights"]
        pipe = Pipeline.from_weights(pose_weights or idx.info["pose_weights"] or None, reid_w, **pipeline_options)
        n = len(images)
        fs = FeatureSet(pipe.embed(list(images))["features"], [os.path.basename(p) for p in images], list(images),
                        [None] * n, [None] * n, [None] * n, file_sha256(reid_w), reid_w, "")
        source = reid_w
    _check_identity(source, fs, idx.info["model_sha256"], idx.info["dim"])
    return fs


def search_to_csv(path: str | os.PathLike, features: str | os.PathLike | None = None, images: list[str] | None = None,
                  *, top: int = 10, exclude_same_camera: bool = False, rerank: bool = False, rerank_top: int = 100,
                  out: str | os.PathLike | None = None, png: str | os.PathLike | None = None, **embed_options
                  ) -> list[dict]:
    """Search the index at ``path`` for the queries of :func:`query_features` -> result rows (columns
    RESULT_COLUMNS, rank 1 first), written to the CSV ``out`` and drawn as a rank list PNG ``png`` when given;
    with ``rerank`` the ``rerank_top`` nearest are k-reciprocal re-ranked (:func:`rerank_index`).
    ``embed_options``: pose_weights, reid_weights and the ``Pipeline.from_weights`` options for ``images``."""
    idx = open_index(path)
    try:
        queries = query_features(features, images, idx, **embed_options)
        if exclude_same_camera and any(c is None for c in queries.cameras):
            raise DataError(features, "--exclude-same-camera needs query cameras (a `cameras` array in the features)")
        search = rerank_index if rerank else search_index
        extra = {"candidates": rerank_top} if rerank else {}
        pos, dist = search(idx, queries.features, top, query_cameras=queries.cameras,
                           exclude_same_camera=exclude_same_camera, **extra)
        names, paths, cams = _column(idx, "name"), _column(idx, "path"), _column(idx, "camera")
    finally:
        idx.close()
    rows = [{"query": q, "rank": r + 1, "image": names[p], "distance": float(d), "camera": cams[p]}
            for q, qp, qd in zip(queries.names, pos, dist) for r, (p, d) in enumerate(zip(qp, qd)) if p >= 0]
    if out is not None:
        _write_csv(out, rows)
    if png is not None:
        from .search import draw_search
        draw_search(queries.paths, paths, pos, dist, png)
    return rows


def _write_csv(path: str | os.PathLike, rows: list[dict]) -> None:
    import csv

    from pamtri.common.atomic import atomic_write
    with atomic_write(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=RESULT_COLUMNS)
        writer.writeheader()
        writer.writerows({**r, "camera": "" if r["camera"] is None else r["camera"]} for r in rows)
