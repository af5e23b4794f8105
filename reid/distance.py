"""Distances between features, defined once: row normalisation, pairwise distance matrices, the squared
distances re-ranking works on, and the protocol every re-ranking *space* implements.

Metrics: ``euclidean`` ||q - g|| and ``cosine`` 1 - cos(q, g) (features L2-normalised first). Re-ranking works
on squared distances d^2 of the same metric. Users: ``reid.metrics`` (evaluation), ``reid.rerank`` (the feature
and matrix spaces), ``pipeline.index`` (the index space, FAISS similarities turned into these distances).
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch

METRICS = ("euclidean", "cosine")


def check_metric(metric: str) -> str:
    """``metric`` if it is one of METRICS; ValueError naming the choices otherwise."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r} (euclidean or cosine)")
    return metric


def normalise(x):
    """Rows scaled to unit L2 norm (zero rows stay zero): (N, D) torch tensor or numpy array, same type back."""
    if isinstance(x, torch.Tensor):
        return torch.nn.functional.normalize(x, dim=1)
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def prepared(x, metric: str):
    """Features as a metric compares them: float, L2-normalised for cosine (inner product = cosine similarity)."""
    if isinstance(x, torch.Tensor):
        x = x.float()
    else:
        x = np.ascontiguousarray(x, np.float32)
    return normalise(x) if check_metric(metric) == "cosine" else x


def pairwise_distance(query: torch.Tensor, gallery: torch.Tensor, metric: str = "euclidean",
                      block: int = 2048) -> torch.Tensor:
    """(Q, D), (G, D) features -> (Q, G) float32 distances, computed in row blocks of ``block`` queries."""
    q, g = prepared(query, metric), prepared(gallery, metric)
    out = torch.empty(len(q), len(g), dtype=torch.float32)
    g_sq = (g * g).sum(1)
    for s in range(0, len(q), block):
        qb = q[s:s + block]
        if metric == "cosine":
            out[s:s + block] = (1.0 - qb @ g.t()).clamp_min(0.0).cpu()
        else:
            d2 = (qb * qb).sum(1, keepdim=True) + g_sq[None, :] - 2.0 * qb @ g.t()
            out[s:s + block] = d2.clamp_min(0.0).sqrt().cpu()
    return out


def split_embedding(x, layout: tuple[int, int, int]):
    """A flat embedding of a model with parts (N, D + P d + P) -> (global (N, D), parts (N, P, d), visibility
    (N, P)); ``layout`` = (D, P, d) (``ReIDNet.part_layout``). Torch tensors or numpy arrays."""
    dim, parts, part_dim = layout
    if x.shape[1] != dim + parts * (part_dim + 1):
        raise ValueError(f"a feature of {x.shape[1]} values does not hold {dim} + {parts} x ({part_dim} + 1)")
    return (x[:, :dim], x[:, dim:dim + parts * part_dim].reshape(len(x), parts, part_dim),
            x[:, dim + parts * part_dim:])


def covisible_distance(query: tuple, gallery: tuple, metric: str = "euclidean", weight: float = 1.0
                       ) -> torch.Tensor:
    """The co-visible distance (issue 25, PVEN's form) of query (global (Q, D), parts (Q, P, d), visibility (Q, P))
    against gallery (the same for G images) -> (Q, G) float32:

        d(q, g) = d_metric(f_q, f_g) + weight * sum_k v_qk v_gk d_metric(p_qk, p_gk) / sum_k v_qk v_gk,

    the part term 0 where the two images share no visible part (sum_k v_qk v_gk = 0). Each part distance is the
    global one's metric (cosine: 1 - cos of the L2-normalised part features). ``weight`` is the absolute lambda
    (evaluation and the index pass eval.part_weight x :func:`part_scale`)."""
    qg, qp, qv = _tensors(query)
    gg, gp, gv = _tensors(gallery)
    out = pairwise_distance(qg, gg, metric)
    if weight == 0 or qp.shape[1] == 0:
        return out
    return out + weight * _part_term(qp, qv, gp, gv, metric)


def _tensors(items: tuple) -> tuple[torch.Tensor, ...]:
    return tuple(torch.as_tensor(np.asarray(t) if not isinstance(t, torch.Tensor) else t).float() for t in items)


def _part_term(qp, qv, gp, gv, metric: str) -> torch.Tensor:
    """(Q, G) sum_k v_qk v_gk d(p_qk, p_gk) / sum_k v_qk v_gk, 0 where no part is seen by both."""
    num = torch.zeros(len(qp), len(gp))
    den = qv @ gv.T
    for k in range(qp.shape[1]):
        num += qv[:, k, None] * gv[None, :, k] * pairwise_distance(qp[:, k], gp[:, k], metric)
    return torch.where(den > 0, num / den.clamp_min(1e-12), torch.zeros_like(num))


def part_scale(gallery: tuple, metric: str = "euclidean", sample: int = 512) -> float:
    """The label-free scale that makes the part term comparable to the global distance: mean global distance / mean
    part term over the pairs (sharing a visible part) of up to ``sample`` evenly spaced gallery images; 1 when no
    pair shares a part. The global feature (an FC output, a BN output or a pooled map) and the BN'd part features
    live on different scales, so a fixed lambda would let either term drown the other (docs/reid.md)."""
    g, p, v = _tensors(gallery)
    idx = torch.linspace(0, len(g) - 1, min(sample, len(g))).round().long().unique()
    g, p, v = g[idx], p[idx], v[idx]
    shared = (v @ v.T) > 0
    shared.fill_diagonal_(False)
    if not shared.any():
        return 1.0
    term = _part_term(p, v, p, v, metric)[shared].mean()
    return float(pairwise_distance(g, g, metric)[shared].mean() / term.clamp_min(1e-12))


def squared_block(a: torch.Tensor, b: torch.Tensor, metric: str, a_sq: torch.Tensor | None = None,
                  b_sq: torch.Tensor | None = None) -> torch.Tensor:
    """(R, C) float32 squared distances d^2 between prepared rows ``a`` (R, D) and ``b`` (C, D); ``a_sq`` /
    ``b_sq`` the rows' squared norms when already known (euclidean)."""
    if metric == "cosine":
        return torch.addmm(torch.ones(()), a, b.T, alpha=-1.0).clamp_min_(0.0).square_()
    a_sq = (a * a).sum(1) if a_sq is None else a_sq
    b_sq = (b * b).sum(1) if b_sq is None else b_sq
    return torch.addmm(b_sq[None, :], a, b.T, alpha=-2.0).add_(a_sq[:, None]).clamp_min_(0.0)


def squared_pairs(a: torch.Tensor, b: torch.Tensor, metric: str) -> np.ndarray:
    """d^2 (P,) float64 of the pairs (a[i], b[i]) of prepared rows, computed in float64."""
    a, b = a.double(), b.double()
    if metric == "cosine":
        return (1.0 - (a * b).sum(1)).clamp_min(0.0).square().numpy()
    return ((a - b) ** 2).sum(1).numpy()


def from_similarity(sim: np.ndarray, metric: str) -> np.ndarray:
    """What an inner-product (cosine) or squared-L2 (euclidean) search returns -> the distances of ``metric``."""
    return 1.0 - sim if metric == "cosine" else np.sqrt(np.maximum(sim, 0.0))


@runtime_checkable
class RerankSpace(Protocol):
    """What k-reciprocal re-ranking (``reid.rerank.rerank_space``) needs of the Q queries and G gallery items
    together (N = Q + G rows; rows 0..Q-1 are the queries); every distance is d^2 of one metric."""

    nq: int  # the number of queries
    n: int   # the number of rows, queries and gallery together

    def nearest(self, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """rows (R,) -> (ids (R, k) of each row's k nearest rows, ties by id; each row's largest d^2 (R,))."""
        ...

    def gallery_nearest(self, top: int) -> tuple[np.ndarray, np.ndarray]:
        """Each query's ``top`` nearest gallery items -> (gallery positions (Q, top), d^2 (Q, top))."""
        ...

    def pairs(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """d^2 (P,) float64 of the pairs (rows[i], cols[i])."""
        ...
