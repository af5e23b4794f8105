"""The ``mtmc_associate`` rows: cross-camera association of 100,000 tracklets (quick: 10,000).

Seeded tracklet features: a centre per vehicle, an offset per camera, noise per tracklet; each vehicle is seen
by 2-4 cameras in time order. Ours: the FAISS k-NN graph + constrained average linkage (memory N x k). The
baseline: the same clustering on a dense N x N matrix, which at 100,000 tracklets would need 40 GB per matrix,
so it runs on a part and is extrapolated as N^2 (the note says so). Each runs in a spawn child; its peak is
``harness.peak_rss`` of the association alone.
"""
from __future__ import annotations

import time

import numpy as np

from pamtri.pipeline.mtmc.associate import Timing, associate
from pamtri.pipeline.mtmc.config import AssociationConfig

from .harness import Row, in_spawn_child, make_row, peak_rss

SHAPES = {False: (100_000, 128), True: (10_000, 64)}  # (tracklets, dim) by quick
DENSE_PART = {False: 8_000, True: 2_000}


def tracklet_set(n: int, dim: int, seed: int = 0, cams: int = 40):
    """(features (n, dim) unit float32, vehicle ids (n,), Timing) for ``n`` tracklets."""
    rng = np.random.default_rng(seed)
    per = rng.integers(2, 5, n)                        # cameras per vehicle
    ids = np.repeat(np.arange(n), per)[:n]
    nv = int(ids.max()) + 1
    k = np.concatenate([np.arange(p) for p in per])[:n]  # the visit's rank on the vehicle's route
    cam = (rng.integers(0, cams, nv)[ids] + 7 * k) % cams + 1
    t0 = rng.uniform(0, 3600, nv)[ids] + 40.0 * k
    centres = rng.standard_normal((nv, dim), np.float32)
    view = 0.25 * rng.standard_normal((cams + 1, dim), np.float32)
    f = centres[ids] + view[cam] + 0.35 * rng.standard_normal((n, dim), np.float32)
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    return f.astype(np.float32), ids, Timing(cam, t0, t0 + 5.0, {})


def _work(n: int, dim: int, dense: bool) -> dict:
    import faiss  # noqa: F401 - imported before the baseline RSS, as torch (reid.distance) is

    f, ids, timing = tracklet_set(n, dim)
    cfg = AssociationConfig(threshold=0.6, dense_max=n if dense else 1, knn=20)
    t0 = time.perf_counter()
    (labels, mode), peak = peak_rss(lambda: associate(f, timing, cfg))
    seconds = time.perf_counter() - t0
    # pairwise precision / recall of "same vehicle" on the tracklets
    same_pred = np.bincount(labels)
    same_true = np.bincount(ids)
    _, both = np.unique(labels.astype(np.int64) * (ids.max() + 1) + ids, return_counts=True)
    tp = float((both * (both - 1)).sum())
    prec = tp / max(1.0, float((same_pred * (same_pred - 1)).sum()))
    rec = tp / max(1.0, float((same_true * (same_true - 1)).sum()))
    return {"seconds": seconds, "peak_mib": peak, "mode": mode, "precision": prec, "recall": rec,
            "clusters": int(labels.max()) + 1, "vehicles": int(ids.max()) + 1}


def measured(n: int, dim: int, dense: bool) -> dict:
    """:func:`_work` in a fresh spawn child (its own peak memory) -> its dict."""
    return in_spawn_child("mtmc_associate", _work, n, dim, dense)


def bench_mtmc(quick: bool) -> list[Row]:
    """mtmc_associate (seconds) and mtmc_associate_peak (MiB): sparse k-NN path at full size vs the dense path
    on a part, extrapolated as N^2."""
    n, dim = SHAPES[quick]
    ours = measured(n, dim, dense=False)
    part = min(n, DENSE_PART[quick])
    dense = measured(part, dim, dense=True)
    grow = (n / part) ** 2
    note = (f"{n} tracklets ({ours['vehicles']} vehicles, 2-4 cameras each), {dim}-d, k=20: {ours['clusters']} "
            f"clusters, pairwise precision {ours['precision']:.3f} recall {ours['recall']:.3f}; dense path measured "
            f"at {part} tracklets ({dense['seconds']:.1f} s, {dense['peak_mib']:.0f} MiB), x{grow:.0f} "
            f"extrapolated as N^2")
    return [make_row("mtmc_associate", ours["seconds"], dense["seconds"] * grow, "s", note=note),
            make_row("mtmc_associate_peak", ours["peak_mib"], dense["peak_mib"] * grow, "MiB",
                     note="the work's own peak RSS in a spawn child, beyond its features (VmHWM reset by clear_refs)")]
