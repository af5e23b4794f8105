"""torch.distributed in one place: single-process by default, DDP when launched by ``torchrun``."""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _timeout() -> timedelta:
    # Rank 0 evaluates alone while the other ranks wait at a barrier; NCCL's default 10-minute timeout
    # would abort a long evaluation (a large gallery, re-ranking), so the default here is generous.
    return timedelta(minutes=float(os.environ.get("PAMTRI_DIST_TIMEOUT_MIN", "60")))


def init_distributed(backend: str | None = None) -> DistInfo:
    """Join the process group when WORLD_SIZE > 1 (torchrun sets it); gloo on CPU, nccl on GPU.

    Collectives time out after $PAMTRI_DIST_TIMEOUT_MIN minutes (default 60).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend, timeout=_timeout())
    return DistInfo(rank=rank, world_size=world, local_rank=local)


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op in a single process)."""
    if info.enabled:
        dist.barrier()


def all_gather_objects(obj, info: DistInfo) -> list:
    """Every rank's ``obj`` in rank order (``[obj]`` in a single process)."""
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def mean_over_ranks(values: dict[str, float], info: DistInfo) -> dict[str, float]:
    """Each key's mean over the ranks (every rank must call it with the same keys)."""
    if not info.enabled:
        return dict(values)
    parts = all_gather_objects({k: float(v) for k, v in values.items()}, info)
    return {k: sum(p[k] for p in parts) / len(parts) for k in values}


def broadcast_buffers(module: torch.nn.Module, info: DistInfo, src: int = 0) -> None:
    """Overwrite every rank's buffers (BatchNorm running statistics) with rank ``src``'s, in place.

    DDP broadcasts buffers only at the start of a training forward, so after a step each rank's statistics
    differ by its own batch; evaluating shards of a data set on several ranks needs them equal first.
    """
    if info.enabled:
        for buf in module.buffers():
            dist.broadcast(buf.data, src=src)


def shutdown(info: DistInfo) -> None:
    """Leave the process group (no-op in a single process)."""
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
