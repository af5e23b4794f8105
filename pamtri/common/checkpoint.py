"""Checkpoints: written atomically, read with ``weights_only=True``, RNG state included; the helpers both
stages' weights modules (``pose/weights.py``, ``reid/weights.py``) share: a file's hash, the state dict inside
a checkpoint, BatchNorm counters that old files lack, loading a state dict with a listed mismatch."""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import random
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .atomic import atomic_write_bytes
from .errors import CheckpointError


def save_checkpoint(state: dict, path: str | os.PathLike) -> None:
    """Serialise ``state`` with torch.save into memory, then write it atomically to ``path``."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Load a checkpoint safely (``weights_only=True``); any failure is a CheckpointError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: checkpoint file is empty")
    with open(path, "rb") as fh:
        head = fh.read(4)
    # torch.save writes a zip archive (PK) or, in its legacy format, a pickle (protocol 2+: 0x80): anything else
    # (a text file, random bytes) is no checkpoint, and the unpickler's errors about it would mislead
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (torch.save writes a zip archive; this file starts "
                              f"with {head!r}); give the .pt file written by pamtri or torch.save")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"(?:unsupported|Unsupported global:) GLOBAL (\S+)", str(exc))
        detail = f"it references {found.group(1)}" if found else "it is not a weights-only file"
        raise CheckpointError(
            f"{path}: refused to load: the file holds Python objects other than tensors and plain data "
            f"(loading it could run code; {detail}). Re-save it as a plain state_dict") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint (truncated or corrupt file?): "
                              f"{str(exc).splitlines()[0]}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict (state_dict or checkpoint), got {type(obj).__name__}")
    return obj


def rng_state() -> dict:
    """Python, NumPy and torch RNG states as tensors/lists (loadable with weights_only=True)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    py = random.getstate()
    state = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def match_state_dict(model: torch.nn.Module, state: dict, source: str, strict: bool = True) -> None:
    """Load ``state`` into ``model``; mismatched keys or shapes raise a CheckpointError listing them."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)]
    if wrong or (strict and (missing or unexpected)):
        def head(items):
            return ", ".join(items[:8]) + (f" ... (+{len(items) - 8} more)" if len(items) > 8 else "")
        parts = []
        if wrong:
            parts.append(f"shape mismatch: {head(wrong)}")
        if strict and missing:
            parts.append(f"missing in checkpoint: {head(missing)}")
        if strict and unexpected:
            parts.append(f"not in model: {head(unexpected)}")
        raise CheckpointError(f"{source}: checkpoint does not fit this model ({type(model).__name__}); "
                              + "; ".join(parts))
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)


def file_sha256(path: str | os.PathLike, block: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes (weights are named by it in caches, indexes and outputs)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()


def state_dict_of(obj: dict, source: str) -> dict[str, torch.Tensor]:
    """The tensor dict inside a checkpoint (plain, or under best_state_dict / state_dict / model), each key's
    'module.' (DataParallel) prefix removed; CheckpointError naming ``source`` when it holds no tensors."""
    state = obj
    for key in ("best_state_dict", "state_dict", "model"):
        if isinstance(state.get(key), dict):
            state = state[key]
            break
    tensors = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()
               if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{source}: holds no tensors (not a state dict)")
    return tensors


def with_batchnorm_counters(state: dict, model: torch.nn.Module) -> dict:
    """``state`` plus the model's own ``num_batches_tracked`` counters where the file has none (files saved
    by PyTorch < 0.4.1, such as the official PAMTRI and ImageNet DenseNet weights, lack them)."""
    own = model.state_dict()
    missing = {k: own[k] for k in own if k.endswith("num_batches_tracked") and k not in state}
    return {**state, **missing}
