"""ReID evaluation (Market-1501 protocol): distances in blocks, mAP, CMC, mINP, rank-K mAP, attribute accuracy.

``evaluate`` never sorts the whole distance matrix. A query only needs the rank of each of its true matches
among the kept gallery images: its match distances are taken in order (``topk``), every gallery distance
is placed between them (``searchsorted``) and the places are counted per row. Ties are broken by gallery
order, exactly like a stable argsort: rows where a tie could matter are redone with tie-free int64 keys
(order-preserving float bits, then the gallery index). Row blocks run on a thread pool.
``metrics_from_features`` computes each block's distances from the features itself, so a (Q, G) matrix
(10,000 x 138,517 float32 is 5.5 GB) never exists.
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from pamtri.common.errors import PamtriError

from .distance import pairwise_distance
from .vit import VIEW_FACES

log = logging.getLogger(__name__)

_MAX = torch.iinfo(torch.int64).max


class NoMatchError(PamtriError, ValueError):
    """No query has a true match in the gallery (after the same-vehicle-same-camera rule)."""


def _sort_keys(dist: torch.Tensor) -> torch.Tensor:
    """(B, G) float32 -> (B, G) int64 keys ordered like (distance, gallery index); all distinct in a row."""
    d = dist.float() + 0.0  # -0.0 -> +0.0
    bits = d.view(torch.int32).to(torch.int64)
    bits = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)  # negative floats: reverse their order
    idx = torch.arange(dist.shape[1], dtype=torch.int64)
    return (bits << 32) | idx


def _count_below(keys: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """For sorted thresholds (B, M): (B, M) number of entries of keys (B, G) strictly below each threshold
    (entries equal to a threshold are not counted)."""
    b, m = thresholds.shape
    bucket = torch.searchsorted(thresholds, keys, right=True)  # number of thresholds <= key
    hist = torch.zeros(b, m + 1, dtype=torch.int64)
    hist.scatter_add_(1, bucket, torch.ones(1, dtype=torch.int64).expand_as(bucket))
    return hist[:, :m].cumsum(1), bucket


def _match_ranks(dist: torch.Tensor, same_id: torch.Tensor, removed: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """1-based ranks of each row's true matches among its kept gallery images, in rank order.

    dist (B, G) finite; same_id (B, G); removed (B, G) gallery images taken out of the ranking.
    Returns (ranks (B, M) int64 padded with a huge value, num_rel (B,)). Exactly a stable argsort's ranks:
    the fast path works on float distances; rows with tied distances are redone with tie-free int64 keys.
    """
    inf = torch.tensor(float("inf"))
    d = torch.where(removed, inf, dist)
    num_rel = (same_id & ~removed).sum(1)
    m = max(int(num_rel.max()), 1)
    thr = torch.where(same_id, d, inf).topk(m, dim=1, largest=False, sorted=True).values
    below, bucket = _count_below(d, thr)
    valid = torch.arange(m)[None, :] < num_rel[:, None]
    # a tie: two matches at one distance, or a kept non-match at a match's distance
    tied = ((thr[:, 1:] == thr[:, :-1]) & valid[:, 1:]).any(1)
    at = thr.gather(1, (bucket - 1).clamp_min(0))
    tied |= ((bucket > 0) & (at == d) & ~same_id & ~removed).any(1)
    if tied.any():
        rows = torch.nonzero(tied).squeeze(1)
        keys = _sort_keys(dist[rows])
        keys = torch.where(removed[rows], torch.full_like(keys, _MAX), keys)
        kthr = torch.where(same_id[rows] & ~removed[rows], keys, torch.full_like(keys, _MAX))
        kthr = kthr.topk(m, dim=1, largest=False, sorted=True).values
        below[rows] = _count_below(keys, kthr)[0]
    ranks = below + 1
    return torch.where(valid, ranks, torch.full_like(ranks, _MAX)), num_rel


def _block_stats(dist, q_ids, g_ids, q_cams, g_cams, max_rank, topk_map, ignore_cameras, faces=None):
    same_id = q_ids[:, None] == g_ids[None, :]
    if ignore_cameras:
        removed = torch.zeros_like(same_id)
    else:
        removed = same_id & (q_cams[:, None] == g_cams[None, :])
    if faces is not None:  # cross-view: true matches that share a face with the query (or of unknown view) go too
        qf, gf = faces
        removed = removed | (same_id & (((qf[:, None] & gf[None, :]) != 0) | (qf[:, None] == 0) | (gf[None, :] == 0)))
    ranks, num_rel = _match_ranks(dist, same_id, removed)
    has = num_rel > 0
    m = ranks.shape[1]
    j = torch.arange(1, m + 1, dtype=torch.float64)[None, :]
    valid = ranks != _MAX
    prec = torch.where(valid, j / ranks.clamp_max(1 << 40).double(), torch.zeros((), dtype=torch.float64))
    nr = num_rel.clamp_min(1).double()
    ap = prec.sum(1) / nr
    ap_k = torch.where(valid & (ranks <= topk_map), prec, torch.zeros((), dtype=torch.float64)).sum(1) / nr
    first = ranks[:, 0]
    last = torch.gather(ranks, 1, (num_rel - 1).clamp_min(0)[:, None]).squeeze(1)
    inp = num_rel.double() / last.clamp_max(1 << 40).double()
    cmc = (first[:, None] <= torch.arange(1, max_rank + 1)[None, :]).double()
    return has, ap, ap_k, inp, cmc, first


def _as_int_tensor(x, name: str, n: int) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x)).long().reshape(-1)
    if len(t) != n:
        raise ValueError(f"{name} has {len(t)} entries, expected {n}")
    return t


def metrics_from_distances(distmat, query_ids, gallery_ids, query_cams=None, gallery_cams=None,
                           max_rank: int = 50, topk_map: int = 100, ignore_cameras: bool = False, block: int = 256,
                           threads: int | None = None) -> dict:
    """Market-1501-protocol metrics of a (Q, G) distance matrix; fractions in [0, 1].

    Gallery images with the query's vehicle id AND camera are removed per query (``ignore_cameras``: keep
    them; the only choice when cameras are unknown). Queries without any true match are left out of every
    metric and counted in ``num_no_match``; when none has a match, ``NoMatchError`` says why.
    Returns {'mAP', 'cmc' (max_rank,) rank 1 first, 'mINP', 'mAP@K' (K = topk_map), 'num_queries',
    'num_valid_queries', 'num_no_match', 'ap' (Q,) per query (NaN when no match), 'first_rank' (Q,) 1-based
    rank of each query's first true match (0 when none)}.
    """
    dist = torch.as_tensor(np.asarray(distmat) if not torch.is_tensor(distmat) else distmat).float()
    if dist.ndim != 2:
        raise ValueError(f"distmat must be 2-D (queries x gallery), got shape {tuple(dist.shape)}")
    return _metrics_from_rows(lambda s, e: dist[s:e], dist.shape, query_ids, gallery_ids, query_cams, gallery_cams,
                          max_rank, topk_map, ignore_cameras, block, threads)


def metrics_from_features(query, gallery, query_ids, gallery_ids, query_cams=None, gallery_cams=None,
                      metric: str = "euclidean", max_rank: int = 50, topk_map: int = 100, ignore_cameras: bool = False,
                      memory_mib: int = 768, threads: int | None = None, distance=None, faces=None) -> dict:
    """:func:`evaluate` of (Q, D) query and (G, D) gallery features without the (Q, G) matrix: each block of
    queries gets its (B, G) distances by one matmul (:func:`pairwise_distance`), B chosen so the blocks in flight
    take about ``memory_mib`` MiB (about 40 bytes per distance with the ranking's buffers; measured peak: 2.1x
    that at the VERI-Wild-large shape, hence the default of 768 for the 2 GB target). Same results as
    ``metrics_from_distances(pairwise_distance(query, gallery, metric), ...)`` up to the float rounding of the
    matmul, which can differ with the block's shape (and so break a near-tie the other way).

    ``distance(q_rows, s, e)`` -> (e - s, G) replaces ``pairwise_distance(q_rows, gallery, metric)`` (the co-visible
    distance of part features); ``faces`` ((Q,), (G,)) int64 face bits (``vit.VIEW_FACES``) restricts the true
    matches to other-view pairs (:func:`cross_view_faces`)."""
    q, g = torch.as_tensor(np.asarray(query)).float(), torch.as_tensor(np.asarray(gallery)).float()
    workers = threads or os.cpu_count() or 1
    block = max(1, min(256, (memory_mib << 20) // (40 * max(1, len(g)) * workers)))
    rows = (lambda s, e: pairwise_distance(q[s:e], g, metric)) if distance is None else (
        lambda s, e: distance(q[s:e], s, e))
    return _metrics_from_rows(rows, (len(q), len(g)), query_ids, gallery_ids, query_cams, gallery_cams, max_rank,
                              topk_map, ignore_cameras, block, workers, faces)


def metrics_from_ranked_lists(order, dist, query, gallery, query_ids, gallery_ids, query_cams=None, gallery_cams=None,
                          metric: str = "euclidean", max_rank: int = 50, topk_map: int = 100,
                          ignore_cameras: bool = False, memory_mib: int = 768, threads: int | None = None,
                          faces=None) -> dict:
    """:func:`evaluate` of re-ranked candidate lists without the (Q, G) matrix: query q ranks the gallery positions
    ``order[q]`` (Q, L) at ``dist[q]`` (values in [0, 1], as ``reid.rerank`` gives), then every other gallery
    image at 2 + its original distance (so after the list, in the original order). Blocks as
    :func:`metrics_from_features`."""
    q, g = torch.as_tensor(np.asarray(query)).float(), torch.as_tensor(np.asarray(gallery)).float()
    order, dist = torch.as_tensor(np.asarray(order)).long(), torch.as_tensor(np.asarray(dist)).float()
    workers = threads or os.cpu_count() or 1
    block = max(1, min(256, (memory_mib << 20) // (40 * max(1, len(g)) * workers)))
    return _metrics_from_rows(lambda s, e: ranked_rows(order[s:e], dist[s:e], q[s:e], g, metric), (len(q), len(g)),
                          query_ids, gallery_ids, query_cams, gallery_cams, max_rank, topk_map, ignore_cameras, block,
                          workers, faces)


def ranked_rows(order: torch.Tensor, dist: torch.Tensor, query: torch.Tensor, gallery: torch.Tensor,
                metric: str = "euclidean") -> torch.Tensor:
    """(B, G) distances of B queries' candidate lists order, dist (B, L): the list's distances at its gallery
    positions, 2 + the original distance elsewhere (:func:`metrics_from_ranked_lists`)."""
    rows = pairwise_distance(query, gallery, metric) + 2.0
    return rows.scatter_(1, order, dist)


def _cameras(query_cams, gallery_cams, nq: int, ng: int, ignore_cameras: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(Q,), (G,) int64 camera ids; zeros with ``ignore_cameras``; PamtriError when the camera rule lacks them."""
    if ignore_cameras:
        return torch.zeros(nq, dtype=torch.int64), torch.zeros(ng, dtype=torch.int64)
    if query_cams is None or gallery_cams is None:
        raise PamtriError("camera ids are missing: the same-vehicle-same-camera rule needs them; pass "
                          "ignore_cameras=True (eval.ignore_cameras) to keep every same-id gallery image")
    q_cams = _as_int_tensor(query_cams, "query_cams", nq)
    g_cams = _as_int_tensor(gallery_cams, "gallery_cams", ng)
    if (q_cams < 0).any() or (g_cams < 0).any():
        raise PamtriError(f"{int((q_cams < 0).sum())} query and {int((g_cams < 0).sum())} gallery images have "
                          "no camera id (synthetic data?): the same-vehicle-same-camera rule cannot be applied; "
                          "pass ignore_cameras=True (eval.ignore_cameras) to keep every same-id gallery image")
    return q_cams, g_cams


def _metrics_from_rows(rows, shape, query_ids, gallery_ids, query_cams, gallery_cams, max_rank, topk_map,
                   ignore_cameras, block, threads, faces=None) -> dict:
    """:func:`evaluate` with the distances of queries s:e given by ``rows(s, e)`` -> (e - s, G), block by block."""
    nq, ng = shape
    q_ids = _as_int_tensor(query_ids, "query_ids", nq)
    g_ids = _as_int_tensor(gallery_ids, "gallery_ids", ng)
    q_cams, g_cams = _cameras(query_cams, gallery_cams, nq, ng, ignore_cameras)
    blocks = [(s, min(s + block, nq)) for s in range(0, nq, block)]

    def run(se):
        s, e = se
        dist = rows(s, e)
        if not torch.isfinite(dist).all():
            raise ValueError("distmat contains NaN or infinite distances (features with NaN?)")
        f = None if faces is None else (faces[0][s:e], faces[1])
        return _block_stats(dist, q_ids[s:e], g_ids, q_cams[s:e], g_cams, max_rank, topk_map, ignore_cameras, f)

    workers = min(len(blocks), threads or os.cpu_count() or 1)
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            parts = list(pool.map(run, blocks))
    else:
        parts = [run(b) for b in blocks]
    has, ap, ap_k, inp, cmc, first = (torch.cat([p[i] for p in parts]) for i in range(6))
    return _summary(has, ap, ap_k, inp, cmc, first, q_ids, g_ids, topk_map, ignore_cameras)


def _summary(has, ap, ap_k, inp, cmc, first, q_ids, g_ids, topk_map, ignore_cameras) -> dict:
    """The dict of :func:`evaluate` from the per-query statistics of every block."""
    nq, ng = len(q_ids), len(g_ids)
    n_valid = int(has.sum())
    if n_valid == 0:
        shared = len(np.intersect1d(q_ids.numpy(), g_ids.numpy()))
        raise NoMatchError(
            f"no query has a true match in the gallery ({nq} queries, {ng} gallery images, {shared} vehicle ids "
            "shared by both" + ("" if ignore_cameras else "; the same-id-same-camera rule removes the rest: are "
                                "query and gallery from the same cameras only?") + ")")
    if n_valid < nq:
        log.warning("%d of %d queries have no true match in the gallery; they are left out", nq - n_valid, nq)
    hv = has
    ap_all = torch.where(has, ap, torch.full_like(ap, float("nan")))
    return {
        "mAP": float(ap[hv].mean()),
        "cmc": cmc[hv].mean(0).numpy(),
        "mINP": float(inp[hv].mean()),
        f"mAP@{topk_map}": float(ap_k[hv].mean()),
        "num_queries": nq,
        "num_valid_queries": n_valid,
        "num_no_match": nq - n_valid,
        "ap": ap_all.numpy(),
        "first_rank": torch.where(has, first, torch.zeros_like(first)).numpy(),
    }


def cross_view_faces(query_views, gallery_views) -> tuple[torch.Tensor, torch.Tensor]:
    """(Q,), (G,) view bins of ``vit.VIEW_NAMES`` (-1 unknown) -> their face bits (``vit.VIEW_FACES``) for
    ``metrics_from_features(faces=...)``: a true match counts only when it shares no face with its query (front vs
    rear, a side vs front or rear, left vs right; front_left vs left shares the left side and is left out), and
    neither view is unknown."""
    table = VIEW_FACES
    return tuple(table[torch.as_tensor(np.asarray(v)).long().clamp_min(-1) + 1] for v in (query_views, gallery_views))


def attribute_accuracy(predictions, labels) -> float | None:
    """Share of labelled samples (label >= 0) whose predicted class (ids (N,) or logits (N, C)) is right;
    None when no sample has a label."""
    pred = torch.as_tensor(np.asarray(predictions) if not torch.is_tensor(predictions) else predictions)
    if pred.ndim == 2:
        pred = pred.argmax(1)
    lab = torch.as_tensor(np.asarray(labels) if not torch.is_tensor(labels) else labels).long()
    keep = lab >= 0
    if not keep.any():
        return None
    return float((pred.long()[keep] == lab[keep]).double().mean())
