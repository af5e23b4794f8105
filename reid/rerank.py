"""k-reciprocal re-ranking (Zhong et al., CVPR 2017) from k-nearest-neighbour lists, never an N x N matrix.

The images are the Q queries and G gallery images together (N = Q + G; rows 0..Q-1 are the queries). A
*space* gives each row's k nearest rows (k = max(k1 + 1, k2), squared distances d^2, ties by row) and its
largest squared distance to any row, plus d^2 of any listed pair. From those, for each query's candidate list
(its ``top`` nearest gallery images by the original distance):

1. neighbour lists only for the rows the candidates need (the queries, the candidates, their k2 nearest, the
   k1 + 1 nearest of those, the k1 / 2 + 1 nearest of those: the paper's sets never look further);
2. the k1-reciprocal sets expanded with the k1/2-reciprocal sets (2/3 overlap rule), the sparse Gaussian
   encoding V (row i: exp(-d^2(i, j) / max_j d^2(i, j)) over its set, summing to 1), its k2 query expansion;
3. the Jaccard distance 1 - m / (2 - m), m = sum_k min(V_q[k], V_g[k]), and
   final = (1 - lambda) * Jaccard + lambda * d^2(q, g) / max_j d^2(q, j), both only for the candidate pairs.

What differs from the dense algorithm (``pipeline.bench.baselines.rerank_dense``): nothing for the pairs of
the candidate list; gallery images outside a query's list get no re-ranked distance (they rank after the
list; ``reid.metrics.metrics_from_ranked_lists`` orders them by the original distance). With ``top`` >= G the
result is the dense one (up to float rounding and the order of exact ties). Memory: O(N * k) for the lists,
O(N * k1 * k2) non-zeros of the expanded V, O(Q * top) for the result, and a (block x N) slab of distances.
"""
from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp
import torch

from .distance import RerankSpace, prepared, squared_block, squared_pairs

log = logging.getLogger(__name__)


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def smallest_k(d2: np.ndarray, cols: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k smallest of d2 (B, C) over column ids ``cols`` (C,) or (B, C), ties by id -> (ids, d2) (B, k)."""
    cols = np.broadcast_to(cols, d2.shape)
    if k < d2.shape[1]:
        part = np.argpartition(d2, k - 1, axis=1)[:, :k]
        d2, cols = np.take_along_axis(d2, part, 1), np.take_along_axis(cols, part, 1)
    order = np.lexsort((cols, d2), axis=1)[:, :k]
    return np.take_along_axis(cols, order, 1).astype(np.int64), np.take_along_axis(d2, order, 1)


def smallest_topk(d2: torch.Tensor, k: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k smallest of d2 (B, C), ties by column among torch.topk's picks -> (ids + offset, d^2) (B, k)
    (torch.topk: ~6x numpy's argpartition for 21 of 13,000 float32 columns on one core)."""
    val, idx = torch.topk(d2, min(k, d2.shape[1]), dim=1, largest=False)
    return smallest_k(val.numpy(), idx.numpy() + offset, k)


class FeatureSpace:
    """The re-ranking space (a ``reid.distance.RerankSpace``) of (Q, D) query and (G, D) gallery features:
    distances as ``reid.distance.pairwise_distance`` (euclidean, or cosine 1 - cos), squared; lists by blocked
    matmul + top-k, blocks of about ``memory_mib`` MiB."""

    def __init__(self, query, gallery, metric: str = "euclidean", memory_mib: int = 256):
        x = torch.cat([torch.as_tensor(_np(query)), torch.as_tensor(_np(gallery))])
        self.x = prepared(x, metric)
        self.sq = (self.x * self.x).sum(1)
        self.metric, self.nq, self.n = metric, len(query), len(x)
        self.block = max(1, (memory_mib << 20) // (8 * self.n))  # the slab and top-k's scratch

    def _d2(self, rows, cols: slice = slice(None)) -> torch.Tensor:
        """(R, C) float32 squared distances of rows (indices or a slice) to the rows ``cols``."""
        return squared_block(self.x[rows], self.x[cols], self.metric, self.sq[rows], self.sq[cols])

    def nearest(self, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows (R,) -> (ids (R, k) of the k nearest rows, ties by id), row max of d^2 (R,) float64)."""
        ids, top = np.empty((len(rows), min(k, self.n)), np.int64), np.empty(len(rows), np.float64)
        for s in range(0, len(rows), self.block):
            d2 = self._d2(torch.from_numpy(rows[s:s + self.block]))
            ids[s:s + self.block] = smallest_topk(d2, k)[0]
            top[s:s + self.block] = d2.max(1).values.numpy()
        return ids, top

    def gallery_nearest(self, top: int) -> tuple[np.ndarray, np.ndarray]:
        """Each query's ``top`` nearest gallery images -> (gallery positions (Q, top), d^2 (Q, top))."""
        parts = [smallest_topk(self._d2(slice(s, min(s + self.block, self.nq)), slice(self.nq, None)), top)
                 for s in range(0, self.nq, self.block)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]).astype(np.float64)

    def pairs(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """d^2 (P,) float64 of the pairs (rows[i], cols[i]), in chunks."""
        out = np.empty(len(rows), np.float64)
        for s in range(0, len(rows), 16384):
            out[s:s + 16384] = squared_pairs(self.x[rows[s:s + 16384]], self.x[cols[s:s + 16384]], self.metric)
        return out


class MatrixSpace:
    """The re-ranking space (a ``reid.distance.RerankSpace``) of plain distance matrices q_g (Q, G), q_q (Q, Q),
    g_g (G, G) (not squared); neighbour lists in blocks of ``block`` rows (a (block, N) slab: partial sorts of
    blocks that stay in cache run ~3x faster than one of the whole matrix)."""

    def __init__(self, q_g, q_q, g_g, block: int = 256):
        self.q_g, self.q_q, self.g_g = _np(q_g), _np(q_q), _np(g_g)
        self.nq, ng = self.q_g.shape
        if self.q_q.shape != (self.nq, self.nq) or self.g_g.shape != (ng, ng):
            raise ValueError(f"shapes do not fit: q_g {self.q_g.shape}, q_q {self.q_q.shape}, g_g {self.g_g.shape}")
        self.n, self.block = self.nq + ng, max(1, block)

    def _rows(self, rows: np.ndarray, buf: np.ndarray) -> np.ndarray:
        """(R, N) float32 squared distances of ``rows`` (all queries or all gallery rows), written into ``buf``
        (reused: a fresh slab per block costs its page faults, and the concatenations a copy; 4x slower)."""
        out, nq = buf[:len(rows)], self.nq
        # mode "clip": take writes straight into the strided views (the default mode buffers); rows are ours
        if rows[0] < nq:
            np.take(self.q_q, rows, 0, out[:, :nq], "clip")
            np.take(self.q_g, rows, 0, out[:, nq:], "clip")
        else:
            np.take(self.q_g, rows - nq, 1, out[:, :nq].T, "clip")
            np.take(self.g_g, rows - nq, 0, out[:, nq:], "clip")
        return np.square(out, out=out)

    def nearest(self, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        ids, top = np.empty((len(rows), min(k, self.n)), np.int64), np.empty(len(rows), np.float64)
        buf = np.empty((min(self.block, len(rows)), self.n), np.float32)
        for part in (np.flatnonzero(rows < self.nq), np.flatnonzero(rows >= self.nq)):
            for s in range(0, len(part), self.block):
                at = part[s:s + self.block]
                d2 = self._rows(rows[at], buf)
                ids[at], top[at] = smallest_topk(torch.from_numpy(d2), k)[0], d2.max(1)
        return ids, top

    def gallery_nearest(self, top: int) -> tuple[np.ndarray, np.ndarray]:
        return smallest_k(np.square(self.q_g), np.arange(self.q_g.shape[1]), top)

    def pairs(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        nq, out = self.nq, np.empty(rows.shape, np.float64)
        rq, cq = rows < nq, cols < nq
        for mask, fetch in (((rq & cq), lambda r, c: self.q_q[r, c]), ((rq & ~cq), lambda r, c: self.q_g[r, c - nq]),
                            ((~rq & cq), lambda r, c: self.q_g[c, r - nq]),
                            ((~rq & ~cq), lambda r, c: self.g_g[r - nq, c - nq])):
            out[mask] = fetch(rows[mask], cols[mask])
        return np.square(out)


class _Lists:
    """Neighbour lists (N, k) and row maxima of d^2 (N,), computed on demand, block by block."""

    def __init__(self, space, k: int):
        self.space, self.k = space, min(k, space.n)
        self.ids = np.full((space.n, self.k), -1, np.int64)
        self.rowmax = np.zeros(space.n, np.float64)
        self.done = np.zeros(space.n, bool)

    def expand(self, rows: np.ndarray, width: int) -> np.ndarray:
        """Sorted ``rows`` and their ``width`` nearest, every one of them with its list computed."""
        todo = rows[~self.done[rows]]
        if len(todo):
            self.ids[todo], self.rowmax[todo] = self.space.nearest(todo, self.k)
            self.done[todo] = True
        out = np.union1d(rows, self.ids[rows, :width])
        todo = out[~self.done[out]]
        if len(todo):
            self.ids[todo], self.rowmax[todo] = self.space.nearest(todo, self.k)
            self.done[todo] = True
        return out


def _reciprocal(ids: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """(R, k+1) k-reciprocal neighbours of ``rows`` (in both top k+1 lists), -1 where not reciprocal."""
    fwd = ids[rows, :k + 1]
    back = ids[fwd, :k + 1]  # (R, k+1, k+1)
    return np.where((back == rows[:, None, None]).any(-1), fwd, -1)


def _expansion_sets(ids: np.ndarray, rows: np.ndarray, k1: int, block: int) -> list[np.ndarray]:
    """Per block of ``rows``: (b, S) sorted k-reciprocal expansion sets (paper eq. 7), -1 padded at the end."""
    n = len(ids)
    half = int(np.around(k1 / 2.0))
    members = np.unique(ids[rows, :k1 + 1])
    r_half = np.full((n, half + 1), -1, np.int64)
    r_half[members] = _reciprocal(ids, members, half)
    out = []
    for s in range(0, len(rows), block):
        r = _reciprocal(ids, rows[s:s + block], k1)                            # (b, A)
        cand = np.where(r[:, :, None] >= 0, r_half[np.maximum(r, 0)], -1)      # (b, A, H)
        member = (cand[..., None] == r[:, None, None, :]).any(-1) & (cand >= 0)
        accept = (member.sum(-1) > (2.0 / 3.0) * (cand >= 0).sum(-1)) & (r >= 0)
        merged = np.concatenate([r, np.where(accept[..., None], cand, -1).reshape(len(r), -1)], axis=1)
        merged = np.sort(np.where(merged >= 0, merged, n), axis=1)
        merged[:, 1:][merged[:, 1:] == merged[:, :-1]] = n
        merged = np.sort(merged, axis=1)
        used = int((merged < n).sum(1).max())
        out.append(np.where(merged[:, :used] < n, merged[:, :used], -1))
    return out


def _encode(space, lists: _Lists, rows: np.ndarray, k1: int, block: int) -> sp.csr_matrix:
    """Sparse V (N x N), rows ``rows`` only: V[i, j] = exp(-d^2(i, j) / max d^2(i, .)) over i's expansion set,
    normalised to sum 1 (paper eq. 8)."""
    n = space.n
    r_parts, c_parts = [], []
    for s, sets in zip(range(0, len(rows), block), _expansion_sets(lists.ids, rows, k1, block)):
        valid = sets >= 0
        r_parts.append(np.broadcast_to(rows[s:s + block, None], sets.shape)[valid])
        c_parts.append(sets[valid])
    r, c = np.concatenate(r_parts), np.concatenate(c_parts)
    w = np.exp(-space.pairs(r, c) / np.where(lists.rowmax[r] > 0, lists.rowmax[r], 1.0))
    sums = np.bincount(r, weights=w, minlength=n)
    return sp.csr_matrix((w / sums[r], (r, c)), shape=(n, n))


def _min_terms(v: sp.csr_matrix, csc: sp.csc_matrix, s: int, e: int) -> tuple[np.ndarray, np.ndarray]:
    """For the query rows s..e-1 of ``v`` and the gallery rows of ``csc`` (V's gallery rows, column-major): every
    pair of non-zeros V[q, k], V[g, k] sharing a column k -> (keys (q - s) * G + g, min(V[q, k], V[g, k]))."""
    vq = v[s:e].tocoo()
    lens = np.diff(csc.indptr)[vq.col]
    total = int(lens.sum())
    starts = np.repeat(csc.indptr[vq.col] - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens)
    pos = starts + np.arange(total)
    keys = np.repeat(vq.row.astype(np.int64), lens) * csc.shape[0] + csc.indices[pos]
    return keys, np.minimum(np.repeat(vq.data, lens), csc.data[pos])


def _min_sums(v: sp.csr_matrix, nq: int, cand: np.ndarray, block: int) -> np.ndarray:
    """(Q, L) m[q, l] = sum_k min(V[q, k], V[g, k]) for g = gallery position cand[q, l]."""
    ng, top = v.shape[0] - nq, cand.shape[1]
    csc = v[nq:].tocsc()  # gallery rows, column-major: column k -> gallery rows holding k
    out = np.zeros((nq, top), np.float64)
    for s in range(0, nq, block):
        e = min(s + block, nq)
        keys, terms = _min_terms(v, csc, s, e)
        want = (np.arange(e - s, dtype=np.int64)[:, None] * ng + cand[s:e]).reshape(-1)
        order = np.argsort(want)
        at = np.minimum(np.searchsorted(want, keys, sorter=order), len(want) - 1)
        hit = want[order[at]] == keys
        out[s:e] = np.bincount(order[at[hit]], weights=terms[hit], minlength=len(want)).reshape(e - s, top)
    return out


def _encoded(space: RerankSpace, outer: np.ndarray, k1: int, k2: int, block: int) -> tuple[sp.csr_matrix, _Lists]:
    """(V after the k2 query expansion, its rows ``outer`` filled, sorted indices; the neighbour lists): every
    list the rows ``outer`` need, computed once."""
    lists = _Lists(space, max(k1 + 1, k2))
    encoded = lists.expand(outer, k2)  # the rows whose V the query expansion of ``outer`` averages
    lists.expand(lists.expand(encoded, k1 + 1), int(np.around(k1 / 2.0)) + 1)  # what their expansion sets read
    v = _encode(space, lists, encoded, k1, block)
    if k2 != 1:
        pairs = (np.repeat(outer, k2), lists.ids[outer, :k2].reshape(-1))
        a = sp.csr_matrix((np.full(len(outer) * k2, 1.0 / k2), pairs), shape=(space.n, space.n))
        v = (a @ v).tocsr()
    v.sort_indices()
    return v, lists


def _blend(m: np.ndarray, d2: np.ndarray, rowmax: np.ndarray, lambda_value: float) -> np.ndarray:
    """(1 - lambda) * Jaccard(m) + lambda * d^2 / row max, from min-sums m and d^2 (R, C), row maxima (R,)."""
    rowmax = np.where(rowmax > 0, rowmax, 1.0)
    return (1.0 - m / (2.0 - m)) * (1.0 - lambda_value) + d2 / rowmax[:, None] * lambda_value


def _clamped(space: RerankSpace, k1: int, k2: int) -> tuple[int, int]:
    """k1, k2 checked and clamped to the images there are (fewer images than neighbours: all of them)."""
    if k1 < 1 or k2 < 1:
        raise ValueError("k1 and k2 must be >= 1")
    return min(k1, space.n - 1), min(k2, space.n)


def rerank_space(space: RerankSpace, top: int, k1: int = 20, k2: int = 6, lambda_value: float = 0.3, block: int = 256
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Re-ranked candidate lists of each query of ``space`` (:class:`FeatureSpace`, :class:`MatrixSpace`,
    ``pipeline.index.IndexSpace``: the ``reid.distance.RerankSpace`` protocol) -> (gallery positions
    (Q, top) int64, re-ranked distances (Q, top) float32), each row ascending (ties by gallery position)."""
    k1, k2 = _clamped(space, k1, k2)
    nq = space.nq
    top = max(1, min(top, space.n - nq))
    cand, cand_d2 = space.gallery_nearest(top)
    outer = np.union1d(np.arange(nq), nq + cand.reshape(-1))  # the rows whose V the Jaccard step reads
    v, lists = _encoded(space, outer, k1, k2, block)
    final = _blend(_min_sums(v, nq, cand, max(1, block // 4)), cand_d2, lists.rowmax[:nq], lambda_value)
    order = np.lexsort((cand, final), axis=1)
    log.debug("re-ranking: %d queries x %d candidates, lists for %d of %d rows, V with %d non-zeros",
              nq, top, int(lists.done.sum()), space.n, v.nnz)
    return np.take_along_axis(cand, order, 1), np.take_along_axis(final, order, 1).astype(np.float32)


def rerank_neighbours(query, gallery, top: int = 100, metric: str = "euclidean", k1: int = 20, k2: int = 6,
                      lambda_value: float = 0.3, memory_mib: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Re-ranked ``top`` gallery images of each of the (Q, D) ``query`` features among the (G, D) ``gallery``
    features -> (gallery positions (Q, top) int64, distances (Q, top) float32), nearest first; distance slabs
    of about ``memory_mib`` MiB."""
    return rerank_space(FeatureSpace(query, gallery, metric, memory_mib), top, k1, k2, lambda_value)


def rerank(q_g, q_q, g_g, k1: int = 20, k2: int = 6, lambda_value: float = 0.3, block: int = 256) -> np.ndarray:
    """Re-ranked (Q, G) float32 distances from plain distances q_g (Q, G), q_q (Q, Q), g_g (G, G): every gallery
    image is a candidate, so this is the dense algorithm's result. Beyond the inputs it holds the (Q, G) result,
    the neighbour lists, the sparse V and blocks (no candidate lists, no (Q, G) sort or float64 copy)."""
    space = MatrixSpace(q_g, q_q, g_g, block)
    k1, k2 = _clamped(space, k1, k2)
    nq, ng = space.q_g.shape
    v, lists = _encoded(space, np.arange(space.n), k1, k2, block)
    csc = v[nq:].tocsc()  # gallery rows, column-major: column k -> gallery rows holding k
    out = np.empty((nq, ng), np.float32)
    step = max(1, block // 4)
    for s in range(0, nq, step):
        e = min(s + step, nq)
        keys, terms = _min_terms(v, csc, s, e)
        m = np.bincount(keys, weights=terms, minlength=(e - s) * ng).reshape(e - s, ng)
        out[s:e] = _blend(m, np.square(space.q_g[s:e], dtype=np.float64), lists.rowmax[s:e], lambda_value)
    return out
