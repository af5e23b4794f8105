"""The benchmark harness: rows, timing, memory and FLOP counts, the machine, the Markdown table."""
from __future__ import annotations

import multiprocessing
import os
import platform
import threading
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from pamtri.common.device import cpu_supports_bf16
from pamtri.pipeline.runtimes import cpu_name


@dataclass
class Row:
    """One benchmark line: our figure, the baseline's, and ours-vs-baseline as 'times better'."""
    name: str
    ours: float
    baseline: float
    unit: str
    ratio: float
    roofline_share: float | None = None
    note: str = ""
    attainable_share: float | None = None  # of the per-layer bound (FLOPs at the matmul peak, bytes at bandwidth)


def ratio_for(unit: str, ours: float, baseline: float) -> float:
    """'Times better': time and bytes are lower-is-better, rates higher-is-better."""
    lower_better = unit in ("s", "ms", "bytes", "MiB", "bytes/img", "GiB")
    if lower_better:
        return baseline / ours if ours > 0 else float("inf")
    return ours / baseline if baseline > 0 else float("inf")


def make_row(name: str, ours: float, baseline: float, unit: str, roofline_share: float | None = None,
             note: str = "", attainable_share: float | None = None) -> Row:
    """Build a Row with its ratio."""
    return Row(name, float(ours), float(baseline), unit, float(ratio_for(unit, ours, baseline)),
               None if roofline_share is None else float(roofline_share), note,
               None if attainable_share is None else float(attainable_share))


def timed(fn: Callable[[], object], repeat: int = 3, warmup: int = 1) -> float:
    """Best wall time in seconds of ``fn`` over ``repeat`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def peak_traced(fn: Callable[[], object]) -> tuple[object, int]:
    """(result, peak bytes of Python/NumPy allocations during fn) via tracemalloc."""
    tracemalloc.start()
    try:
        out = fn()
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _status_kib(field: str) -> int:
    """A ``kB`` field of /proc/self/status (VmRSS: resident now, VmHWM: its high-water mark)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_high_water_mark() -> bool:
    """Reset VmHWM to the current resident size (Linux's clear_refs "5"); False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class _RssSampler(threading.Thread):
    """Samples VmRSS every ``interval`` seconds until stopped; ``peak_kib`` is the largest sample."""

    def __init__(self, interval: float):
        super().__init__(daemon=True)
        self.interval, self.stop, self.peak_kib = interval, threading.Event(), _status_kib("VmRSS")

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            self.peak_kib = max(self.peak_kib, _status_kib("VmRSS"))


def peak_rss(fn: Callable[[], object], sample: bool = False, interval: float = 0.001) -> tuple[object, float]:
    """(fn(), the work's own peak memory in MiB: the largest resident size of this process while fn ran minus its
    resident size when fn started). The kernel's high-water mark is reset first (/proc/self/clear_refs), so an
    earlier, larger peak (generating the inputs) cannot hide the work's, as a difference of ``ru_maxrss`` does;
    where the reset is refused, or with ``sample``, a thread samples the resident size every ``interval`` s
    instead (it can miss a peak shorter than that). Every memory row of the bench is measured with this."""
    base = _status_kib("VmRSS")
    sampler = _RssSampler(interval) if sample or not _reset_high_water_mark() else None
    if sampler:
        sampler.start()
    try:
        out = fn()
    finally:
        if sampler:
            sampler.stop.set()
            sampler.join()
    peak = max(sampler.peak_kib, _status_kib("VmRSS")) if sampler else _status_kib("VmHWM")
    return out, max(0, peak - base) / 1024.0


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call, counted by torch.utils.flop_counter."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@dataclass
class LayerCost:
    """One leaf module's share of a forward pass: FLOPs and bytes moved (its parameters, inputs and outputs)."""
    name: str
    flops: int
    bytes: int

    def seconds(self, peak: float, bandwidth: float) -> float:
        """Its roofline bound: the longer of computing at ``peak`` FLOP/s and moving its bytes at ``bandwidth``."""
        return max(self.flops / peak, self.bytes / bandwidth)


def _tensors(x) -> list[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, dict):
        x = list(x.values())
    return [t for item in x for t in _tensors(item)] if isinstance(x, (list, tuple)) else []


def layer_costs(model: torch.nn.Module, run: Callable[[], object], element_bytes: int | None = None
                ) -> list[LayerCost]:
    """Walk one call of ``run`` (a forward of ``model``) leaf module by leaf module -> each leaf's FLOPs
    (torch.utils.flop_counter, counted between its pre- and post-forward hooks) and bytes moved: its own
    parameters, its input and output tensors, at ``element_bytes`` each (the precision the runtime uses: 4 fp32,
    2 bf16, 1 int8) or, with None, at the size of the tensors it actually sees (autocast's bf16 activations; its
    parameters at that size too, as the convolutions read them cast). Work outside leaf modules (DenseNet's
    concatenations, HRNet's fusion sums: functional calls) is not counted, so the bound it gives is low."""
    costs: list[LayerCost] = []
    hooks, start = [], {}

    def size(t: torch.Tensor, like: int | None = None) -> int:
        return t.numel() * (element_bytes or like or t.element_size())

    def before(module, args):
        start[module] = counter.get_total_flops()

    def after(name):
        def hook(module, args, out):
            acts = _tensors(args) + _tensors(out)
            width = max((t.element_size() for t in acts if t.is_floating_point()), default=None)
            moved = sum(size(t) for t in acts) + sum(size(p, width) for p in module.parameters(recurse=False))
            moved += sum(size(b) for b in module.buffers(recurse=False) if b.is_floating_point())
            costs.append(LayerCost(name, counter.get_total_flops() - start.pop(module), moved))
        return hook
    for name, module in model.named_modules():
        if not any(True for _ in module.children()):
            hooks += [module.register_forward_pre_hook(before), module.register_forward_hook(after(name))]
    try:
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            run()
    finally:
        for h in hooks:
            h.remove()
    return costs


def attainable_seconds(costs: list[LayerCost], peak: float, bandwidth: float) -> float:
    """The attainable bound of a pass: sum over its layers of max(FLOPs / peak, bytes / bandwidth)."""
    return sum(c.seconds(peak, bandwidth) for c in costs)


def peak_flops(dtype_name: str = "fp32", n: int = 2048, seconds: float = 1.0) -> float:
    """Measured matrix-product peak FLOP/s (int8: operations/s) at a precision ('fp32', 'bf16' or 'int8': int8 x
    int8 -> int32 through ``torch._int_mm``, oneDNN's VNNI kernels where the CPU has them) on this machine's CPU:
    the fastest of the n x n products that fit in ``seconds``, after as long a warm-up (AMX clocks ramp up: the
    best of three products read 772-1,580 GFLOP/s bf16 on calls seconds apart, against 2,100 after a second of
    warm-up)."""
    if dtype_name == "int8":
        a = torch.randint(-128, 128, (n, n), dtype=torch.int8)
        b = torch.randint(-128, 128, (n, n), dtype=torch.int8)
        product = partial(torch._int_mm, a, b)
    else:
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
        product = partial(torch.matmul, torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype))
    best, start = float("inf"), time.perf_counter()
    while time.perf_counter() - start < 2 * seconds or best == float("inf"):
        t0 = time.perf_counter()
        product()
        if t0 - start >= seconds:  # past the warm-up
            best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best


def memory_bandwidth(mib: int = 512, seconds: float = 1.0) -> float:
    """Measured memory bandwidth in bytes/s: the fastest copy of a ``mib`` MiB tensor (read + write, far beyond the
    caches) among those that fit in ``seconds``, after one to touch the pages."""
    src = torch.ones(mib << 18)  # float32: mib MiB
    dst = torch.empty_like(src)
    dst.copy_(src)
    best, start = float("inf"), time.perf_counter()
    while time.perf_counter() - start < seconds or best == float("inf"):
        t0 = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * src.numel() * src.element_size() / best


def _child_main(conn, fn: Callable[..., dict], args: tuple) -> None:
    conn.send(fn(*args))
    conn.close()


def in_spawn_child(what: str, fn: Callable[..., dict], *args) -> dict:
    """``fn(*args)`` (a module-level function returning a dict) in a fresh spawn child, so its peak memory is its
    own; RuntimeError naming ``what`` when the child dies before answering."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child_main, args=(child, fn, args))
    proc.start()
    child.close()
    try:
        out = parent.recv()
    except EOFError:
        proc.join()
        raise RuntimeError(f"bench child for {what} died (exit code {proc.exitcode}; out of memory?)") from None
    proc.join()
    return out


def du_bytes(paths) -> int:
    """Bytes on disk as ``du`` counts them (allocated blocks) for files and folders."""
    total = 0
    for p in paths:
        p = Path(p)
        files = [p] if p.is_file() else [f for f in p.rglob("*") if f.is_file()]
        total += sum(f.stat().st_blocks * 512 for f in files)
    return total


def machine_info() -> dict:
    """Where the numbers were measured."""

    return {"cpu": cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "bf16": cpu_supports_bf16(), "python": platform.python_version(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def format_table(result: dict) -> str:
    """The rows as a Markdown table."""
    lines = ["| row | ours | baseline | unit | ratio (x better) | roofline share | attainable share | note |",
             "| --- | ---: | ---: | --- | ---: | ---: | ---: | --- |"]

    def pct(x: float | None) -> str:
        return "" if x is None else f"{100 * x:.0f}%"
    for r in result["rows"]:
        lines.append(f"| {r['name']} | {r['ours']:.4g} | {r['baseline']:.4g} | {r['unit']} | {r['ratio']:.2f} | "
                     f"{pct(r['roofline_share'])} | {pct(r.get('attainable_share'))} | {r['note']} |")
    return "\n".join(lines)
