"""One training engine for both stages: the run folder, resume, DDP, the epoch loop, metrics and checkpoints.

A stage (``pamtri.pose.train``, ``pamtri.reid.train``) reads top to bottom as::

    with open_run(out, resume, seed=cfg.seed, device=cfg.device, precision=cfg.precision) as run:
        stage = Stage(model=..., loader=..., forward=..., losses=..., validate=..., ...)
        result = fit(run, stage, cfg.optim, config=cfg, eval_every=cfg.eval.every, max_batches=cfg.max_batches)

The run folder holds ``config.yaml`` (resolved), ``last.pt`` (the full training state after every epoch:
model, optimiser(s), schedule, fp16 loss scale, RNG, epoch, best score; ``--resume`` continues from it exactly),
``best.pt`` (the weights with the best validation score, or the final weights when nothing was scored),
``metrics.csv`` (one row per epoch: epoch, the rate it trained at, the mean of every loss term over its steps
and the ranks, its training time, the validation metrics; TensorBoard events in ``tb/`` when installed) and,
for stages that ask, ``DONE``. Single process by default; under ``torchrun`` each rank trains on its own
batches through DistributedDataParallel and rank 0 alone writes.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from .atomic import RunLock, atomic_write_text
from .checkpoint import save_checkpoint
from .config import save_config, to_dict
from .device import autocast, autocast_dtype, pick_device, seed_everything, training_memory_format
from .distributed import DistInfo, barrier, broadcast_buffers, init_distributed, mean_over_ranks, shutdown
from .errors import PamtriError
from .schedule import OptimConfig, build_optimizer, build_scheduler
from .training import MetricsLog, check_finite, restore_training_state, save_training_state, unwrap

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Run:
    """One training run as this process sees it."""
    out: Path                      # the run folder
    resume: bool                   # continue from out/last.pt
    info: DistInfo                 # this process's rank in the job
    device: torch.device           # this rank's device
    dtype: torch.dtype | None      # autocast dtype; None = fp32

    @property
    def memory_format(self) -> torch.memory_format:
        return training_memory_format(self.device, self.dtype)


@dataclass
class Stage:
    """What a stage hands ``fit``: its model and data, built, and plain functions for the stage-specific parts."""
    model: torch.nn.Module         # on run.device, not wrapped; fit builds its optimiser from cfg.optim
    loader: DataLoader             # training batches (dicts of tensors); sampler.set_epoch(epoch) is called
    # (model, batch on the device, fraction of the training done in [0, 1)) -> outputs; runs under autocast
    forward: Callable[[torch.nn.Module, dict, float], Any]
    # (outputs, batch) -> named float32 loss tensors incl. 'total' (what is back-propagated); runs outside
    # autocast, so distances and squared errors keep fp32 whatever the forward's precision
    losses: Callable[[Any, dict], dict[str, torch.Tensor]]
    # unwrapped model -> metrics of this epoch (None: no validation data); each epoch starts in train mode
    validate: Callable[[torch.nn.Module], dict] | None
    score: str                     # the key of validate()'s metrics that picks best.pt (higher is better)
    # the epoch's metrics (the metrics.csv row and every public validation value) -> the dict best.pt holds
    weights_file: Callable[[dict], dict]
    state_extra: dict = field(default_factory=dict)   # more entries for last.pt (e.g. a model description)
    # an optimiser the stage built over some of its model's parameters (ReID: BoT's SGD for the class centres):
    # the main optimiser leaves them out, it steps after the main one, unscheduled, and its state is in last.pt
    side_optimizer: torch.optim.Optimizer | None = None
    find_unused_parameters: bool = False  # DDP: some parameters get no gradient (a head with loss weight 0)
    sharded_validation: bool = False      # validate() is collective (each rank scores its shard); else rank 0 only
    done_marker: bool = False             # write DONE (best score and epoch) when the run finishes


@dataclass
class Result:
    """How ``fit`` ended."""
    row: dict                      # the last epoch's metrics.csv row ({} when there was nothing left to train)
    best: float | None             # best validation score (None: nothing was scored)
    best_epoch: int | None         # its 1-based epoch
    validation: dict = field(default_factory=dict)  # the last validation's public metrics


@contextlib.contextmanager
def open_run(out: str | os.PathLike, resume: bool, *, seed: int, device: str = "auto", precision: str = "auto",
             threads: int = 0) -> Iterator[Run]:
    """Join the job (torchrun), lock the run folder (rank 0), refuse to overwrite a run without ``resume``,
    set torch's CPU threads (0 = its default), seed (seed + rank), pick this rank's device and autocast dtype;
    unlock and leave the job at the end."""
    out = Path(out)
    info = init_distributed()
    lock = None
    try:
        lock = RunLock(out).acquire() if info.is_main else None
        check_run_folder(out, resume)
        if threads:
            torch.set_num_threads(threads)
        seed_everything(seed + info.rank)
        dev = rank_device(device, info)
        yield Run(out, resume, info, dev, autocast_dtype(dev, precision))
    finally:
        if lock is not None:
            lock.release()
        shutdown(info)


def check_run_folder(out: Path, resume: bool) -> None:
    """Refuse to train over an existing run without ``resume``, and to resume a run that has no last.pt."""
    last = out / "last.pt"
    if last.exists() and not resume:
        raise PamtriError(f"{out} already holds a training run (last.pt); pass --resume to continue it or choose "
                          "another --out")
    if resume and not last.is_file():
        raise PamtriError(f"{out}: nothing to resume (no last.pt)")


def rank_device(name: str, info: DistInfo) -> torch.device:
    """The device ``name`` picks ('auto': cuda when available), on GPU the one of this rank under torchrun."""
    device = pick_device(name)
    if device.type == "cuda" and info.enabled:
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    return device


def fit(run: Run, stage: Stage, optim: OptimConfig, *, config: Any, eval_every: int, max_batches: int = 0) -> Result:
    """Train ``stage`` for optim.epochs into run.out, validating every ``eval_every`` epochs (0: after the last
    only) and after the last, with at most ``max_batches`` steps per epoch (0: the whole loader); ``config``
    (the stage's resolved config) goes to config.yaml and into the checkpoints."""
    info, main = run.info, run.info.is_main
    side = stage.side_optimizer
    stage.model.to(memory_format=run.memory_format)  # in place: the parameters stay the same objects
    optimizer = build_optimizer(stage.model, optim, exclude=[] if side is None else parameters_of(side))
    scheduler = build_scheduler(optimizer, optim)
    scaler = torch.amp.GradScaler(run.device.type, enabled=run.dtype == torch.float16)
    start, best, best_epoch = resume_state(run, stage.model, optimizer, scheduler, scaler, side)
    model = stage.model
    if info.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[run.device.index] if run.device.type == "cuda" else None,
            find_unused_parameters=stage.find_unused_parameters)
    metrics = MetricsLog.open(run.out / "metrics.csv", keep_epochs_below=start + 1) if main else None
    if main:
        save_config(config, run.out / "config.yaml")
    batches = len(stage.loader) if max_batches == 0 else min(len(stage.loader), max_batches)
    result = Result({}, best, best_epoch)
    for epoch in range(start, optim.epochs):
        started = time.time()
        lr = optimizer.param_groups[0]["lr"]
        losses = train_one_epoch(model, stage, optimizer, scaler, run, epoch, optim.epochs, batches)
        scheduler.step()  # after the epoch: the row shows the rate this epoch trained at
        row = {"epoch": epoch + 1, "lr": lr, **{f"loss_{k}": v for k, v in losses.items()},
               "time_s": round(time.time() - started, 1)}
        is_last = epoch + 1 == optim.epochs
        scored = {}
        if stage.validate is not None and (is_last or (eval_every > 0 and (epoch + 1) % eval_every == 0)):
            scored = {k: v for k, v in validation_metrics(model, stage, info).items() if not k.startswith("_")}
            row.update({k: v for k, v in scored.items() if isinstance(v, (int, float))})
            result.validation = scored
        result.row = row
        if main:
            score = scored.get(stage.score)
            improved = score is not None and (result.best is None or score > result.best)
            if improved:
                result.best, result.best_epoch = float(score), epoch + 1
            # Order matters for crash safety: best.pt or a row written before last.pt is simply redone on
            # resume, which restarts after the epoch last.pt records.
            if improved or (result.best is None and is_last):  # never scored: the final weights
                save_checkpoint(stage.weights_file({**row, **scored}), run.out / "best.pt")
            metrics.append(row)
            save_training_state(run.out / "last.pt", model=model, optimizer=optimizer, scheduler=scheduler,
                                epoch=epoch + 1, config=to_dict(config), best=result.best, scaler=scaler,
                                side_optimizer=side,
                                extra={**stage.state_extra, "best_epoch": result.best_epoch, "metrics": row})
            log.info("epoch %d/%d: %s (%.0fs)", epoch + 1, optim.epochs, ", ".join(
                f"{k} {v:.4g}" for k, v in row.items() if k.startswith("loss_") or k == stage.score), row["time_s"])
        barrier(info)
    if main:
        metrics.close()
        if stage.done_marker:
            score = "none" if result.best is None else f"{result.best:.6f}"
            atomic_write_text(run.out / "DONE", f"best {stage.score} {score} at epoch {result.best_epoch}\n")
    return result


def parameters_of(optimizer: torch.optim.Optimizer) -> list[torch.nn.Parameter]:
    """Every parameter ``optimizer`` steps."""
    return [p for group in optimizer.param_groups for p in group["params"]]


def resume_state(run: Run, model: torch.nn.Module, optimizer, scheduler, scaler, side_optimizer=None
                 ) -> tuple[int, float | None, int | None]:
    """(epochs done, best score, its epoch) after loading run.out/last.pt into the objects; (0, None, None)
    for a new run."""
    if not run.resume:
        return 0, None, None
    state = restore_training_state(run.out / "last.pt", model=model, optimizer=optimizer, scheduler=scheduler,
                                   scaler=scaler, side_optimizer=side_optimizer)
    best, best_epoch = state.get("best"), state.get("best_epoch")
    log.info("resuming %s after epoch %d (best %s at epoch %s)", run.out, state["epoch"], best, best_epoch)
    return int(state["epoch"]), None if best is None else float(best), best_epoch


def train_one_epoch(model: torch.nn.Module, stage: Stage, optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler, run: Run, epoch: int, epochs: int, batches: int) -> dict[str, float]:
    """``batches`` optimiser steps of epoch ``epoch`` (0-based); returns each loss term's mean over the steps
    and the ranks (a collective: every rank calls it)."""
    optimizers = [optimizer] if stage.side_optimizer is None else [optimizer, stage.side_optimizer]
    set_epoch(stage.loader, epoch)
    model.train()
    sums: dict[str, float] = {}
    steps = 0
    bar = tqdm(islice(stage.loader, batches), total=batches, desc=f"epoch {epoch + 1}/{epochs}", leave=False,
               dynamic_ncols=True, disable=not run.info.is_main)
    for step, batch in enumerate(bar):
        batch = to_device(batch, run.device, run.memory_format)
        with autocast(run.device, run.dtype):
            outputs = stage.forward(model, batch, (epoch * batches + step) / max(epochs * batches, 1))
        losses = stage.losses(outputs, batch)
        check_finite(losses, step, epoch + 1)
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        scaler.scale(losses["total"]).backward()
        for opt in optimizers:
            scaler.step(opt)
        scaler.update()
        for name, value in losses.items():
            sums[name] = sums.get(name, 0.0) + float(value.detach())
        steps += 1
        bar.set_postfix(loss=f"{sums['total'] / steps:.4g}")
    bar.close()
    return mean_over_ranks({name: total / max(steps, 1) for name, total in sums.items()}, run.info)


def validation_metrics(model: torch.nn.Module, stage: Stage, info: DistInfo) -> dict:
    """stage.validate on the unwrapped model: on every rank when it is sharded (with rank 0's BatchNorm
    statistics, the ones its checkpoint holds), else on rank 0 alone ({} on the others)."""
    if stage.sharded_validation:
        broadcast_buffers(unwrap(model), info)
    elif not info.is_main:
        return {}
    return stage.validate(unwrap(model))


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Tell the loader's sampler (or batch sampler) which epoch it samples, for a new order each epoch."""
    for sampler in (loader.sampler, loader.batch_sampler):
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)


def to_device(batch: dict, device: torch.device, memory_format: torch.memory_format = torch.contiguous_format
              ) -> dict:
    """The batch with every tensor on ``device``, image-like (4-d floating) ones in ``memory_format``; other values
    as they are."""
    def moved(v: torch.Tensor) -> torch.Tensor:
        if v.ndim == 4 and v.is_floating_point():
            return v.to(device, non_blocking=True, memory_format=memory_format)
        return v.to(device, non_blocking=True)
    return {k: moved(v) if torch.is_tensor(v) else v for k, v in batch.items()}
