"""Outputs committed together: everything is written into a hidden staging folder inside ``out`` and moved into
place at the end (the marker file last), so an interrupted or failed run leaves nothing half-written."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pamtri.common.atomic import RunLock
from pamtri.common.errors import ConfigError


@contextlib.contextmanager
def staged_outputs(out: str | os.PathLike, what: str, outputs: tuple[str, ...], marker: str,
                   overwrite: bool = False) -> Iterator[Path]:
    """Yield a staging folder; on success move its entries into ``out`` (``marker`` last), replacing the earlier
    run's ``outputs`` only with ``overwrite``. On an exception nothing in ``out`` changes."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{what}: --out {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    with RunLock(out):
        existing = [n for n in outputs if (out / n).exists()]
        if existing and not overwrite:
            raise ConfigError(f"{what}: {out} already holds {', '.join(existing[:3])}"
                              f"{', ...' if len(existing) > 3 else ''}; pass --overwrite to replace them")
        for stale in out.glob(".staging-*"):
            shutil.rmtree(stale, ignore_errors=True)
        stage = Path(tempfile.mkdtemp(prefix=".staging-", dir=out))
        try:
            yield stage
            for name in existing:
                target = out / name
                shutil.rmtree(target) if target.is_dir() and not target.is_symlink() else target.unlink()
            for name in sorted(os.listdir(stage), key=lambda n: n == marker):
                os.replace(stage / name, out / name)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
