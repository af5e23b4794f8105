"""The ``train_pose`` and ``train_reid`` rows: one optimiser step at the paper's sizes, fast path vs fp32 NCHW."""
from __future__ import annotations

import torch

from pamtri.common.device import autocast, autocast_dtype, cpu_supports_bf16
from pamtri.common.training import optimiser_step
from pamtri.pose.train import weighted_mse
from pamtri.reid.losses import triplet_batch_hard

from .harness import Row, attainable_seconds, count_flops, layer_costs, make_row, memory_bandwidth, peak_flops, timed
from .inputs import paper_models


def train_step(model, make_batch, loss_fn, batch: int, fast: bool):
    """One optimiser step (Adam) of ``model`` on a fixed batch, as a function (fast: bf16 autocast +
    channels-last + fused Adam; else fp32 NCHW, Adam's default implementation)."""
    dtype = autocast_dtype(torch.device("cpu"), "auto") if fast else None
    return optimiser_step(model, make_batch(batch), loss_fn, dtype, channels_last=fast, fused=fast)


def _train_step_rate(model, make_batch, loss_fn, batch: int, fast: bool, steps: int) -> tuple[float, int]:
    """Images/s of optimiser steps (fast: bf16 autocast + channels-last; else fp32 NCHW) and FLOPs per image."""
    step = train_step(model, make_batch, loss_fn, batch, fast)
    seconds = timed(step, repeat=steps, warmup=1)
    flops = count_flops(step) // batch
    return batch / seconds, flops


def train_bound(model, make_batch, loss_fn, batch: int, peak: float, bandwidth: float) -> float:
    """Attainable seconds per image of a fast training step: each layer's forward bound (``layer_costs`` under
    bf16 autocast + channels-last) three times (forward, gradient of the input, gradient of the weights: each
    about the forward's FLOPs and bytes), plus fused Adam's pass over the parameters (read parameter, gradient and
    the two moments, write three: 28 bytes per fp32 parameter)."""
    device = torch.device("cpu")
    model = model.to(memory_format=torch.channels_last).train()
    inputs = [t.contiguous(memory_format=torch.channels_last) if t.ndim == 4 else t for t in make_batch(batch)]
    with autocast(device, autocast_dtype(device, "auto")):
        costs = layer_costs(model, lambda: loss_fn(model, *inputs))
    adam = 28 * sum(p.numel() for p in model.parameters()) / bandwidth
    return (3 * attainable_seconds(costs, peak, bandwidth) + adam) / batch


def _pose_batch(b: int) -> list:
    """Images (b, 3, 256, 256), target heatmaps (b, 36, 64, 64), keypoint weights (b, 36)."""
    g = torch.Generator().manual_seed(0)
    return [torch.randn(b, 3, 256, 256, generator=g), torch.rand(b, 36, 64, 64, generator=g), torch.ones(b, 36)]


def _pose_loss(m, x, t, w):
    return weighted_mse(m(x).float(), t, w)


def _reid_batch(b: int) -> list:
    """Inputs (b, 39, 256, 256), keypoint vectors (b, 108), identities (b,) in 8 classes."""
    g = torch.Generator().manual_seed(0)
    return [torch.randn(b, 39, 256, 256, generator=g), torch.rand(b, 108, generator=g) - 0.5, torch.arange(b) % 8]


def _reid_loss(m, x, kv, pid):

    out = m(x, kv)
    xent = torch.nn.functional.cross_entropy(out["id"].float(), pid)
    return xent + triplet_batch_hard(out["embedding"].float(), pid)


def bench_train(quick: bool) -> list[Row]:
    """One training step of each stage at the paper's sizes: bf16 autocast + channels-last vs fp32 NCHW."""
    batch, steps = (4, 1) if quick else (16, 2)
    rows = []
    prec_peak = {}
    bandwidth = memory_bandwidth()
    for name, model_index, make, loss in (("train_pose", 0, _pose_batch, _pose_loss),
                                          ("train_reid", 1, _reid_batch, _reid_loss)):
        fast_rate, flops = _train_step_rate(paper_models()[model_index], make, loss, batch, True, steps)
        base_rate, _ = _train_step_rate(paper_models()[model_index], make, loss, batch, False, steps)
        prec = "bf16" if cpu_supports_bf16() else "fp32"
        if prec not in prec_peak:
            prec_peak[prec] = peak_flops(prec)
        share = flops * fast_rate / prec_peak[prec]
        bound = train_bound(paper_models()[model_index], make, loss, batch, prec_peak[prec], bandwidth)
        what = "HRNet-W32 256x256" if name == "train_pose" else "DenseNet121 39 ch 256x256 + ID/triplet"
        rows.append(make_row(name, fast_rate, base_rate, "img/s", roofline_share=share,
                             attainable_share=bound * fast_rate,
                             note=f"{what}, batch {batch}, Adam; {prec} autocast + channels-last vs fp32 NCHW; "
                                  f"{flops / 1e9:.1f} GFLOP/img; attainable bound {1 / bound:.1f} img/s (per layer: "
                                  f"3x the forward's max(FLOPs / peak, bytes / {bandwidth / 1e9:.1f} GB/s), + Adam)"))
    return rows
