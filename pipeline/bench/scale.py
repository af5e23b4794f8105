"""The ``evaluate_large`` and ``rerank_large`` rows: evaluation and re-ranking at the VERI-Wild-large shape.

10,000 queries x 138,517 gallery images, 1024-d (quick: 1,000 x 13,000, 256-d), seeded clustered features with
vehicle ids and cameras. Each measurement runs in its own ``multiprocessing`` spawn child; its peak memory is
``harness.peak_rss`` of the work alone: the child's resident high-water mark, reset once the features exist,
minus its resident size then (so the features themselves, 567 MB at full size, are not counted, and a work whose
peak is below the features' generation still reads its own peak, not 0 as a difference of ``ru_maxrss`` did).
"""
from __future__ import annotations

import time

import numpy as np
import torch

from pamtri.reid import distance, metrics
from pamtri.reid.rerank import rerank_neighbours

from .baselines import euclidean, rerank_dense
from .harness import Row, in_spawn_child, make_row, peak_rss

SHAPES = {False: (10_000, 138_517, 1024), True: (1_000, 13_000, 256)}  # (queries, gallery, dim) by quick


def labelled_features(nq: int, ng: int, dim: int, seed: int = 0, cams: int = 20):
    """(query (nq, dim), gallery (ng, dim) float32, q_ids, g_ids, q_cams, g_cams): one query per vehicle (as
    VERI-Wild's test sets), gallery images of random vehicles; a centre per vehicle, an offset per (vehicle,
    camera), noise per image, so that the same vehicle in another camera is near but not nearest."""
    rng = np.random.default_rng(seed)
    # per dimension, vehicles spread a little more than cameras; the margin shrinks as 1 / sqrt(dim) so that mAP
    # stays moderate (about 0.5 at 1,000 x 13,000, 256-d) at any size instead of 0 or 1
    centres = np.sqrt(0.09 + 2.4 / np.sqrt(dim)).astype(np.float32) * rng.standard_normal((nq, dim), np.float32)
    q_ids, g_ids = rng.permutation(nq), rng.integers(0, nq, ng)
    q_cams, g_cams = rng.integers(0, cams, nq), rng.integers(0, cams, ng)
    view = 0.3 * rng.standard_normal((cams, dim), np.float32)  # one offset per camera

    def draw(ids: np.ndarray, cam: np.ndarray) -> np.ndarray:
        out = np.empty((len(ids), dim), np.float32)
        for s in range(0, len(ids), 8192):  # chunks keep the temporaries small
            i, c = ids[s:s + 8192], cam[s:s + 8192]
            out[s:s + 8192] = centres[i] + view[c] + 0.8 * rng.standard_normal((len(i), dim), np.float32)
        return out
    return draw(q_ids, q_cams), draw(g_ids, g_cams), q_ids, g_ids, q_cams, g_cams


def _evaluate_dense(qf, gf, q_ids, g_ids, q_cams, g_cams) -> dict:
    dist = distance.pairwise_distance(torch.from_numpy(qf), torch.from_numpy(gf))
    return metrics.metrics_from_distances(dist, q_ids, g_ids, q_cams, g_cams)


def _rerank_dense(qf, gf, q_ids, g_ids, q_cams, g_cams) -> dict:
    final = rerank_dense(euclidean(qf, gf), euclidean(qf, qf), euclidean(gf, gf))
    return metrics.metrics_from_distances(final.astype(np.float32), q_ids, g_ids, q_cams, g_cams)


def _work(task: str, shape: tuple[int, int, int], part: tuple[int, int]) -> dict:
    """In the child: features of ``shape``, the first ``part`` (queries, gallery) of them, then ``task`` ->
    {"seconds", "peak_mib" (the work's own peak beyond the features, ``harness.peak_rss``), "mAP"}."""
    qf, gf, q_ids, g_ids, q_cams, g_cams = labelled_features(*shape)
    nq, ng = part
    data = qf[:nq], gf[:ng], q_ids[:nq], g_ids[:ng], q_cams[:nq], g_cams[:ng]
    t0 = time.perf_counter()
    if task == "rerank":  # the evaluation after it is not counted
        (order, dist), peak = peak_rss(lambda: rerank_neighbours(data[0], data[1], top=100))
        seconds = time.perf_counter() - t0
        res = metrics.metrics_from_ranked_lists(order, dist, *data)
        return {"seconds": seconds, "peak_mib": peak, "mAP": res["mAP"]}
    work = {"evaluate": metrics.metrics_from_features, "evaluate_dense": _evaluate_dense,
            "rerank_dense": _rerank_dense}[task]
    res, peak = peak_rss(lambda: work(*data))
    return {"seconds": time.perf_counter() - t0, "peak_mib": peak, "mAP": res["mAP"]}


def measured(task: str, shape: tuple[int, int, int], part: tuple[int, int] | None = None) -> dict:
    """:func:`_work` in a fresh spawn child (its own peak memory) -> its dict."""
    return in_spawn_child(task, _work, task, shape, part or shape[:2])


def bench_scale(quick: bool) -> list[Row]:
    """metrics_from_features vs the dense (Q, G) matrix + evaluate, and re-ranking from k-NN lists vs the dense
    N x N algorithm; seconds and peak MiB. A baseline that does not fit runs on a part and is extrapolated
    (evaluation: linearly in the queries; dense re-ranking: as N^2); the notes say so."""
    nq, ng, dim = shape = SHAPES[quick]
    ours = measured("evaluate", shape)
    part_q = nq if quick else nq // 10
    dense = measured("evaluate_dense", shape, (part_q, ng))
    scale = nq / part_q
    how = "measured" if scale == 1 else f"{part_q} queries measured, x{scale:.0f} extrapolated"
    memo = "the work's own peak RSS in a spawn child, beyond its features (VmHWM reset by clear_refs)"
    note = f"{nq}x{ng}, {dim}-d; dense path {how}; mAP {ours['mAP']:.4f}"
    rows = [make_row("evaluate_large", ours["seconds"], dense["seconds"] * scale, "s", note=note),
            make_row("evaluate_large_peak", ours["peak_mib"], dense["peak_mib"] * scale, "MiB",
                     note=f"{memo}; target <= 2048 MiB")]
    rr = measured("rerank", shape)
    shrink = 5 if quick else 20  # the dense algorithm's N x N arrays: 12 bytes an entry, 3 GB at 14,851 images
    n0 = (nq // shrink, ng // shrink)
    base = measured("rerank_dense", shape, n0)
    grow = ((nq + ng) / sum(n0)) ** 2
    note = (f"{nq}+{ng}, {dim}-d, top 100 re-ranked, mAP {rr['mAP']:.4f} (plain {ours['mAP']:.4f}); dense N x N "
            f"algorithm measured at {n0[0]}+{n0[1]}, x{grow:.0f} extrapolated as N^2")
    rows += [make_row("rerank_large", rr["seconds"], base["seconds"] * grow, "s", note=note),
             make_row("rerank_large_peak", rr["peak_mib"], base["peak_mib"] * grow, "MiB",
                      note=f"{memo}; target <= 8192 MiB")]
    return rows
