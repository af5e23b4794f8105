"""k-reciprocal re-ranking (Zhong et al., CVPR 2017) with sparse neighbourhoods instead of N x N matrices.

Same result as the original algorithm (which squares its input distances and divides each row by its
maximum), but the encoding V, its query expansion and the Jaccard step are sparse (each row holds only its
k-reciprocal expansion set), k-nearest neighbours are found in row blocks, and the Jaccard distance is only
formed for query rows. Memory beyond the caller's three input matrices: O(N * k1^2) for the neighbourhood
sets, the sparse V, a (block x N) slab, and the (Q x G) result.
"""
from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp

log = logging.getLogger(__name__)


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


class _SquaredDistances:
    """Row blocks and arbitrary entries of the (N x N) squared-distance matrix [[q_q, q_g], [q_g^T, g_g]]."""

    def __init__(self, q_g: np.ndarray, q_q: np.ndarray, g_g: np.ndarray):
        self.q_g, self.q_q, self.g_g = q_g, q_q, g_g
        self.nq, self.ng = q_g.shape
        self.n = self.nq + self.ng

    def rows(self, s: int, e: int) -> np.ndarray:
        """(e - s, N) float32 squared distances of rows s..e-1."""
        out = np.empty((e - s, self.n), dtype=np.float32)
        q_end = min(e, self.nq)
        if s < q_end:
            out[:q_end - s, :self.nq] = self.q_q[s:q_end]
            out[:q_end - s, self.nq:] = self.q_g[s:q_end]
        g_start = max(s, self.nq)
        if g_start < e:
            r = slice(g_start - s, e - s)
            out[r, :self.nq] = self.q_g[:, g_start - self.nq:e - self.nq].T
            out[r, self.nq:] = self.g_g[g_start - self.nq:e - self.nq]
        np.square(out, out=out)
        return out

    def column_max(self) -> np.ndarray:
        """(N,) maximum squared distance of each column."""
        qmax = np.maximum(self.q_q.max(0), self.q_g.max(1)) if self.nq else np.zeros(0, np.float32)
        gmax = np.maximum(self.q_g.max(0), self.g_g.max(0)) if self.nq else self.g_g.max(0)
        return np.square(np.concatenate([qmax, gmax]).astype(np.float64))

    def entries(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Squared distances at (rows[i], cols[i]) (same shapes), float64."""
        nq = self.nq
        out = np.empty(rows.shape, dtype=np.float64)
        rq, cq = rows < nq, cols < nq
        for mask, fetch in (
            (rq & cq, lambda r, c: self.q_q[r, c]),
            (rq & ~cq, lambda r, c: self.q_g[r, c - nq]),
            (~rq & cq, lambda r, c: self.q_g[c, r - nq]),
            (~rq & ~cq, lambda r, c: self.g_g[r - nq, c - nq]),
        ):
            if mask.any():
                out[mask] = fetch(rows[mask], cols[mask])
        return np.square(out)


def _nearest(dist: _SquaredDistances, colmax: np.ndarray, k: int, block: int) -> np.ndarray:
    """(N, k) int64 indices of each row's k nearest (normalised distance, ascending; ties by index)."""
    n = dist.n
    k = min(k, n)
    out = np.empty((n, k), dtype=np.int64)
    for s in range(0, n, block):
        e = min(s + block, n)
        rows = dist.rows(s, e) / colmax[s:e, None].astype(np.float32)
        part = np.argpartition(rows, k - 1, axis=1)[:, :k] if k < n else np.tile(np.arange(n), (e - s, 1))
        vals = np.take_along_axis(rows, part, 1)
        order = np.lexsort((part, vals), axis=1)
        out[s:e] = np.take_along_axis(part, order, 1)
    return out


def _reciprocal(rank: np.ndarray, k: int, block: int) -> np.ndarray:
    """(N, k+1) indices of each row's k-reciprocal neighbours (top k+1 of both), -1 where not reciprocal."""
    n = len(rank)
    fwd = rank[:, :k + 1]
    out = np.full_like(fwd, -1)
    for s in range(0, n, block):
        e = min(s + block, n)
        f = fwd[s:e]
        back = rank[f, :k + 1]  # (b, k+1, k+1)
        ok = (back == np.arange(s, e)[:, None, None]).any(-1)
        out[s:e] = np.where(ok, f, -1)
    return out


def _expansion_sets(rank: np.ndarray, k1: int, block: int) -> np.ndarray:
    """(N, S) sorted k-reciprocal expansion set of each row (paper eq. 7), -1 padded at the end."""
    n = len(rank)
    half = int(np.around(k1 / 2.0))
    r_full = _reciprocal(rank, k1, block)          # (N, k1+1)
    r_half = _reciprocal(rank, half, block)        # (N, half+1)
    out_rows = []
    width = 0
    for s in range(0, n, block):
        e = min(s + block, n)
        r = r_full[s:e]                             # (b, A)
        cand = np.where(r[:, :, None] >= 0, r_half[np.maximum(r, 0)], -1)  # (b, A, H)
        member = (cand[..., None] == r[:, None, None, :]).any(-1) & (cand >= 0)
        size = (cand >= 0).sum(-1)
        accept = (member.sum(-1) > (2.0 / 3.0) * size) & (r >= 0)
        merged = np.concatenate([r, np.where(accept[..., None], cand, -1).reshape(e - s, -1)], axis=1)
        merged = np.sort(np.where(merged >= 0, merged, n), axis=1)
        dup = np.zeros_like(merged, dtype=bool)
        dup[:, 1:] = merged[:, 1:] == merged[:, :-1]
        merged = np.where(dup | (merged == n), n, merged)
        merged = np.sort(merged, axis=1)
        used = int((merged < n).sum(1).max())
        merged = np.where(merged[:, :used] < n, merged[:, :used], -1)
        out_rows.append(merged)
        width = max(width, used)
    sets = np.full((n, width), -1, dtype=np.int64)
    for s, block_rows in zip(range(0, n, block), out_rows):
        sets[s:s + len(block_rows), :block_rows.shape[1]] = block_rows
    return sets


def _encode(dist: _SquaredDistances, colmax: np.ndarray, sets: np.ndarray) -> sp.csr_matrix:
    """Sparse V (N x N): V[i, j] = exp(-d(i, j)) / sum over the expansion set of i (paper eq. 8)."""
    n = dist.n
    valid = sets >= 0
    rows = np.broadcast_to(np.arange(n)[:, None], sets.shape)[valid]
    cols = sets[valid]
    w = np.exp(-dist.entries(rows, cols) / colmax[rows])
    sums = np.bincount(rows, weights=w, minlength=n)
    return sp.csr_matrix((w / sums[rows], (rows, cols)), shape=(n, n))


def _jaccard_gallery(v: sp.csr_matrix, nq: int, block: int) -> np.ndarray:
    """(Q, G) Jaccard distance 1 - m / (2 - m), m[i, j] = sum_k min(V[i, k], V[j, k]), gallery columns only."""
    n = v.shape[0]
    ng = n - nq
    csc = v[nq:].tocsc()  # gallery rows only, column-major: column k -> gallery rows holding k
    out = np.empty((nq, ng), dtype=np.float32)
    col_len = np.diff(csc.indptr)
    for s in range(0, nq, block):
        e = min(s + block, nq)
        vq = v[s:e].tocoo()
        lens = col_len[vq.col]
        total = int(lens.sum())
        temp = np.zeros((e - s) * ng, dtype=np.float64)
        if total:
            starts = np.repeat(csc.indptr[vq.col] - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens)
            pos = starts + np.arange(total)
            g = csc.indices[pos]
            contrib = np.minimum(np.repeat(vq.data, lens), csc.data[pos])
            temp = np.bincount(np.repeat(vq.row, lens) * ng + g, weights=contrib, minlength=(e - s) * ng)
        temp = temp.reshape(e - s, ng)
        out[s:e] = 1.0 - temp / (2.0 - temp)
    return out


def rerank(q_g, q_q, g_g, k1: int = 20, k2: int = 6, lambda_value: float = 0.3, block: int = 256) -> np.ndarray:
    """Re-ranked (Q, G) float32 distances from plain Euclidean distances q_g (Q, G), q_q (Q, Q), g_g (G, G).

    final = (1 - lambda) * Jaccard(k-reciprocal, k2 query expansion) + lambda * (d^2 / row max of d^2).
    """
    q_g, q_q, g_g = _np(q_g), _np(q_q), _np(g_g)
    nq, ng = q_g.shape
    if q_q.shape != (nq, nq) or g_g.shape != (ng, ng):
        raise ValueError(f"shapes do not fit: q_g {q_g.shape}, q_q {q_q.shape}, g_g {g_g.shape}")
    if k1 < 1 or k2 < 1:
        raise ValueError("k1 and k2 must be >= 1")
    dist = _SquaredDistances(q_g, q_q, g_g)
    colmax = dist.column_max()
    colmax = np.where(colmax > 0, colmax, 1.0)
    rank = _nearest(dist, colmax, max(k1 + 1, k2), block)
    sets = _expansion_sets(rank, k1, block)
    v = _encode(dist, colmax, sets)
    if k2 != 1:
        n = dist.n
        rows = np.repeat(np.arange(n), k2)
        a = sp.csr_matrix((np.full(n * k2, 1.0 / k2), (rows, rank[:, :k2].reshape(-1))), shape=(n, n))
        v = (a @ v).tocsr()
    v.sort_indices()
    jac = _jaccard_gallery(v, nq, max(1, block // 4))
    original = np.square(q_g.astype(np.float64)) / colmax[:nq, None]
    log.debug("re-ranking: %d queries, %d gallery, V with %d non-zeros", nq, ng, v.nnz)
    return (jac * (1.0 - lambda_value) + original * lambda_value).astype(np.float32)
