"""Training the pose model: one plain function, read top to bottom (SPEC section 2).

Single process by default; under ``torchrun`` (WORLD_SIZE > 1) DistributedDataParallel with a sharded
sampler; every rank validates its shard of the validation set, and rank 0 alone writes the run folder.
"""
from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from pamtri.common.atomic import RunLock
from pamtri.common.checkpoint import save_checkpoint
from pamtri.common.config import save_config, to_dict
from pamtri.common.distributed import (
    DistInfo,
    all_gather_objects,
    barrier,
    broadcast_buffers,
    init_distributed,
    mean_over_ranks,
    shutdown,
)
from pamtri.common.errors import PamtriError
from pamtri.common.runtime import autocast, autocast_dtype, pick_device, seed_everything
from pamtri.common.training import MetricsLog, check_finite, restore_training_state, save_training_state, unwrap

from .codec import HeatmapCodec
from .config import PoseConfig
from .dataset import MixSampler, build_datasets, collate
from .metrics import pck_table
from .model import build_pose_model
from .predict import PosePredictor, predict_loader

log = logging.getLogger(__name__)


def weighted_mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """0.5 x mean over (N, K, H, W) of (weight x (pred - target))^2; weight (N, K) zeroes unlabelled keypoints."""
    w = weight[:, :, None, None]
    return 0.5 * ((pred - target) * w).pow(2).mean()


def validate(model: torch.nn.Module, loader: DataLoader, cfg: PoseConfig, device: torch.device,
             info: DistInfo | None = None) -> dict[str, float]:
    """PCK (Table 5 row, percent) of ``model`` on the validation loader, with cfg.eval's decoding.

    Under DDP each rank's loader holds its shard; the predictions of all ranks are gathered, so every rank
    returns the table over the whole validation set (every rank must call this).
    """
    info = info or DistInfo()
    predictor = PosePredictor.from_config(model, cfg, device=device)
    pred, gt, _ = predict_loader(predictor, loader, progress="val" if info.is_main else None)
    model.train()
    if info.enabled:
        parts = all_gather_objects((pred, gt), info)
        pred, gt = np.concatenate([p for p, _ in parts]), np.concatenate([g for _, g in parts])
    return pck_table(pred[..., :2], gt, cfg.eval.pck_threshold)


def train(cfg: PoseConfig, out_dir: str | os.PathLike, resume: bool = False) -> dict:
    """Train per ``cfg`` into ``out_dir`` (last.pt every epoch, best.pt by PCK mean, metrics.csv,
    config.yaml); ``resume`` continues from last.pt exactly. Returns the final metrics row."""
    out_dir = Path(out_dir)
    info = init_distributed()
    rank, world, main = info.rank, info.world_size, info.is_main
    lock = RunLock(out_dir).acquire() if main else None
    try:
        if not resume and (out_dir / "last.pt").exists():  # before anything in it is overwritten
            raise PamtriError(f"{out_dir} already holds a training run (last.pt); pass --resume to continue it or "
                              "choose another --out")
        # --- setup -------------------------------------------------------------------------------
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        seed_everything(cfg.train.seed + rank)
        device = pick_device(cfg.train.device)
        if device.type == "cuda" and world > 1:
            device = torch.device("cuda", info.local_rank)
            torch.cuda.set_device(device)
        dtype = autocast_dtype(device, cfg.train.precision)
        if cfg.train.batch_size % world:
            raise PamtriError(f"train.batch_size {cfg.train.batch_size} is not divisible by the {world} processes")
        if main:
            out_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, out_dir / "config.yaml")

        # --- data --------------------------------------------------------------------------------
        codec = HeatmapCodec.from_config(cfg)  # saved with the weights: how their heatmaps read
        train_set, sizes, weights, val_set = build_datasets(cfg.data, codec)
        sampler = MixSampler(sizes, weights, cfg.data.epoch_size, cfg.train.seed, rank, world)
        per_rank = cfg.train.batch_size // world
        if len(sampler) < per_rank:
            raise PamtriError(f"an epoch has {len(sampler)} samples per process, fewer than one batch of {per_rank}")
        workers = cfg.data.num_workers
        loader = DataLoader(train_set, batch_size=per_rank, sampler=sampler, num_workers=workers,
                            collate_fn=collate, drop_last=True, pin_memory=device.type == "cuda",
                            persistent_workers=workers > 0)
        val_loader = None
        if val_set is not None:  # each rank predicts every world-th image; validate() gathers them
            shard = Subset(val_set, range(rank, len(val_set), world))
            val_loader = DataLoader(shard, batch_size=cfg.eval.batch_size, shuffle=False, num_workers=workers,
                                    collate_fn=collate)

        # --- model, optimiser, schedule ----------------------------------------------------------
        model = build_pose_model(cfg.model.name, cfg.model.weights or None).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, cfg.train.lr_steps, cfg.train.lr_factor)
        scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
        start_epoch, best = 0, -math.inf
        if resume:
            last = out_dir / "last.pt"
            if not last.is_file():
                raise PamtriError(f"{out_dir}: nothing to resume (no last.pt)")
            state = restore_training_state(last, model=model, optimizer=optimizer, scheduler=scheduler,
                                           scaler=scaler)
            start_epoch = int(state["epoch"])
            best = -math.inf if state.get("best") is None else float(state["best"])
            log.info("resuming %s at epoch %d (best PCK %.2f)", out_dir, start_epoch + 1, best)
        if world > 1:
            model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)
        metrics = MetricsLog.open(out_dir / "metrics.csv", keep_epochs_below=start_epoch + 1) if main else None
        row: dict = {}

        # --- loop --------------------------------------------------------------------------------
        for epoch in range(start_epoch, cfg.train.epochs):
            sampler.set_epoch(epoch)
            model.train()
            started = time.time()
            total, steps = 0.0, 0
            limit = cfg.train.max_steps or len(loader)
            bar = tqdm(loader, total=min(limit, len(loader)), desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
                       disable=not main, leave=False)
            for step, batch in enumerate(bar):
                if step >= limit:
                    break
                image = batch["image"].to(device, non_blocking=True)
                target = batch["target"].to(device, non_blocking=True)
                weight = batch["weight"].to(device, non_blocking=True)
                with autocast(device, dtype):
                    output = model(image)
                loss = weighted_mse(output.float(), target, weight)
                check_finite({"heatmap_mse": loss}, step, epoch + 1)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                total += float(loss.detach())
                steps += 1
                bar.set_postfix(loss=f"{total / steps:.3g}")
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()

            # --- validate (every rank, its shard), checkpoint (rank 0) ---------------------------
            loss = mean_over_ranks({"loss": total / max(steps, 1)}, info)["loss"]
            row = {"epoch": epoch + 1, "lr": lr, "loss": loss, "train_seconds": time.time() - started}
            is_last = epoch + 1 == cfg.train.epochs
            score = None
            if val_loader is not None and ((epoch + 1) % cfg.train.val_every == 0 or is_last):
                broadcast_buffers(unwrap(model), info)  # validate the weights rank 0 saves, on every rank
                table = validate(unwrap(model), val_loader, cfg, device, info)
                row.update({f"pck_{k}": v for k, v in table.items()})
                score = table["mean"]
            if main:
                is_best = score is not None and score > best
                if is_best:
                    best = score
                extra = {"kind": "pose", "codec": codec.to_dict(),
                         "metrics": {k: v for k, v in row.items() if isinstance(v, (int, float))}}
                # Order matters for crash safety: a row or best.pt written before last.pt is simply
                # redone on resume, which restarts after the epoch last.pt records.
                metrics.append(row)
                if is_best or (val_loader is None and is_last):
                    save_checkpoint({"model": unwrap(model).state_dict(), "config": to_dict(cfg), "kind": "pose",
                                     "codec": extra["codec"], "epoch": epoch + 1, "metrics": extra["metrics"],
                                     "format": "pamtri-weights-1"}, out_dir / "best.pt")
                save_training_state(out_dir / "last.pt", model=model, optimizer=optimizer, scheduler=scheduler,
                                    epoch=epoch + 1, config=to_dict(cfg), best=None if best == -math.inf else best,
                                    extra=extra, scaler=scaler)
                log.info("epoch %d/%d: loss %.4g%s (%.0fs)", epoch + 1, cfg.train.epochs, row["loss"],
                         f", PCK mean {score:.2f}" if score is not None else "", row["train_seconds"])
            barrier(info)
        return row
    finally:
        if lock is not None:
            lock.release()
        shutdown(info)
