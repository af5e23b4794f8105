"""The device a process computes on and how: device choice, autocast precision, seeding, logging setup.

Not to be confused with the inference runtimes (torch, onnxruntime, OpenVINO), which live in
``pamtri.pipeline.runtimes``."""
from __future__ import annotations

import contextlib
import logging
import os
import random

import numpy as np
import torch


def pick_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda when available, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def cpu_flags() -> set[str]:
    """This CPU's feature flags as /proc/cpuinfo lists them (avx2, avx512_vnni, amx_bf16, ...); empty elsewhere."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_supports_bf16() -> bool:
    """True when this CPU has native bfloat16 matrix support (AVX512-BF16 or AMX)."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype for ``precision`` in {'auto', 'fp32', 'bf16', 'fp16'} on ``device``; None = off."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_supports_bf16() else None


def autocast(device: torch.device, dtype: torch.dtype | None):
    """A torch.autocast context for ``dtype``, or a no-op context when dtype is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch; optionally request deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def setup_logging(verbose: bool = False) -> None:
    """Plain one-line logging to stderr."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def training_memory_format(device: torch.device, dtype: torch.dtype | None) -> torch.memory_format:
    """The layout training runs convolutions in: channels-last (NHWC) on a CPU at fp32 (oneDNN's NHWC kernels;
    the demo's epochs 1.3-1.45x faster) and on a GPU under autocast (tensor cores); contiguous otherwise. On a
    CPU under bfloat16 autocast the demo's real epochs gained nothing from it (the pose model) or lost (the
    39-channel ReID model, 18 -> 24 s), though an isolated step was 1.2x faster (docs/perf.md)."""
    if device.type == "cpu":
        return torch.channels_last if dtype is None else torch.contiguous_format
    return torch.channels_last if dtype is not None else torch.contiguous_format
