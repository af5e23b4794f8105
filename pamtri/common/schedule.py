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

    def validate(self) -> None:
        if self.lr <= 0 or self.epochs <= 0:
            raise ConfigError("optim.lr and optim.epochs must be positive")
        if sorted(self.milestones) != list(self.milestones) or any(m <= 0 for m in self.milestones):
            raise ConfigError(f"optim.milestones must be increasing positive epochs, got {list(self.milestones)}")
        if self.warmup_epochs < 0 or not 0 < self.warmup_factor <= 1:
            raise ConfigError("optim.warmup_epochs must be >= 0 and optim.warmup_factor in (0, 1]")
        if self.momentum < 0 or self.weight_decay < 0 or self.bias_lr_factor <= 0:
            raise ConfigError(f"optim.momentum and optim.weight_decay must be >= 0 and optim.bias_lr_factor positive, "
                              f"got {self.momentum}, {self.weight_decay} and {self.bias_lr_factor}")


def lr_factor(epoch: int, cfg: OptimConfig) -> float:
    """Learning-rate multiplier at ``epoch`` (0-based): linear warm-up, then x gamma at each milestone, or cosine
    annealing from 1 at the warm-up's end towards 0 at ``epochs``."""
    if cfg.schedule == "cosine":
        t = max(epoch - cfg.warmup_epochs, 0) / max(cfg.epochs - cfg.warmup_epochs, 1)
        f = 0.5 * (1.0 + math.cos(math.pi * t))
    else:
        f = cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    if epoch < cfg.warmup_epochs:
        f *= cfg.warmup_factor + (1 - cfg.warmup_factor) * epoch / cfg.warmup_epochs
    return f


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig,
                    exclude: Iterable[torch.nn.Parameter] = ()) -> torch.optim.Optimizer:
    """Adam / AMSGrad (or SGD with momentum, Nesterov by default) with weight decay over the trainable parameters
    but ``exclude`` (those another optimiser owns); biases in a second group at lr x bias_lr_factor when it is not 1."""
    skip = {id(p) for p in exclude}
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad and id(p) not in skip]
    params: list = [p for _, p in named]
    if cfg.bias_lr_factor != 1.0:
        params = [{"params": [p for n, p in named if not n.endswith("bias")]},
                  {"params": [p for n, p in named if n.endswith("bias")], "lr": cfg.lr * cfg.bias_lr_factor}]
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
