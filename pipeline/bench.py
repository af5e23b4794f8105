"""``pamtri bench``: every speed/memory figure measured side by side with its baseline in one run.

Each row function returns a :class:`Row`; ``ratio`` always reads "times better than the baseline".
Baselines are implemented here, next to what they are compared with, so machine noise cancels.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pamtri.common.atomic import atomic_write_text

log = logging.getLogger(__name__)


@dataclass
class Row:
    """One benchmark line: our figure, the baseline's, and ours-vs-baseline as 'times better'."""
    name: str
    ours: float
    baseline: float
    unit: str
    ratio: float
    roofline_share: float | None = None
    note: str = ""


def ratio_for(unit: str, ours: float, baseline: float) -> float:
    """'Times better': time and bytes are lower-is-better, rates higher-is-better."""
    lower_better = unit in ("s", "ms", "bytes", "MiB", "bytes/img", "GiB")
    if lower_better:
        return baseline / ours if ours > 0 else float("inf")
    return ours / baseline if baseline > 0 else float("inf")


def make_row(name: str, ours: float, baseline: float, unit: str, roofline_share: float | None = None,
             note: str = "") -> Row:
    """Build a Row with its ratio."""
    return Row(name, float(ours), float(baseline), unit, float(ratio_for(unit, ours, baseline)),
               None if roofline_share is None else float(roofline_share), note)


def timed(fn: Callable[[], object], repeat: int = 3, warmup: int = 1) -> float:
    """Best wall time in seconds of ``fn`` over ``repeat`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def peak_flops(dtype_name: str = "fp32", n: int = 2048, repeat: int = 3) -> float:
    """Measured matrix-product peak FLOP/s at a precision ('fp32' or 'bf16') on this machine's CPU."""
    import torch
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    seconds = timed(lambda: a @ b, repeat=repeat)
    return 2.0 * n ** 3 / seconds


def machine_info() -> dict:
    """Where the numbers were measured."""
    import torch

    from pamtri.common.runtime import cpu_supports_bf16
    cpu = platform.processor()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "bf16": cpu_supports_bf16(), "python": platform.python_version(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def du_bytes(paths) -> int:
    """Bytes on disk as ``du`` counts them (allocated blocks) for files and folders."""
    total = 0
    for p in paths:
        p = Path(p)
        files = [p] if p.is_file() else [f for f in p.rglob("*") if f.is_file()]
        total += sum(f.stat().st_blocks * 512 for f in files)
    return total


# -- cache rows ----------------------------------------------------------------------------------------

def _fake_pose_outputs(n: int, size: int, rng: np.random.Generator):
    """Plausible pose outputs for n images: Gaussian heatmaps at random keypoints, (36, 3) keypoints."""
    from pamtri.pose.heatmaps import encode
    kps = np.concatenate([rng.uniform(0.1 * size, 0.9 * size, (n, 36, 2)),
                          rng.uniform(0.3, 1.0, (n, 36, 1))], axis=2).astype(np.float32)
    heatmaps, _ = encode(kps[..., :2] * (64 / size), np.ones((n, 36)), (64, 64))
    heatmaps *= kps[..., 2, None, None]
    return heatmaps, kps


def bench_cache(quick: bool) -> list[Row]:
    """Cache read speed and disk use: our memory-mapped cache vs the reference's 49 JPEGs per image."""
    import cv2

    from pamtri.common.images import read_image
    from pamtri.pose.cache import Cache, CacheSpec, CacheWriter
    from pamtri.pose.legacy import read_legacy_maps, write_legacy_maps
    from pamtri.pose.segments import rasterise

    n, size = (64, 256) if quick else (256, 256)
    rng = np.random.default_rng(0)
    work = Path(tempfile.mkdtemp(prefix="pamtri-bench-"))
    try:
        heatmaps, kps = _fake_pose_outputs(n, size, rng)
        names = [f"{i:04d}_c001_{i:08d}_0.jpg" for i in range(n)]
        images = work / "images"
        images.mkdir()
        for name in names:
            cv2.imwrite(str(images / name), rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
        segments = [rasterise(k, (size, size)) for k in kps]
        legacy_h, legacy_s = work / "heatmap_test", work / "segment_test"
        for i, name in enumerate(names):
            stem = Path(name).stem
            write_legacy_maps(legacy_h / stem, heatmaps[i], segments[i].astype(bool), segment_folder=legacy_s / stem)
        spec = CacheSpec(weights_sha256="bench", pose_config={}, input_size=(256, 256), heatmap_size=(64, 64))
        writer = CacheWriter(work / "cache", names, spec)
        writer.build(lambda batch: (heatmaps[[names.index(b) for b in batch]], kps[[names.index(b) for b in batch]]),
                     progress=False)
        writer.finalise()
        cache = Cache(work / "cache")

        def pose_ours(i: int, name: str) -> None:
            hm, kp, _ = cache.raw(i)
            np.asarray(hm)
            rasterise(kp, (size, size))

        def pose_reference(i: int, name: str) -> None:
            stem = Path(name).stem
            read_legacy_maps(legacy_h / stem, legacy_s / stem)

        def image(i: int, name: str) -> None:
            read_image(images / name)

        def over_all(*parts):
            """A pass over every sample doing ``parts`` in order."""
            def run():
                for i, name in enumerate(names):
                    for part in parts:
                        part(i, name)
            return run

        t_ours = timed(over_all(image, pose_ours), repeat=2)
        t_ref = timed(over_all(image, pose_reference), repeat=2)
        t_pose_ours, t_pose_ref = timed(over_all(pose_ours), repeat=2), timed(over_all(pose_reference), repeat=2)
        t_img = timed(over_all(image), repeat=2)
        ours_bytes = du_bytes([work / "cache"]) / n
        ref_bytes = du_bytes([legacy_h, legacy_s]) / n
        note = (f"{n} images {size}x{size}: image + 36 heatmaps + 13 segments + keypoints; the RGB JPEG decode "
                f"both sides share runs at {n / t_img:.0f} img/s, which caps the ratio at "
                f"{t_ref / t_img:.1f}x; pose channels alone: {n / t_pose_ours:.0f} vs {n / t_pose_ref:.0f} "
                f"samples/s ({t_pose_ref / t_pose_ours:.1f}x)")
        return [make_row("cache_read", n / t_ours, n / t_ref, "samples/s", note=note),
                make_row("cache_disk", ours_bytes, ref_bytes, "bytes/img", note="du-counted bytes per image")]
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- decode and synth rows ------------------------------------------------------------------------------

def decode_loop(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Baseline: the reference rule (HRNet's get_final_preds) with a Python loop over every keypoint of every image."""
    n, k, h, w = heatmaps.shape
    xy = np.zeros((n, k, 2), np.float32)
    conf = np.zeros((n, k), np.float32)
    for i in range(n):
        for j in range(k):
            hm = heatmaps[i, j]
            idx = int(np.argmax(hm))
            py, px = divmod(idx, w)
            conf[i, j] = hm[py, px]
            x, y = float(px), float(py)
            if 1 < px < w - 1 and 1 < py < h - 1:  # HRNet's get_final_preds
                x += 0.25 * np.sign(hm[py, px + 1] - hm[py, px - 1])
                y += 0.25 * np.sign(hm[py + 1, px] - hm[py - 1, px])
            xy[i, j] = (x, y)
    return xy, conf


def bench_decode(quick: bool) -> list[Row]:
    """Vectorised heatmap decoding vs a per-keypoint Python loop (same rule, same results)."""
    from pamtri.pose.heatmaps import decode
    n = 64 if quick else 256
    rng = np.random.default_rng(0)
    hm = _fake_pose_outputs(n, 256, rng)[0] + rng.uniform(0, 0.01, (n, 36, 64, 64)).astype(np.float32)
    ours_xy, ours_c = decode(hm, method="reference")
    base_xy, base_c = decode_loop(hm)
    if not (np.allclose(ours_xy, base_xy) and np.allclose(ours_c, base_c)):
        raise AssertionError("vectorised decoding differs from the per-keypoint loop")
    import torch
    t_ours = timed(lambda: decode(hm, method="reference"))
    t_dark = timed(lambda: decode(hm, method="dark"))
    t_loop = timed(lambda: decode_loop(hm), repeat=1)
    # Any decoder reads every heatmap value once: one max pass over the array is the floor for both sides.
    t_floor = timed(lambda: torch.from_numpy(hm).amax(dim=(2, 3)))
    note = (f"{n}x36 heatmaps 64x64, reference rule; DARK vectorised: {n / t_dark:.0f} img/s; one read pass "
            f"of the heatmaps alone: {n / t_floor:.0f} img/s, so no decoder can beat the loop by more than "
            f"{t_loop / t_floor:.1f}x here")
    return [make_row("decode", n / t_ours, n / t_loop, "img/s", note=note)]


def bench_synth(quick: bool) -> list[Row]:
    """Synthetic rendering speed at 128 px on one core vs the 200 images/s target."""
    from pamtri.pipeline.synth import benchmark
    rate = benchmark(n=150 if quick else 600, size=128)
    return [make_row("synth", rate, 200.0, "img/s", note="render only, 128 px, one core; baseline = target")]


# -- evaluation and re-ranking rows ----------------------------------------------------------------------

def veri_like(nq: int, ng: int, ids: int = 200, cams: int = 20, dim: int = 256, seed: int = 0):
    """Random features with VeRi-like structure: (q_feat, g_feat, q_ids, g_ids, q_cams, g_cams)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(ids, dim)).astype(np.float32)
    q_ids, g_ids = rng.integers(0, ids, nq), rng.integers(0, ids, ng)
    q_cams, g_cams = rng.integers(0, cams, nq), rng.integers(0, cams, ng)
    qf = centres[q_ids] + 1.2 * rng.normal(size=(nq, dim)).astype(np.float32)
    gf = centres[g_ids] + 1.2 * rng.normal(size=(ng, dim)).astype(np.float32)
    return qf, gf, q_ids, g_ids, q_cams, g_cams


def euclidean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Plain Euclidean distance matrix (float32)."""
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(d, 0.0)).astype(np.float32)


def evaluate_loop(dist, q_ids, g_ids, q_cams, g_cams, max_rank: int = 50) -> dict:
    """Baseline: the common per-query Market-1501 evaluation loop (mAP, CMC, mINP)."""
    indices = np.argsort(dist, axis=1)
    matches = (g_ids[indices] == q_ids[:, None]).astype(np.int32)
    all_cmc, all_ap, all_inp = [], [], []
    for q in range(dist.shape[0]):
        order = indices[q]
        keep = ~((g_ids[order] == q_ids[q]) & (g_cams[order] == q_cams[q]))
        raw = matches[q][keep]
        if not raw.any():
            continue
        cmc = raw.cumsum()
        last = np.where(raw == 1)[0].max()
        all_inp.append(cmc[last] / (last + 1.0))
        cmc[cmc > 1] = 1
        all_cmc.append(cmc[:max_rank])
        precision = [x / (i + 1.0) for i, x in enumerate(raw.cumsum())]
        all_ap.append((np.asarray(precision) * raw).sum() / raw.sum())
    return {"mAP": float(np.mean(all_ap)), "cmc": np.asarray(all_cmc, dtype=np.float64).mean(0),
            "mINP": float(np.mean(all_inp))}


def bench_evaluate(quick: bool) -> list[Row]:
    """reid.metrics.evaluate vs the per-query loop at VeRi size (1,678 x 11,579)."""
    from pamtri.reid.metrics import evaluate
    nq, ng = (420, 2900) if quick else (1678, 11579)
    qf, gf, q_ids, g_ids, q_cams, g_cams = veri_like(nq, ng)
    dist = euclidean(qf, gf)
    ours = evaluate(dist, q_ids, g_ids, q_cams, g_cams)
    base = evaluate_loop(dist, q_ids, g_ids, q_cams, g_cams)
    same = (abs(ours["mAP"] - base["mAP"]) < 1e-6 and abs(ours["mINP"] - base["mINP"]) < 1e-6
            and np.allclose(ours["cmc"], base["cmc"], atol=1e-6))
    if not same:
        raise AssertionError(f"evaluate differs from the loop: mAP {ours['mAP']} vs {base['mAP']}")
    t_ours = timed(lambda: evaluate(dist, q_ids, g_ids, q_cams, g_cams), repeat=3)
    t_base = timed(lambda: evaluate_loop(dist, q_ids, g_ids, q_cams, g_cams), repeat=1, warmup=0)
    return [make_row("evaluate", t_ours, t_base, "s", note=f"{nq}x{ng}; mAP, CMC, mINP equal to 1e-6")]


def rerank_dense(q_g, q_q, g_g, k1: int = 20, k2: int = 6, lambda_value: float = 0.3) -> np.ndarray:
    """Baseline: k-reciprocal re-ranking (Zhong et al. 2017) as commonly implemented, with dense N x N
    arrays (squared distances, full argsort, float16 encoding V) and per-row loops."""
    nq = q_g.shape[0]
    d = np.concatenate([np.concatenate([q_q, q_g], 1), np.concatenate([q_g.T, g_g], 1)], 0).astype(np.float32)
    d = np.square(d)
    d = np.transpose(d / np.max(d, axis=0))
    n = d.shape[0]
    v = np.zeros_like(d, dtype=np.float16)
    rank = np.argsort(d, axis=1).astype(np.int32)
    half = int(np.around(k1 / 2))

    def reciprocal(i, k):
        forward = rank[i, :k + 1]
        return forward[np.where(rank[forward, :k + 1] == i)[0]]

    for i in range(n):
        r = reciprocal(i, k1)
        expanded = r
        for c in r:
            rc = reciprocal(c, half)
            if len(np.intersect1d(rc, r)) > 2 / 3 * len(rc):
                expanded = np.append(expanded, rc)
        expanded = np.unique(expanded)
        w = np.exp(-d[i, expanded])
        v[i, expanded] = w / np.sum(w)
    d = d[:nq]
    if k2 != 1:
        v_qe = np.zeros_like(v)
        for i in range(n):
            v_qe[i] = np.mean(v[rank[i, :k2]], axis=0)
        v = v_qe
    inverted = [np.where(v[:, j] != 0)[0] for j in range(n)]
    jaccard = np.zeros_like(d, dtype=np.float16)
    for i in range(nq):
        acc = np.zeros((1, n), dtype=np.float16)
        nz = np.where(v[i] != 0)[0]
        for j in nz:
            acc[0, inverted[j]] += np.minimum(v[i, j], v[inverted[j], j])
        jaccard[i] = 1 - acc / (2 - acc)
    final = jaccard * (1 - lambda_value) + d * lambda_value
    return final[:nq, nq:]


def peak_traced(fn: Callable[[], object]) -> tuple[object, int]:
    """(result, peak bytes of Python/NumPy allocations during fn) via tracemalloc."""
    import tracemalloc
    tracemalloc.start()
    try:
        out = fn()
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def bench_rerank(quick: bool) -> list[Row]:
    """Sparse/blocked re-ranking vs the dense implementation at VeRi size (13,257 images): time, memory, top-10."""
    from pamtri.reid.rerank import rerank
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


# -- model rows: two-stage inference and training steps at the paper's sizes ------------------------------

def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call, counted by torch.utils.flop_counter."""
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def _paper_models(heatmaps: bool = True):
    """HRNet-W32 pose model (256x256) and the DenseNet121 ReID model with heatmap channels, random weights."""
    import torch

    from pamtri.pose.model import build_pose_model
    from pamtri.reid.config import ModelConfig
    from pamtri.reid.model import build_model
    torch.manual_seed(0)
    pose = build_pose_model("hrnet_w32").eval()
    reid = build_model(ModelConfig(heatmaps=heatmaps, segments=False, keypoints=True), num_ids=576).eval()
    return pose, reid


def bench_inference(quick: bool) -> list[Row]:
    """Two-stage inference at paper sizes: our pipeline vs the naive path (fp32, eager, NCHW, batch 1,
    per-keypoint Python decoding, heatmaps through 36 JPEG files as the reference does)."""
    import cv2
    import torch

    from pamtri.pipeline.infer import Pipeline, run_pose
    from pamtri.pose.codec import HeatmapCodec
    from pamtri.pose.predict import PosePredictor
    from pamtri.reid.config import DataConfig
    from pamtri.reid.transforms import IMAGENET_MEAN, IMAGENET_STD

    n_ours, n_naive = (8, 2) if quick else (32, 6)
    pose, reid = _paper_models()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (256, 256, 3), dtype=np.uint8) for _ in range(n_ours)]
    data = DataConfig(height=256, width=256)
    fast = Pipeline(PosePredictor(pose, HeatmapCodec(), flip_test=True, device="cpu", precision="auto"), reid, data,
                    batch_size=n_ours)
    dtype = fast.dtype
    t_ours = timed(lambda: fast.embed_arrays(images), repeat=2)

    pose32, reid32 = _paper_models()
    slow = PosePredictor(pose32, HeatmapCodec(), flip_test=True, device="cpu", precision="fp32")
    mean = np.asarray(IMAGENET_MEAN, np.float32)[:, None, None]
    std = np.asarray(IMAGENET_STD, np.float32)[:, None, None]
    work = Path(tempfile.mkdtemp(prefix="pamtri-bench-naive-"))

    def naive():
        with torch.no_grad():
            for idx, im in enumerate(images[:n_naive]):
                crop, inverse = slow.crop(im)
                hm = slow.heatmaps(torch.from_numpy(crop[None])).numpy()
                xy, conf = decode_loop(hm)
                for k in range(36):  # the reference stores each heatmap as a JPEG and reads it back
                    cv2.imwrite(str(work / f"{idx}_{k:02d}.jpg"), np.clip(hm[0, k] * 255, 0, 255).astype(np.uint8))
                maps = np.stack([cv2.imread(str(work / f"{idx}_{k:02d}.jpg"), cv2.IMREAD_GRAYSCALE)
                                 for k in range(36)]).astype(np.float32) / 255.0
                maps = np.stack([cv2.resize(m, (256, 256)) for m in maps])
                rgb = (im.transpose(2, 0, 1).astype(np.float32) / 255.0 - mean) / std
                x = np.concatenate([rgb, (maps - mean.mean()) / std.mean()])[None]
                kv = np.concatenate([xy[0] / 64 - 0.5, conf[0, :, None] - 0.5], 1).reshape(1, -1)
                reid32(torch.from_numpy(x), torch.from_numpy(kv.astype(np.float32)))

    try:
        t_naive = timed(naive, repeat=1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ours_rate, naive_rate = n_ours / t_ours, n_naive / t_naive

    x, kv = fast.reid_inputs(images[:1], run_pose(fast.predictor, images[:1], fast.grid))
    crop = torch.from_numpy(fast.predictor.crop(images[0])[0][None])
    flops = 2 * count_flops(lambda: pose(crop)) + count_flops(lambda: reid(x, kv))
    prec = "bf16" if dtype == torch.bfloat16 else "fp32"
    peak = peak_flops(prec)
    peak32 = peak if prec == "fp32" else peak_flops("fp32")
    share = flops * ours_rate / peak
    naive_share = flops * naive_rate / peak32
    note = (f"HRNet-W32 256x256 flip test + DenseNet121 (3+36 ch) 256x256, batch {n_ours}, {prec}; "
            f"{flops / 1e9:.1f} GFLOP/img; peak {prec} matmul {peak / 1e9:.0f} GFLOP/s, fp32 "
            f"{peak32 / 1e9:.0f}; the naive path already runs at {100 * naive_share:.0f}% of the fp32 peak, so "
            f"even 100% of the {prec} peak would be {peak / (flops * naive_rate):.1f}x it")
    return [make_row("inference", ours_rate, naive_rate, "img/s", roofline_share=share, note=note)]


def _train_step_rate(model, make_batch, loss_fn, batch: int, fast: bool, steps: int) -> tuple[float, int]:
    """Images/s of optimiser steps (fast: bf16 autocast + channels-last; else fp32 NCHW) and FLOPs per image."""
    import torch

    from pamtri.common.runtime import autocast, autocast_dtype
    device = torch.device("cpu")
    dtype = autocast_dtype(device, "auto") if fast else None
    if fast:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    inputs = make_batch(batch)
    if fast:
        inputs = [t.contiguous(memory_format=torch.channels_last) if t.ndim == 4 else t for t in inputs]

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast(device, dtype):
            loss = loss_fn(model, *inputs)
        loss.backward()
        opt.step()

    seconds = timed(step, repeat=steps, warmup=1)
    flops = count_flops(step) // batch
    return batch / seconds, flops


def bench_train(quick: bool) -> list[Row]:
    """One training step of each stage at the paper's sizes: bf16 autocast + channels-last vs fp32 NCHW."""
    import torch

    from pamtri.pose.train import weighted_mse
    batch, steps = (4, 1) if quick else (16, 2)
    rows = []
    prec_peak = {}

    def pose_batch(b):
        g = torch.Generator().manual_seed(0)
        return [torch.randn(b, 3, 256, 256, generator=g), torch.rand(b, 36, 64, 64, generator=g), torch.ones(b, 36)]

    def pose_loss(m, x, t, w):
        return weighted_mse(m(x).float(), t, w)

    def reid_batch(b):
        g = torch.Generator().manual_seed(0)
        return [torch.randn(b, 39, 256, 256, generator=g), torch.rand(b, 108, generator=g) - 0.5,
                torch.arange(b) % 8]

    def reid_loss(m, x, kv, pid):
        from pamtri.reid.losses import triplet_batch_hard
        out = m(x, kv)
        xent = torch.nn.functional.cross_entropy(out["id"].float(), pid)
        return xent + triplet_batch_hard(out["feature"].float(), pid)

    for name, model_index, make, loss in (("train_pose", 0, pose_batch, pose_loss),
                                          ("train_reid", 1, reid_batch, reid_loss)):
        fast_rate, flops = _train_step_rate(_paper_models()[model_index], make, loss, batch, True, steps)
        base_rate, _ = _train_step_rate(_paper_models()[model_index], make, loss, batch, False, steps)
        from pamtri.common.runtime import cpu_supports_bf16
        prec = "bf16" if cpu_supports_bf16() else "fp32"
        if prec not in prec_peak:
            prec_peak[prec] = peak_flops(prec)
        share = flops * fast_rate / prec_peak[prec]
        what = "HRNet-W32 256x256" if name == "train_pose" else "DenseNet121 39 ch 256x256 + ID/triplet"
        rows.append(make_row(name, fast_rate, base_rate, "img/s", roofline_share=share,
                             note=f"{what}, batch {batch}, Adam; {prec} autocast + channels-last vs fp32 NCHW; "
                                  f"{flops / 1e9:.1f} GFLOP/img"))
    return rows


ROWS: dict[str, Callable[[bool], list[Row]]] = {
    "inference": bench_inference,
    "train": bench_train,
    "evaluate": bench_evaluate,
    "rerank": bench_rerank,
    "decode": bench_decode,
    "synth": bench_synth,
    "cache": bench_cache,
}


def run_bench(quick: bool = False, only: list[str] | None = None, out: str | os.PathLike | None = None) -> dict:
    """Run the benchmark groups (all, or ``only``) and return/write {"machine": ..., "rows": [...]}."""
    rows: list[Row] = []
    for group, fn in ROWS.items():
        if only and group not in only:
            continue
        log.info("bench: %s", group)
        t0 = time.perf_counter()
        rows.extend(fn(quick))
        log.info("bench: %s done in %.1f s", group, time.perf_counter() - t0)
    result = {"machine": machine_info(), "quick": quick, "rows": [asdict(r) for r in rows]}
    if out:
        atomic_write_text(out, json.dumps(result, indent=1))
    return result


def format_table(result: dict) -> str:
    """The rows as a Markdown table."""
    lines = ["| row | ours | baseline | unit | ratio (x better) | roofline share | note |",
             "| --- | ---: | ---: | --- | ---: | ---: | --- |"]
    for r in result["rows"]:
        share = "" if r["roofline_share"] is None else f"{100 * r['roofline_share']:.0f}%"
        lines.append(f"| {r['name']} | {r['ours']:.4g} | {r['baseline']:.4g} | {r['unit']} | {r['ratio']:.2f} | "
                     f"{share} | {r['note']} |")
    return "\n".join(lines)
