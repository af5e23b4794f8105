"""The ``evaluate`` and ``rerank`` rows: ReID metrics and k-reciprocal re-ranking at VeRi size."""
from __future__ import annotations

import time

import numpy as np

from pamtri.reid.metrics import metrics_from_distances
from pamtri.reid.rerank import rerank

from .baselines import euclidean, evaluate_loop, rerank_dense
from .harness import Row, in_spawn_child, make_row, peak_rss, timed
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


def _rerank_work(which: str, nq: int, ng: int) -> dict:
    """In a spawn child: the inputs, then ``which`` ("ours" or "dense") re-ranking -> {"seconds", "peak_mib"
    (``harness.peak_rss``: the work's own peak beyond the inputs), "top10" (Q, 10)}."""
    qf, gf, *_ = veri_like(nq, ng, dim=64)
    q_g, q_q, g_g = euclidean(qf, gf), euclidean(qf, qf), euclidean(gf, gf)
    fn = rerank if which == "ours" else rerank_dense
    t0 = time.perf_counter()
    out, peak = peak_rss(lambda: fn(q_g, q_q, g_g))
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "peak_mib": peak, "top10": np.argsort(out.astype(np.float32), axis=1)[:, :10]}


def bench_rerank(quick: bool) -> list[Row]:
    """Sparse/blocked re-ranking vs the dense implementation at VeRi size (13,257 images): time, memory, top-10;
    each in its own spawn child (its peak memory its own)."""
    nq, ng = (300, 2000) if quick else (1678, 11579)
    ours, base = (in_spawn_child(f"rerank ({which})", _rerank_work, which, nq, ng) for which in ("ours", "dense"))
    agree = float((ours["top10"] == base["top10"]).all(axis=1).mean())
    note = f"{nq}+{ng} images; identical top-10 for {100 * agree:.1f}% of queries (baseline keeps V in float16)"
    return [make_row("rerank_time", ours["seconds"], base["seconds"], "s", note=note),
            make_row("rerank_memory", ours["peak_mib"], base["peak_mib"], "MiB",
                     note="the work's own peak RSS in a spawn child, beyond the three input matrices "
                          "(VmHWM reset by clear_refs)")]
