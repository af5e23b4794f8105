"""Training the pose model: data, model and the heatmap loss; the loop is ``pamtri.common.engine.fit``.

Single process by default; under ``torchrun`` (WORLD_SIZE > 1) DistributedDataParallel with a sharded
sampler; every rank validates its shard of the validation set, and rank 0 alone writes the run folder.
"""
from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from pamtri.common.config import to_dict
from pamtri.common.distributed import DistInfo, all_gather_objects
from pamtri.common.engine import Run, Stage, fit, open_run
from pamtri.common.errors import PamtriError

from .codec import HeatmapCodec
from .config import PoseConfig
from .dataset import MixSampler, build_datasets, collate
from .metrics import pck_table
from .predict import PosePredictor, predict_loader
from .weights import build_pose_model


def weighted_mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """0.5 x mean over (N, K, H, W) of (weight x (pred - target))^2; weight (N, K) zeroes unlabelled keypoints."""
    w = weight[:, :, None, None]
    return 0.5 * ((pred - target) * w).pow(2).mean()


def validation_pck(model: torch.nn.Module, loader: DataLoader, cfg: PoseConfig, device: torch.device,
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
    """Train per ``cfg`` into ``out_dir`` (config.yaml, last.pt every epoch, best.pt by PCK mean, metrics.csv);
    ``resume`` continues from last.pt exactly. Returns the final metrics row."""
    with open_run(out_dir, resume, seed=cfg.seed, device=cfg.device, precision=cfg.precision,
                  threads=cfg.threads) as run:
        stage = build_stage(cfg, run)
        return fit(run, stage, cfg.optim, config=cfg, eval_every=cfg.eval.every, max_batches=cfg.max_batches).row


def build_stage(cfg: PoseConfig, run: Run) -> Stage:
    """The pose model, its loaders, the heatmap loss and PCK validation, for ``fit``."""
    codec = HeatmapCodec.from_config(cfg)  # saved with the weights: how their heatmaps read
    loader, val_loader = build_loaders(cfg, codec, run)
    model = build_pose_model(cfg.model.name, cfg.model.weights or None).to(run.device)

    def forward(model: torch.nn.Module, batch: dict, progress: float) -> torch.Tensor:
        """(N, 3, H, W) images -> (N, 36, H/4, W/4) heatmaps."""
        return model(batch["image"])

    def losses(output: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        mse = weighted_mse(output.float(), batch["target"], batch["weight"])
        return {"heatmap_mse": mse, "total": mse}

    def pck(model: torch.nn.Module) -> dict[str, float]:
        """PCK per keypoint group over the whole validation set, in percent, as pck_<group>."""
        return {f"pck_{k}": v for k, v in validation_pck(model, val_loader, cfg, run.device, run.info).items()}

    def weights_file(metrics: dict) -> dict:
        """What best.pt holds: the weights, the config that made them, and their epoch's metrics."""
        return {"model": model.state_dict(), "config": to_dict(cfg), "kind": "pose", "codec": codec.to_dict(),
                "epoch": metrics["epoch"], "metrics": metrics, "format": "pamtri-weights-1"}

    return Stage(model=model, loader=loader, forward=forward, losses=losses,
                 validate=pck if val_loader is not None else None, score="pck_mean", weights_file=weights_file,
                 state_extra={"kind": "pose", "codec": codec.to_dict()}, sharded_validation=True)


def build_loaders(cfg: PoseConfig, codec: HeatmapCodec, run: Run) -> tuple[DataLoader, DataLoader | None]:
    """(this rank's training loader of data.batch_size / world images per step, its shard of the validation
    set or None)."""
    rank, world = run.info.rank, run.info.world_size
    d = cfg.data
    if d.batch_size % world:
        raise PamtriError(f"data.batch_size {d.batch_size} is not divisible by the {world} processes")
    train_set, sizes, weights, val_set = build_datasets(d, codec)
    sampler = MixSampler(sizes, weights, d.epoch_size, cfg.seed, rank, world)
    per_rank = d.batch_size // world
    if len(sampler) < per_rank:
        raise PamtriError(f"an epoch has {len(sampler)} samples per process, fewer than one batch of {per_rank}")
    loader = DataLoader(train_set, batch_size=per_rank, sampler=sampler, num_workers=d.workers, collate_fn=collate,
                        drop_last=True, pin_memory=run.device.type == "cuda", persistent_workers=d.workers > 0)
    if val_set is None:
        return loader, None
    shard = Subset(val_set, range(rank, len(val_set), world))  # each rank predicts every world-th image
    return loader, DataLoader(shard, batch_size=cfg.eval.batch_size, shuffle=False, num_workers=d.workers,
                              collate_fn=collate)
