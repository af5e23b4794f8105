"""ReID training, one plain function: data, model, optimiser, schedule; loop; evaluate; checkpoint.

A run folder holds ``config.yaml`` (resolved), ``last.pt`` (full training state after each epoch, for an
exact ``--resume``), ``best.pt`` (weights with the best mAP and their description) and ``metrics.csv``.
Single-process by default; DistributedDataParallel when launched by ``torchrun`` (each rank samples its own
share of P x K batches; rank 0 evaluates and writes).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from pamtri.common.atomic import RunLock, atomic_write_text
from pamtri.common.checkpoint import save_checkpoint
from pamtri.common.config import save_config, to_dict
from pamtri.common.distributed import DistInfo, barrier, init_distributed, mean_over_ranks, shutdown
from pamtri.common.errors import ConfigError, DataError, PamtriError
from pamtri.common.runtime import autocast, autocast_dtype, pick_device, seed_everything
from pamtri.common.training import MetricsLog, check_finite, restore_training_state, save_training_state, unwrap
from pamtri.pose.records import REAL, SYNTHETIC, Record

from .config import ReIDConfig
from .dataset import ReIDDataset, collate_labels, combine_training_sets
from .evaluate import eval_loaders, evaluate_model, read_eval_records
from .losses import reid_losses
from .model import build_model
from .pose_inputs import cache_weights_sha256, make_pose_source
from .samplers import DomainBalancedSampler, IdentitySampler, SeededBatches
from .transforms import make_builder

log = logging.getLogger(__name__)
DOMAINS = {"real": REAL, "synthetic": SYNTHETIC}


def load_training_records(cfg: ReIDConfig) -> tuple[list[Record], dict]:
    """Every training source read and merged (contiguous ids, real first, domain set per source; info["source"]
    gives each record's index in ``cfg.data.train``)."""
    from pamtri.reid.datasets import read_split, single_image_identities
    sets = []
    for src in cfg.data.train:
        recs = read_split(src.root, src.split, src.format, check_images=True)
        if not recs:
            raise DataError(src.root, f"training split {src.split!r} is empty")
        if cfg.loss.triplet > 0 and (single := single_image_identities(recs, src.root, src.split)) is not None:
            raise single
        sets.append((recs, DOMAINS[src.domain]))
    return combine_training_sets(sets)


def class_counts(records: list[Record], cfg: ReIDConfig) -> tuple[int, int]:
    """(num_colors, num_types): the config's, or max label + 1 over the training records."""
    def count(configured: int, values: list[int], key: str) -> int:
        top = max(values, default=-1) + 1
        if configured and top > configured:
            where = next(r.path for r, v in zip(records, values) if v >= configured)
            raise ConfigError(f"model.{key} = {configured} but the training labels go up to {top - 1} (e.g. {where}); "
                              f"raise model.{key}, set it to 0 (= from the labels) or fix the labels")
        return configured or max(top, 1)
    return (count(cfg.model.num_colors, [r.color_id for r in records], "num_colors"),
            count(cfg.model.num_types, [r.type_id for r in records], "num_types"))


def lr_factor(epoch: int, cfg) -> float:
    """Learning-rate multiplier at ``epoch`` (0-based): linear warm-up, then x gamma at each milestone."""
    f = cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    if epoch < cfg.warmup_epochs:
        f *= cfg.warmup_factor + (1 - cfg.warmup_factor) * epoch / cfg.warmup_epochs
    return f


def build_optimizer(model: torch.nn.Module, cfg) -> torch.optim.Optimizer:
    """Adam / AMSGrad (or SGD with momentum) with weight decay over all parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, amsgrad=cfg.name == "amsgrad")


def _train_loader(records: list[Record], sources: list[int], cfg: ReIDConfig, info: DistInfo) -> DataLoader:
    pids = [r.vehicle_id for r in records]
    s = cfg.sampler
    if s.kind == "domain":
        sampler = DomainBalancedSampler(pids, [r.domain for r in records], s.ids_per_batch, s.k, seed=cfg.seed,
                                        rank=info.rank, world_size=info.world_size)
    else:
        sampler = IdentitySampler(pids, s.ids_per_batch, s.k, seed=cfg.seed, rank=info.rank,
                                  world_size=info.world_size)
    pose = make_pose_source(cfg.data, cfg.model, records, [src.pose_cache for src in cfg.data.train], sources)
    ds = ReIDDataset(records, make_builder(cfg.data, cfg.model, train=True), pose, cfg.model.orientation_bins)
    return DataLoader(ds, batch_sampler=SeededBatches(sampler, cfg.seed, info.rank), num_workers=cfg.data.workers,
                      pin_memory=torch.cuda.is_available(), persistent_workers=cfg.data.workers > 0)


def _device(cfg: ReIDConfig, info: DistInfo) -> torch.device:
    device = pick_device(cfg.device)
    if device.type == "cuda" and info.enabled:
        device = torch.device("cuda", info.local_rank)
    return device


def train(cfg: ReIDConfig, out: str | Path, resume: bool = False) -> dict:
    """Train the ReID network of ``cfg`` into run folder ``out``; returns {'best_mAP', 'best_epoch', 'last'}."""
    out = Path(out)
    info = init_distributed()
    lock = RunLock(out) if info.is_main else None
    if lock:
        lock.acquire()
    try:
        return _train(cfg, out, resume, info)
    finally:
        if lock:
            lock.release()
        shutdown(info)


def _train(cfg: ReIDConfig, out: Path, resume: bool, info: DistInfo) -> dict:
    last_path, best_path = out / "last.pt", out / "best.pt"
    if last_path.exists() and not resume:
        raise PamtriError(f"{out} already holds a training run (last.pt); pass --resume to continue it or choose "
                          "another --out")
    if resume and not last_path.exists():
        raise PamtriError(f"--resume: {last_path} does not exist")
    seed_everything(cfg.seed)
    device = _device(cfg, info)
    dtype = autocast_dtype(device, cfg.precision)
    records, data_info = load_training_records(cfg)
    num_colors, num_types = class_counts(records, cfg)
    cfg = replace(cfg, model=replace(cfg.model, num_colors=num_colors, num_types=num_types))
    log.info("training on %d images of %d identities (%d real, %d synthetic ids); device %s, autocast %s",
             data_info["num_images"], data_info["num_ids"], data_info["ids_per_domain"][REAL],
             data_info["ids_per_domain"][SYNTHETIC], device, dtype)
    loader = _train_loader(records, data_info["source"], cfg, info)
    eval_sets = None
    if info.is_main and cfg.data.pose_source == "cache" and not (cfg.data.query_cache and cfg.data.gallery_cache):
        log.warning("no evaluation during training: data.query_cache and data.gallery_cache name no pose caches")
    elif info.is_main:
        try:
            eval_sets = eval_loaders(*read_eval_records(cfg.data, cameras=not cfg.eval.ignore_cameras),
                                     cfg.data, cfg.model, cfg.eval.batch_size)
        except DataError as exc:
            log.warning("no evaluation during training: %s", exc)
    pose_sha = cache_weights_sha256(loader.dataset.pose)
    if eval_sets is not None and pose_sha is not None:
        eval_sha = cache_weights_sha256(eval_sets[0].dataset.pose)
        if eval_sha != pose_sha:
            raise ConfigError(f"data.query_cache / data.gallery_cache ({cfg.data.query_cache}) were built with other "
                              "pose weights than the training caches (data.train[i].pose_cache); rebuild them with "
                              "the same pose checkpoint")
    model = build_model(cfg.model, data_info["num_ids"], num_colors, num_types).to(device)
    description = model.describe()

    def weights_file(epoch: int, metrics: dict) -> dict:
        """What best.pt holds: the weights and everything needed to use them."""
        return {"model": unwrap(model).state_dict(), "model_description": description, "config": to_dict(cfg),
                "epoch": epoch, "metrics": metrics, "pose_weights_sha256": pose_sha,
                "format": "pamtri-reid-weights-1"}
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: lr_factor(e, cfg.optim))
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    start, best, best_epoch = 0, -1.0, -1
    if resume:
        state = restore_training_state(last_path, model=model, optimizer=optimizer, scheduler=scheduler,
                                       scaler=scaler)
        start, best = int(state["epoch"]), float(state["best"] if state["best"] is not None else -1.0)
        best_epoch = int(state.get("best_epoch", -1))
        log.info("resumed %s at epoch %d (best mAP so far %.4f)", out, start, best)
    if info.enabled:
        ddp_ids = [device.index] if device.type == "cuda" else None
        # a head whose loss weight is 0 gets no gradient, nor does the ReID FC when neither the ID head nor the
        # embedding uses it; DDP must then be told to expect unused parameters
        idle = any(getattr(cfg.loss, h) == 0 for h in ("id", "color", "type", "orientation", "domain")
                   if getattr(unwrap(model), f"{h}_classifier", None) is not None)
        idle = idle or (unwrap(model).id_fc is not None and not cfg.model.id_head and cfg.model.embedding == "pool")
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ddp_ids, find_unused_parameters=idle)
    # rows hold 1-based epoch numbers: keep the epochs already done (<= start)
    metrics = MetricsLog.open(out / "metrics.csv", keep_epochs_below=start + 1) if info.is_main else None
    if info.is_main:
        save_config(cfg, out / "config.yaml")
    batches = len(loader) if cfg.max_batches == 0 else min(len(loader), cfg.max_batches)
    total_steps = cfg.optim.epochs * batches
    summary = {}
    for epoch in range(start, cfg.optim.epochs):
        loader.batch_sampler.set_epoch(epoch)
        model.train()
        sums: dict[str, float] = {}
        t0 = time.time()
        bar = tqdm(loader, total=batches, desc=f"epoch {epoch + 1}/{cfg.optim.epochs}", leave=False,
                   dynamic_ncols=True, disable=not info.is_main)
        for step, batch in enumerate(bar):
            if step >= batches:
                break
            unwrap(model).set_progress((epoch * batches + step) / max(total_steps, 1))
            x = batch["image"].to(device, non_blocking=True)
            kp = batch["keypoints"].to(device, non_blocking=True)
            labels = {k: v.to(device) for k, v in collate_labels(batch).items()}
            with autocast(device, dtype):
                outputs = model(x, kp)
            losses = reid_losses({k: v.float() for k, v in outputs.items()}, labels, cfg.loss)
            check_finite(losses, step, epoch + 1)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(losses["total"]).backward()
            scaler.step(optimizer)
            scaler.update()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            bar.set_postfix(loss=f"{sums['total'] / (step + 1):.3f}")
        bar.close()
        row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"], "time_s": round(time.time() - t0, 1)}
        scheduler.step()  # after reading the rate: the row shows the rate this epoch trained at
        # each rank saw other batches: log the mean over ranks (a collective, so every rank calls it)
        means = mean_over_ranks({k: v / max(batches, 1) for k, v in sums.items()}, info)
        row.update({f"loss_{k}": v for k, v in means.items()})
        last_epoch = epoch + 1 == cfg.optim.epochs
        due = cfg.eval.every > 0 and (epoch + 1) % cfg.eval.every == 0
        if info.is_main and eval_sets is not None and (due or last_epoch):
            res, _ = evaluate_model(unwrap(model), *eval_sets, cfg.eval, device, dtype)
            row.update({k: v for k, v in res.items() if isinstance(v, float)})
            log.info("epoch %d: mAP %.4f rank-1 %.4f", epoch + 1, res["mAP"], res.get("rank1", math.nan))
            summary = {k: v for k, v in res.items() if not k.startswith("_")}
            if res["mAP"] > best:
                best, best_epoch = res["mAP"], epoch + 1
                save_checkpoint(weights_file(epoch + 1, summary), best_path)
        if info.is_main:
            log.info("epoch %d: %s", epoch + 1, ", ".join(f"{k} {v:.4g}" for k, v in row.items()
                                                         if k.startswith("loss_")))
            metrics.append(row)
            save_training_state(last_path, model=model, optimizer=optimizer, scheduler=scheduler, epoch=epoch + 1,
                                config=to_dict(cfg), best=best, scaler=scaler,
                                extra={"model_description": description, "best_epoch": best_epoch})
        barrier(info)
    if info.is_main and eval_sets is None and not best_path.exists():
        save_checkpoint(weights_file(cfg.optim.epochs, {}), best_path)
    if info.is_main:
        atomic_write_text(out / "DONE", f"best mAP {best:.6f} at epoch {best_epoch}\n")
    return {"best_mAP": best, "best_epoch": best_epoch, "last": summary}
