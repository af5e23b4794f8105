"""Cross-camera association: tracklet features -> global identities by constrained agglomerative clustering.

Impossible pairs (cannot-links): two tracklets of one camera overlapping in time (always), and with
constraints on: one camera's tracklets more than ``same_camera_gap`` seconds apart, cameras the topology does
not connect, and travel times (from leaving one camera to entering the other) outside the link's window.

Clustering is average linkage with cannot-links, driven by a lazy priority queue of candidate pairs: the
closest pair is popped, its clusters' current linkage recomputed (pushed back if it grew), and merged when
below the threshold and no member pair is impossible. Up to ``dense_max`` tracklets the candidates are all
pairs of a dense (N, N) distance matrix; beyond it they are the edges of the FAISS k-NN graph (memory grows
with N x k), and a pair outside the graph counts at the larger of its two k-th neighbour distances (a lower
bound of its true distance).
"""
from __future__ import annotations

import heapq
import logging
from dataclasses import dataclass

import numpy as np

from pamtri.reid.distance import normalise
from pamtri.reid.rerank import rerank, rerank_neighbours

from .config import AssociationConfig

log = logging.getLogger(__name__)


@dataclass
class Timing:
    """Per-tracklet camera id (N,), start and end (N,) global seconds, and the topology's windows."""
    cams: np.ndarray
    start: np.ndarray
    end: np.ndarray
    windows: dict[tuple[int, int], tuple[float, float]]


def feasible(t: Timing, i: np.ndarray, j: np.ndarray, cfg: AssociationConfig) -> np.ndarray:
    """(P,) bool: may tracklets i[p] and j[p] be one vehicle?"""
    i, j = np.asarray(i), np.asarray(j)
    ci, cj = t.cams[i], t.cams[j]
    gap = np.maximum(t.start[j] - t.end[i], t.start[i] - t.end[j])  # < 0: overlapping in time
    same = ci == cj
    ok = ~same | (gap > 0)
    if not cfg.constraints:
        return ok & (i != j)
    ok &= ~same | (gap <= cfg.same_camera_gap)
    if t.windows:
        lo = np.full(len(i), np.inf)
        hi = np.full(len(i), -np.inf)
        for (a, b), (w0, w1) in t.windows.items():
            sel = (ci == a) & (cj == b)
            lo[sel], hi[sel] = w0, w1
        ok &= same | ((gap >= lo) & (gap <= hi))
    return ok & (i != j)


class _Dense:
    def __init__(self, dist: np.ndarray):
        self.d = dist                         # (N, N), inf where impossible

    def linkage(self, a: list[int], b: list[int]) -> float:
        return float(self.d[np.ix_(a, b)].mean())


class _Sparse:
    def __init__(self, edges: dict[tuple[int, int], float], floor: np.ndarray, timing: Timing,
                 cfg: AssociationConfig):
        self.e, self.floor, self.t, self.cfg = edges, floor, timing, cfg

    def linkage(self, a: list[int], b: list[int]) -> float:
        ia = np.repeat(a, len(b))
        ib = np.tile(b, len(a))
        if not feasible(self.t, ia, ib, self.cfg).all():
            return float("inf")
        total = 0.0
        for x, y in zip(ia.tolist(), ib.tolist()):
            d = self.e.get((x, y) if x < y else (y, x))
            total += d if d is not None else max(self.floor[x], self.floor[y])
        return total / len(ia)


def cluster(n: int, cand_i: np.ndarray, cand_j: np.ndarray, cand_d: np.ndarray, space, threshold: float
            ) -> np.ndarray:
    """(N,) int64 cluster labels 0..K-1 (in order of first member) from candidate pairs and a linkage space."""
    parent = np.arange(n)
    members: dict[int, list[int]] = {k: [k] for k in range(n)}

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    keep = cand_d < threshold
    heap = list(zip(cand_d[keep].tolist(), cand_i[keep].tolist(), cand_j[keep].tolist()))
    heapq.heapify(heap)
    merges = 0
    while heap:
        d, i, j = heapq.heappop(heap)
        ra, rb = find(i), find(j)
        if ra == rb:
            continue
        a, b = members[ra], members[rb]
        if len(a) == 1 and len(b) == 1:
            link = d
        else:
            link = space.linkage(a, b)
        if not link < threshold:
            continue
        if link > d + 1e-6:  # the clusters drifted apart since this pair was queued
            heapq.heappush(heap, (link, ra, rb))
            continue
        if len(a) < len(b):
            ra, rb, a, b = rb, ra, b, a
        parent[rb] = ra
        a.extend(b)
        del members[rb]
        merges += 1
    roots = np.array([find(k) for k in range(n)])
    _, labels = np.unique(roots, return_inverse=True)
    order = {}
    out = np.empty(n, np.int64)
    for k, lab in enumerate(labels):
        out[k] = order.setdefault(int(lab), len(order))
    log.debug("clustering: %d merges, %d clusters", merges, len(order))
    return out


def associate(features: np.ndarray, timing: Timing, cfg: AssociationConfig) -> tuple[np.ndarray, str]:
    """(N, D) unit-norm tracklet features -> ((N,) global labels 0..K-1, 'dense' or 'sparse')."""
    n = len(features)
    if n == 0:
        return np.zeros(0, np.int64), "dense"
    if n == 1:
        return np.zeros(1, np.int64), "dense"
    features = np.ascontiguousarray(features, np.float32)
    thr = cfg.rerank_threshold if cfg.rerank else cfg.threshold
    if n <= cfg.dense_max:
        dist = dense_distances(features, cfg)
        iu, ju = np.triu_indices(n, 1)
        ok = feasible(timing, iu, ju, cfg)
        dist[iu[~ok], ju[~ok]] = np.inf
        dist[ju[~ok], iu[~ok]] = np.inf
        np.fill_diagonal(dist, np.inf)
        iu, ju = iu[ok], ju[ok]
        return cluster(n, iu, ju, dist[iu, ju], _Dense(dist), thr), "dense"
    i, j, d, floor = knn_edges(features, cfg)
    ok = feasible(timing, i, j, cfg)
    i, j, d = i[ok], j[ok], d[ok]
    edges = dict(zip(zip(i.tolist(), j.tolist()), d.tolist()))
    return cluster(n, i, j, d, _Sparse(edges, floor, timing, cfg), thr), "sparse"


def dense_distances(features: np.ndarray, cfg: AssociationConfig) -> np.ndarray:
    """(N, N) float32 cosine distances of unit-norm features, k-reciprocally re-ranked with ``cfg.rerank``."""
    f = np.asarray(normalise(features), np.float32)
    dist = np.clip(1.0 - f @ f.T, 0.0, 2.0).astype(np.float32)
    if cfg.rerank:
        dist = rerank(dist, dist, dist, k1=cfg.k1, k2=cfg.k2, lambda_value=cfg.lambda_value).astype(np.float32)
        dist = np.minimum(dist, dist.T)
    return dist


def knn_edges(features: np.ndarray, cfg: AssociationConfig
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Candidate pairs (i < j) of the k-NN graph with their distances, and each tracklet's k-th neighbour
    distance (N,): FAISS inner product on unit features (cosine), or k-reciprocal re-ranked lists."""
    n = len(features)
    k = min(cfg.knn, n - 1)
    if cfg.rerank:
        ids, dist = rerank_neighbours(features, features, top=k + 1, metric="cosine", k1=cfg.k1, k2=cfg.k2,
                                      lambda_value=cfg.lambda_value)
    else:
        import faiss
        index = faiss.IndexFlatIP(features.shape[1])
        index.add(features)
        sim, ids = index.search(features, k + 1)
        dist = np.clip(1.0 - sim, 0.0, 2.0).astype(np.float32)
    rows = np.repeat(np.arange(n), ids.shape[1])
    cols = ids.reshape(-1).astype(np.int64)
    d = dist.reshape(-1)
    keep = (cols >= 0) & (cols != rows)
    rows, cols, d = rows[keep], cols[keep], d[keep]
    a, b = np.minimum(rows, cols), np.maximum(rows, cols)
    key = a * n + b
    order = np.lexsort((d, key))
    key, a, b, d = key[order], a[order], b[order], d[order]
    first = np.r_[True, key[1:] != key[:-1]]
    floor = dist[:, -1].astype(np.float64)
    return a[first], b[first], d[first].astype(np.float64), floor
