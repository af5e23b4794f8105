"""``pamtri bench``: every speed/memory figure measured side by side with its baseline in one run.

Each group function returns :class:`harness.Row` objects; ``ratio`` always reads "times better than the
baseline". The baselines (``baselines``) run in the same process on the same inputs (``inputs``) as what they
are compared with, so machine noise cancels. One module per group; ``ROWS`` lists them in run order.
"""
from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict

from pamtri.common.atomic import atomic_write_text
from pamtri.common.errors import ConfigError

from .cache import bench_cache
from .decode import bench_decode
from .harness import Row, format_table, machine_info
from .index import bench_index
from .inference import bench_inference
from .mtmc import bench_mtmc
from .ranking import bench_evaluate, bench_rerank
from .scale import bench_scale
from .serve import bench_serve
from .synth import bench_synth
from .training import bench_train

log = logging.getLogger(__name__)

ROWS: dict[str, Callable[[bool], list[Row]]] = {
    "inference": bench_inference,
    "train": bench_train,
    "evaluate": bench_evaluate,
    "rerank": bench_rerank,
    "decode": bench_decode,
    "synth": bench_synth,
    "cache": bench_cache,
    "index": bench_index,
    "scale": bench_scale,
    "serve": bench_serve,
    "mtmc": bench_mtmc,
}

__all__ = ["ROWS", "format_table", "run_bench"]


def run_bench(quick: bool = False, only: list[str] | None = None, out: str | os.PathLike | None = None) -> dict:
    """Run the benchmark groups (all, or ``only``: keys of ROWS) and return/write {"machine": ..., "rows": [...]}."""
    unknown = [g for g in only or () if g not in ROWS]
    if unknown:
        raise ConfigError(f"--only {unknown[0]!r}: unknown group; groups: {', '.join(ROWS)}")
    rows: list[Row] = []
    for group, fn in ROWS.items():
        if only and group not in only:
            continue
        log.info("bench: %s", group)
        t0 = time.perf_counter()
        rows.extend(fn(quick))
        log.info("bench: %s done in %.1f s", group, time.perf_counter() - t0)
    result = {"machine": machine_info(), "quick": quick, "rows": [asdict(r) for r in rows]}
    if out:
        atomic_write_text(out, json.dumps(result, indent=1))
    return result
