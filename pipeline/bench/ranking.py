"""The ``evaluate`` and ``rerank`` rows: ReID metrics and k-reciprocal re-ranking at VeRi size."""
from __future__ import annotations

import time

import numpy as np

from pamtri.reid.metrics import metrics_from_distances
from pamtri.reid.rerank import rerank

from .baselines import euclidean, evaluate_loop, rerank_dense
from .harness import Row, make_row, peak_traced, timed
from .inputs import veri_like


def bench_evaluate(quick: bool) -> list[Row]:
    """reid.metrics.evaluate vs the per-query loop at VeRi size (1,678 x 11,579)."""
    nq, ng = (420, 2900) if quick else (1678, 11579)
    qf, gf, q_ids, g_ids, q_cams, g_cams = veri_like(nq, ng)
    dist = euclidean(qf, gf)
    ours = metrics_from_distances(dist, q_ids, g_ids, q_cams, g_cams)
    base = evaluate_loop(dist, q_ids, g_ids, q_cams, g_cams)
    same = (abs(ours["mAP"] - base["mAP"]) < 1e-6 and abs(ours["mINP"] - base["mINP"]) < 1e-6
            and np.allclose(ours["cmc"], base["cmc"], atol=1e-6))
    if not same:
        raise AssertionError(f"evaluate differs from the loop: mAP {ours['mAP']} vs {base['mAP']}")
    t_ours = timed(lambda: metrics_from_distances(dist, q_ids, g_ids, q_cams, g_cams), repeat=3)
    t_base = timed(lambda: evaluate_loop(dist, q_ids, g_ids, q_cams, g_cams), repeat=1, warmup=0)
    return [make_row("evaluate", t_ours, t_base, "s", note=f"{nq}x{ng}; mAP, CMC, mINP equal to 1e-6")]


def bench_rerank(quick: bool) -> list[Row]:
    """Sparse/blocked re-ranking vs the dense implementation at VeRi size (13,257 images): time, memory, top-10."""
    nq, ng = (300, 2000) if quick else (1678, 11579)
    qf, gf, *_ = veri_like(nq, ng, dim=64)
    q_g, q_q, g_g = euclidean(qf, gf), euclidean(qf, qf), euclidean(gf, gf)
    t0 = time.perf_counter()
    ours = rerank(q_g, q_q, g_g)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    base = rerank_dense(q_g, q_q, g_g)
    t_base = time.perf_counter() - t0
    top_o, top_b = np.argsort(ours, axis=1)[:, :10], np.argsort(base.astype(np.float32), axis=1)[:, :10]
    agree = float((top_o == top_b).all(axis=1).mean())
    _, m_ours = peak_traced(lambda: rerank(q_g, q_q, g_g))
    _, m_base = peak_traced(lambda: rerank_dense(q_g, q_q, g_g))
    note = f"{nq}+{ng} images; identical top-10 for {100 * agree:.1f}% of queries (baseline keeps V in float16)"
    return [make_row("rerank_time", t_ours, t_base, "s", note=note),
            make_row("rerank_memory", m_ours / 2**20, m_base / 2**20, "MiB",
                     note="peak traced allocations beyond the three input matrices")]
