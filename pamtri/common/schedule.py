"""The optimiser and its learning-rate schedule, one config for both stages.

Each stage's defaults come through its ``optim`` field's default_factory (pose: the paper's Adam 1e-3,
x0.1 at epochs 170 and 200 of 210; ReID: Adam 3e-4, x0.1 at 20 and 40 of 60).
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import torch

from .errors import ConfigError


@dataclass
class OptimConfig:
    """Optimiser and schedule (x gamma at each milestone epoch, or cosine annealing), with an optional linear
    warm-up."""
    name: Literal["adam", "amsgrad", "sgd"] = "adam"
    schedule: Literal["step", "cosine"] = "step"  # cosine: 0.5 (1 + cos(pi t)), t from 0 after the warm-up to 1
    lr: float = 3e-4
    weight_decay: float = 5e-4
    momentum: float = 0.9          # SGD only
    nesterov: bool = True          # SGD only: Nesterov momentum
    bias_lr_factor: float = 1.0    # biases train at lr x this (BoT's BIAS_LR_FACTOR; its recipes use 1)
    epochs: int = 60
    milestones: list[int] = field(default_factory=lambda: [20, 40])
    gamma: float = 0.1
    warmup_epochs: int = 0
    warmup_factor: float = 0.1     # the rate's multiplier at epoch 0 of the warm-up
    # cosine only: the floor (absolute rate; fast-reid's ETA_MIN_LR, TransReID's 0.002 x lr), epochs at full rate
    # after the warm-up before the cosine starts (fast-reid's DELAY_EPOCHS), and whether the cosine's clock starts
    # after the warm-up (true) or at epoch 0 under the warm-up (false: timm's CosineLRScheduler, TransReID)
    min_lr: float = 0.0
    delay_epochs: int = 0
    warmup_prefix: bool = True
    # the scheduler's epoch counter at training epoch 0: 1 where the reference steps its scheduler at the start of
    # each epoch (BoT's ignite EPOCH_STARTED hook, TransReID's scheduler.step(epoch) with 1-based epochs)
    epoch_offset: int = 0
    weight_decay_bias: float = -1.0  # biases' weight decay; -1 = optim.weight_decay (fast-reid: 0)

    def validate(self) -> None:
        if self.lr <= 0 or self.epochs <= 0:
            raise ConfigError("optim.lr and optim.epochs must be positive")
        if sorted(self.milestones) != list(self.milestones) or any(m <= 0 for m in self.milestones):
            raise ConfigError(f"optim.milestones must be increasing positive epochs, got {list(self.milestones)}")
        if self.warmup_epochs < 0 or not 0 < self.warmup_factor <= 1:
            raise ConfigError("optim.warmup_epochs must be >= 0 and optim.warmup_factor in (0, 1]")
        if self.min_lr < 0 or self.min_lr > self.lr or self.delay_epochs < 0 or self.epoch_offset not in (0, 1):
            raise ConfigError(f"optim.min_lr must be in [0, optim.lr], optim.delay_epochs >= 0 and optim.epoch_offset "
                              f"0 or 1, got {self.min_lr}, {self.delay_epochs} and {self.epoch_offset}")
        if self.momentum < 0 or self.weight_decay < 0 or self.bias_lr_factor <= 0:
            raise ConfigError(f"optim.momentum and optim.weight_decay must be >= 0 and optim.bias_lr_factor positive, "
                              f"got {self.momentum}, {self.weight_decay} and {self.bias_lr_factor}")


def lr_factor(epoch: int, cfg: OptimConfig) -> float:
    """Learning-rate multiplier at ``epoch`` (0-based; the schedule reads epoch + optim.epoch_offset): linear warm-up
    from warmup_factor, then x gamma at each milestone, or a cosine from 1 to min_lr / lr that starts after the
    warm-up and delay_epochs (warmup_prefix) or at epoch 0 (the warm-up replacing its first epochs)."""
    t = epoch + cfg.epoch_offset
    if cfg.schedule == "cosine":
        start = (cfg.warmup_epochs if cfg.warmup_prefix else 0) + cfg.delay_epochs
        p = min(max(t - start, 0) / max(cfg.epochs - start, 1), 1.0)
        floor = cfg.min_lr / cfg.lr
        f = floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * p))
    else:
        f = cfg.gamma ** sum(t >= m for m in cfg.milestones)
    if t < cfg.warmup_epochs:
        ramp = cfg.warmup_factor + (1 - cfg.warmup_factor) * t / cfg.warmup_epochs
        f = ramp if cfg.schedule == "cosine" and not cfg.warmup_prefix else f * ramp
    return f


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig,
                    exclude: Iterable[torch.nn.Parameter] = ()) -> torch.optim.Optimizer:
    """Adam / AMSGrad (or SGD with momentum, Nesterov by default) with weight decay over the trainable parameters
    but ``exclude`` (those another optimiser owns); biases in a second group at lr x bias_lr_factor with decay
    weight_decay_bias when either is set."""
    skip = {id(p) for p in exclude}
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad and id(p) not in skip]
    params: list = [p for _, p in named]
    if cfg.bias_lr_factor != 1.0 or cfg.weight_decay_bias >= 0:
        decay = cfg.weight_decay if cfg.weight_decay_bias < 0 else cfg.weight_decay_bias
        params = [{"params": [p for n, p in named if not n.endswith("bias")]},
                  {"params": [p for n, p in named if n.endswith("bias")], "lr": cfg.lr * cfg.bias_lr_factor,
                   "weight_decay": decay}]
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               nesterov=cfg.nesterov and cfg.momentum > 0)
    # fused: one kernel per parameter group instead of several element-wise passes (docs/perf.md)
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for _, p in named)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, amsgrad=cfg.name == "amsgrad",
                            fused=fused)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """The per-epoch schedule of ``lr_factor`` (step it once after each epoch)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: lr_factor(epoch, cfg))
