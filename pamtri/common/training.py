"""Pieces every training loop shares: the metrics CSV, the training-state checkpoint, the finite-loss guard, and
one optimiser step on a fixed batch as a function (what the bench and the demo's budget time)."""
from __future__ import annotations

import csv
import io
import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_write_text
from .checkpoint import load_checkpoint, match_state_dict, rng_state, save_checkpoint, set_rng_state
from .device import autocast
from .errors import PamtriError

log = logging.getLogger(__name__)


class NonFiniteLossError(PamtriError, FloatingPointError):
    """A loss term became NaN or infinite; training stops and the last good checkpoint is kept."""


def check_finite(losses: dict[str, torch.Tensor | float], step: int, epoch: int | None = None) -> None:
    """Raise NonFiniteLossError naming the first non-finite loss term and the step."""
    for name, value in losses.items():
        v = float(value.detach()) if torch.is_tensor(value) else float(value)
        if not math.isfinite(v):
            where = f"epoch {epoch}, step {step}" if epoch is not None else f"step {step}"
            raise NonFiniteLossError(
                f"loss term '{name}' is {v} at {where}; training stopped, the last good checkpoint is kept "
                f"(lower the learning rate, check the labels, or disable mixed precision)")


class MetricsLog:
    """A CSV with one row per epoch; rewritten atomically on each append; columns grow as needed.

    When the optional ``tensorboard`` package is installed, each row's numbers also go to TensorBoard
    event files in ``<csv folder>/tb/`` (global step = the row's epoch).
    """

    def __init__(self, path: str | os.PathLike, rows: list[dict] | None = None, tensorboard: bool = True,
                 purge_step: int | None = None):
        self.path = Path(path)
        self.rows: list[dict] = list(rows or [])
        self.tensorboard = tensorboard
        self.purge_step = purge_step  # events at steps >= this from an earlier (crashed) run are hidden
        self._writer = None

    @classmethod
    def open(cls, path: str | os.PathLike, keep_epochs_below: int | None = None,
             tensorboard: bool = True) -> MetricsLog:
        """Load an existing log (for resume), keeping rows with epoch < keep_epochs_below."""
        path = Path(path)
        rows: list[dict] = []
        if path.is_file():
            with open(path, newline="", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
            if keep_epochs_below is not None:
                rows = [r for r in rows if int(r.get("epoch", 0)) < keep_epochs_below]
        return cls(path, rows, tensorboard, purge_step=keep_epochs_below)

    def append(self, row: dict[str, Any]) -> None:
        self.rows.append({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        columns: list[str] = []
        for r in self.rows:
            columns += [k for k in r if k not in columns]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.path, buf.getvalue())
        self._add_scalars(row)

    def _add_scalars(self, row: dict[str, Any]) -> None:
        """Numbers of ``row`` (not 'epoch') as TensorBoard scalars at step = row['epoch'] (else the row count)."""
        if not self.tensorboard:
            return
        if self._writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # the optional extra [tensorboard] is not installed: CSV only
                self.tensorboard = False
                return
            # purge_step: on resume, TensorBoard hides the crashed run's events from that epoch on, so
            # the redone epochs are not plotted twice.
            self._writer = SummaryWriter(str(self.path.parent / "tb"), purge_step=self.purge_step)
            log.info("TensorBoard events in %s", self.path.parent / "tb")
        step = int(row.get("epoch", len(self.rows)))
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self._writer.add_scalar(key, value, step)
        self._writer.flush()

    def close(self) -> None:
        """Close the TensorBoard writer (the CSV needs no closing)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside DistributedDataParallel / torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def save_training_state(path: str | os.PathLike, *, model: torch.nn.Module, optimizer, scheduler,
                        epoch: int, config: dict, best: float | None = None, extra: dict | None = None,
                        scaler: torch.amp.GradScaler | None = None, side_optimizer=None) -> None:
    """Atomic self-describing checkpoint: weights, optimiser (and the stage's side optimiser), scheduler, fp16
    loss scale, next epoch, RNG, resolved config."""
    state = {
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "side_optimizer": side_optimizer.state_dict() if side_optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "epoch": int(epoch),
        "best": best,
        "rng": rng_state(),
        "config": config,
        "format": "pamtri-checkpoint-1",
    }
    if extra:
        state.update(extra)
    save_checkpoint(state, path)


def restore_training_state(path: str | os.PathLike, *, model: torch.nn.Module, optimizer, scheduler,
                           scaler: torch.amp.GradScaler | None = None, side_optimizer=None) -> dict:
    """Load what save_training_state wrote into the objects; returns the checkpoint dict."""
    state = load_checkpoint(path)
    if state.get("format") != "pamtri-checkpoint-1":
        raise PamtriError(f"{path}: not a pamtri training checkpoint (use it as --weights instead of --resume)")
    match_state_dict(unwrap(model), state["model"], str(path))
    optimizer.load_state_dict(state["optimizer"])
    if side_optimizer is not None:
        if state.get("side_optimizer") is None:
            raise PamtriError(f"{path}: holds no state of the side optimiser this run trains with (e.g. "
                              "loss.center_lr was 0 when it was written); resume with the run's own config")
        side_optimizer.load_state_dict(state["side_optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and scaler.is_enabled() and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    return state


def optimiser_step(model: torch.nn.Module, inputs: Sequence[torch.Tensor], loss_fn: Callable[..., torch.Tensor],
                   dtype: torch.dtype | None, channels_last: bool = False, fused: bool = True) -> Callable[[], None]:
    """One Adam step of ``model`` on the fixed batch ``inputs`` (``loss_fn(model, *inputs)``) under autocast
    ``dtype`` (None: fp32), as a function; ``channels_last`` converts the model and the 4-d inputs first."""
    device = next(model.parameters()).device
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        inputs = [t.contiguous(memory_format=torch.channels_last) if t.ndim == 4 else t for t in inputs]
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=fused)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast(device, dtype):
            loss = loss_fn(model, *inputs)
        loss.backward()
        opt.step()
    return step
