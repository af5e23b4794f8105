"""The ``inference`` row: two-stage inference at the paper's sizes, ours vs the naive path, with its roofline."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from .baselines import naive_two_stage
from .harness import Row, count_flops, make_row, peak_flops, timed
from .inputs import paper_models


def _roofline(fast, pose, reid, images, ours_rate: float, naive_rate: float, batch: int) -> tuple[float, str]:
    """(share of the measured matmul peak our rate reaches, the row's note) from the FLOPs of one image."""
    import torch

    from pamtri.pipeline.infer import run_pose
    x, kv = fast.reid_inputs(images[:1], run_pose(fast.predictor, images[:1], fast.grid))
    crop = torch.from_numpy(fast.predictor.crop(images[0])[0][None])
    flops = 2 * count_flops(lambda: pose(crop)) + count_flops(lambda: reid(x, kv))
    prec = "bf16" if fast.dtype == torch.bfloat16 else "fp32"
    peak = peak_flops(prec)
    peak32 = peak if prec == "fp32" else peak_flops("fp32")
    naive_share = flops * naive_rate / peak32
    note = (f"HRNet-W32 256x256 flip test + DenseNet121 (3+36 ch) 256x256, batch {batch}, {prec}; "
            f"{flops / 1e9:.1f} GFLOP/img; peak {prec} matmul {peak / 1e9:.0f} GFLOP/s, fp32 "
            f"{peak32 / 1e9:.0f}; the naive path already runs at {100 * naive_share:.0f}% of the fp32 peak, so "
            f"even 100% of the {prec} peak would be {peak / (flops * naive_rate):.1f}x it")
    return flops * ours_rate / peak, note


def bench_inference(quick: bool) -> list[Row]:
    """Two-stage inference at paper sizes: our pipeline vs the naive path (fp32, eager, NCHW, batch 1,
    per-keypoint Python decoding, heatmaps through 36 JPEG files as the reference does)."""
    from pamtri.pipeline.infer import Pipeline
    from pamtri.pose.codec import HeatmapCodec
    from pamtri.pose.predict import PosePredictor
    from pamtri.reid.config import DataConfig

    n_ours, n_naive = (8, 2) if quick else (32, 6)
    pose, reid = paper_models()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (256, 256, 3), dtype=np.uint8) for _ in range(n_ours)]
    data = DataConfig(height=256, width=256)
    fast = Pipeline(PosePredictor(pose, HeatmapCodec(), flip_test=True, device="cpu", precision="auto"), reid, data,
                    batch_size=n_ours)
    t_ours = timed(lambda: fast.embed_arrays(images), repeat=2)

    pose32, reid32 = paper_models()
    slow = PosePredictor(pose32, HeatmapCodec(), flip_test=True, device="cpu", precision="fp32")
    work = Path(tempfile.mkdtemp(prefix="pamtri-bench-naive-"))
    try:
        t_naive = timed(lambda: naive_two_stage(images[:n_naive], slow, reid32, work), repeat=1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ours_rate, naive_rate = n_ours / t_ours, n_naive / t_naive
    share, note = _roofline(fast, pose, reid, images, ours_rate, naive_rate, n_ours)
    return [make_row("inference", ours_rate, naive_rate, "img/s", roofline_share=share, note=note)]
