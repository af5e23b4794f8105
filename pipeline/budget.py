"""Fitting ``pamtri demo`` into a wall-clock budget on whatever CPU runs it.

The demo's experiment files fix a number of epochs that a 2-core CPU with bfloat16 units trains in about 13
minutes; a CPU without them (most users' machines) needs two to three times as long. Before each training stage
the demo times a few optimiser steps of the stage's own model at the stage's batch, input size and precision
(random tensors, so no data is needed yet), predicts the stage's time from them and, when that does not fit the
time left, scales the epochs and the learning-rate milestones down by the same fraction (never below a floor that
keeps the report meaningful). A machine fast enough keeps the files' schedules unchanged.

The prediction is corrected by what the pose stage actually took: ``measured / predicted`` of the pose stage
(data loading, validation, logging) multiplies the ReID prediction.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from pamtri.common.config import load_config
from pamtri.common.device import autocast_dtype, pick_device, training_memory_format
from pamtri.common.schedule import OptimConfig
from pamtri.common.training import optimiser_step
from pamtri.pose.config import PoseConfig
from pamtri.pose.train import weighted_mse
from pamtri.pose.weights import build_pose_model
from pamtri.reid.config import ReIDConfig
from pamtri.reid.losses import triplet_batch_hard
from pamtri.reid.weights import build_model

from .bench.harness import timed

# Time the demo needs outside training, as a share of the training time (measured on the demo's own runs:
# pose eval, three cache builds, two ReID evaluations and the city stage took 73 s beside 696 s of training).
OUTSIDE_TRAINING = 0.12
# Until the pose stage has run, a training step costs this much more than the timed step alone (data loading
# with one worker on two cores, validation every few epochs; the demo's pose stage measured 1.16).
FIRST_GUESS_OVERHEAD = 1.2
# A ReID step never costs less than this x its timed step (its data loading and evaluations every 5 epochs:
# 1.08 on the demo's runs), whatever the pose stage measured.
MIN_OVERHEAD = 1.1


@dataclass(frozen=True)
class EpochPlan:
    """A stage's schedule after budgeting: ``epochs`` of ``configured``, milestones scaled alike."""
    epochs: int
    milestones: tuple[int, ...]
    configured: int
    step_seconds: float       # one timed optimiser step of the stage's model
    predicted_seconds: float  # the whole stage at ``epochs``, overhead included

    @property
    def scaled(self) -> bool:
        return self.epochs < self.configured

    def overrides(self) -> list[str]:
        """``--set`` values that apply the plan to the stage's config (none when the file's schedule stands)."""
        if not self.scaled:
            return []
        return [f"optim.epochs={self.epochs}", f"optim.milestones=[{', '.join(map(str, self.milestones))}]"]


def scaled_schedule(optim: OptimConfig, fraction: float, minimum: int) -> tuple[int, tuple[int, ...]]:
    """(epochs, milestones) of ``optim`` scaled by ``fraction`` (<= 1), at least ``minimum`` epochs (or the file's
    count if it is lower); each milestone keeps its relative place and stays inside the shortened run."""
    configured = optim.epochs
    epochs = min(configured, max(min(minimum, configured), math.floor(configured * min(fraction, 1.0))))
    if epochs == configured:
        return configured, tuple(optim.milestones)
    milestones = sorted({min(epochs - 1, max(1, round(m * epochs / configured))) for m in optim.milestones
                         if m < configured})
    return epochs, tuple(m for m in milestones if 0 < m < epochs)


def pose_step_seconds(cfg: PoseConfig) -> float:
    """One timed Adam step of ``cfg``'s pose network at its batch, input size and precision."""
    torch.manual_seed(0)
    w, h = cfg.codec.input_size
    b = cfg.data.batch_size
    model = build_pose_model(cfg.model.name)
    inputs = [torch.randn(b, 3, h, w), torch.rand(b, 36, h // 4, w // 4), torch.ones(b, 36)]

    def loss(m, x, target, weight):
        return weighted_mse(m(x).float(), target, weight)
    return timed_step(model, inputs, loss, cfg.device, cfg.precision)


def reid_step_seconds(cfg: ReIDConfig, num_ids: int) -> float:
    """One timed Adam step of ``cfg``'s ReID network (its input channels, size, batch, precision) with an ID and a
    triplet loss over ``num_ids`` identities."""
    torch.manual_seed(0)
    h, w = cfg.data.height, cfg.data.width
    model_cfg = replace(cfg.model, input_size=(h, w), pretrained=None)
    model = build_model(model_cfg, num_ids)
    b = cfg.sampler.batch_size
    identities = torch.arange(b) % max(1, min(num_ids, b // cfg.sampler.k))  # P x K, as the sampler draws
    inputs = [torch.randn(b, model_cfg.in_channels, h, w), torch.rand(b, 108) - 0.5, identities]

    def loss(m, x, kv, pid):
        out = m(x, kv)
        return torch.nn.functional.cross_entropy(out["id"].float(), pid) + triplet_batch_hard(
            out["embedding"].float(), pid)
    return timed_step(model, inputs, loss, cfg.device, cfg.precision)


def timed_step(model: torch.nn.Module, inputs: list[torch.Tensor], loss, device_name: str, precision: str) -> float:
    """Seconds of one optimiser step on the device, precision and memory format the training engine would use
    (pamtri/common/device.py ``training_memory_format``)."""
    device = pick_device(device_name)
    dtype = autocast_dtype(device, precision)
    channels_last = training_memory_format(device, dtype) == torch.channels_last
    step = optimiser_step(model.to(device), [t.to(device) for t in inputs], loss, dtype, channels_last=channels_last)
    if device.type != "cuda":
        return timed(step, repeat=2)
    return timed(lambda: (step(), torch.cuda.synchronize(device)), repeat=2)


def plan(optim: OptimConfig, steps_per_epoch: int, step_s: float, overhead: float, seconds: float,
         minimum: int, runs: int = 1) -> EpochPlan:
    """The largest schedule of ``runs`` trainings with ``optim`` whose predicted time (steps x ``step_s`` x
    ``overhead``) fits ``seconds``."""
    per_epoch = runs * steps_per_epoch * step_s * overhead
    fraction = seconds / (per_epoch * optim.epochs) if per_epoch > 0 else 1.0
    epochs, milestones = scaled_schedule(optim, fraction, minimum)
    return EpochPlan(epochs, milestones, optim.epochs, step_s, per_epoch * epochs)


def training_set_size(data: Path) -> tuple[int, int]:
    """(images, identities) of a generated tree's training split (``image_train/<id>_<camera>_....jpg``)."""
    names = [p.name for p in (data / "image_train").glob("*.jpg")]
    return len(names), len({n.split("_", 1)[0] for n in names})


def steps_per_epoch(images: int, batch: int, max_batches: int) -> int:
    """Optimiser steps in one epoch of ``images`` at ``batch`` (the last partial batch dropped), at most
    ``max_batches`` when that is set."""
    steps = max(1, images // batch)
    return min(steps, max_batches) if max_batches else steps


class Budget:
    """The demo's wall-clock budget: plans the pose stage from timed steps, then the two ReID trainings from the
    time left and the pose stage's measured overhead."""

    def __init__(self, minutes: float, started: float, data: Path, pose_config: Path, reid_config: Path,
                 min_pose_epochs: int, min_reid_epochs: int):
        self.seconds, self.started = 60.0 * minutes, started
        self.pose_config, self.reid_config = pose_config, reid_config
        self.min_pose, self.min_reid = min_pose_epochs, min_reid_epochs
        self.images, self.identities = training_set_size(data)
        self.pose: EpochPlan | None = None
        self.pose_steps = 0
        self.reid: EpochPlan | None = None
        self.overhead = FIRST_GUESS_OVERHEAD

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.started)

    def pose_plan(self, pose_overrides: list[str], reid_overrides: list[str]) -> EpochPlan:
        """The pose stage's schedule: its share of the training time left, in proportion to its configured cost
        beside the two ReID trainings'."""
        pose_cfg = load_config(PoseConfig, self.pose_config, pose_overrides)
        self.pose_steps = steps_per_epoch(pose_cfg.data.epoch_size or self.images, pose_cfg.data.batch_size,
                                          pose_cfg.max_batches)
        if not self.seconds:
            self.pose = unscaled(pose_cfg.optim)
            return self.pose
        reid_cfg = load_config(ReIDConfig, self.reid_config, reid_overrides)
        pose_step = pose_step_seconds(pose_cfg)
        reid_step = reid_step_seconds(reid_cfg, self.identities)
        pose_cost = pose_cfg.optim.epochs * self.pose_steps * pose_step
        reid_cost = 2 * reid_cfg.optim.epochs * self._reid_steps(reid_cfg) * reid_step
        share = pose_cost / (pose_cost + reid_cost)
        training = self.left() / (1 + OUTSIDE_TRAINING)
        self.pose = plan(pose_cfg.optim, self.pose_steps, pose_step, self.overhead, training * share, self.min_pose)
        return self.pose

    def reid_plan(self, overrides: list[str], pose_seconds: float) -> EpochPlan:
        """The ReID schedule both variants train with: the time left once the pose stage and the caches are done,
        at the timed step of the pose-aware model x the overhead the pose stage showed (call after pose_plan)."""
        reid_cfg = load_config(ReIDConfig, self.reid_config, overrides)
        if not self.seconds:
            self.reid = unscaled(reid_cfg.optim)
            return self.reid
        pose_steps_seconds = self.pose.epochs * self.pose_steps * self.pose.step_seconds
        self.overhead = max(MIN_OVERHEAD, pose_seconds / pose_steps_seconds)
        reid_step = reid_step_seconds(reid_cfg, self.identities)
        training = self.left() / (1 + OUTSIDE_TRAINING / 2)  # what remains outside: evaluations and the city
        self.reid = plan(reid_cfg.optim, self._reid_steps(reid_cfg), reid_step, self.overhead, training,
                         self.min_reid, runs=2)
        return self.reid

    def _reid_steps(self, cfg: ReIDConfig) -> int:
        return steps_per_epoch(self.images, cfg.sampler.batch_size, cfg.max_batches)

    def summary(self) -> dict:
        """What the report shows: the budget, each stage's epochs against its file's, and the timed steps."""
        def stage(p: EpochPlan | None) -> dict | None:
            return None if p is None else {"epochs": p.epochs, "configured": p.configured,
                                           "milestones": list(p.milestones), "step_s": round(p.step_seconds, 4),
                                           "predicted_s": round(p.predicted_seconds, 1)}
        return {"minutes": self.seconds / 60, "pose": stage(self.pose), "reid": stage(self.reid),
                "overhead": round(self.overhead, 3)}


def unscaled(optim: OptimConfig) -> EpochPlan:
    """The file's schedule, untimed (no budget)."""
    return EpochPlan(optim.epochs, tuple(optim.milestones), optim.epochs, 0.0, 0.0)
