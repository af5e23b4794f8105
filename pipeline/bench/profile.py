"""``python -m pamtri.pipeline.bench.profile --out DIR``: torch.profiler of the PyTorch path on this CPU.

Three jobs at the bench's paper sizes and settings (bf16 autocast where the CPU has it, channels-last):
``inference`` (two-stage ``Pipeline.embed_arrays``, HRNet-W32 flip test + DenseNet121 3+36 ch), ``train_pose``
and ``train_reid`` (one Adam step each, as the ``train_*`` rows). Per job it writes DIR/JOB.txt (the
key_averages table sorted by self CPU time) and DIR/JOB.trace.json (a Chrome trace: chrome://tracing or
Perfetto), and prints the top ops with their share of the job's self CPU time. A fourth job, ``openvino`` (when
OpenVINO is installed; not in the default set), runs both networks once on OpenVINO's CPU plugin with its
per-layer counters (PERF_COUNT) and writes DIR/openvino.txt: time per (layer type, kernel). Absolute times move
with whatever else runs on the machine; compare shares, and A/B in one process.
"""
from __future__ import annotations

import argparse
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
from torch.profiler import ProfilerActivity, profile

from pamtri.common.atomic import atomic_write_text
from pamtri.pipeline.runtimes import cached_onnx, openvino_core

from .inference import _checkpoints, fast_pipeline
from .inputs import paper_models
from .training import _pose_batch, _pose_loss, _reid_batch, _reid_loss, train_step

JOBS = ("inference", "train_pose", "train_reid")
OPENVINO = "openvino"


def inference_job(batch: int):
    """Two-stage inference of ``batch`` random 256x256 images as a function (the ``inference`` row's fast path)."""
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (256, 256, 3), dtype=np.uint8) for _ in range(batch)]
    pipe = fast_pipeline(*paper_models(), batch)
    return lambda: pipe.embed_arrays(images)


def job(name: str, batch: int):
    """A function that runs job ``name`` (inference, train_pose, train_reid) once on ``batch`` images."""
    if name == "inference":
        return inference_job(batch)
    if name == "train_pose":
        return train_step(paper_models()[0], _pose_batch, _pose_loss, batch, fast=True)
    return train_step(paper_models()[1], _reid_batch, _reid_loss, batch, fast=True)


def profile_job(name: str, fn, out: Path, steps: int = 1, rows: int = 30) -> list[tuple[str, float, float]]:
    """Profile ``steps`` calls of ``fn`` after one warm-up; write out/NAME.txt and out/NAME.trace.json ->
    [(op, self CPU ms, share of the total self CPU time)] for the top ``rows`` ops."""

    fn()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
        for _ in range(steps):
            fn()
    trace = out / f"{name}.trace.json"
    prof.export_chrome_trace(str(trace.with_suffix(".tmp")))  # the profiler writes the file itself: then rename
    trace.with_suffix(".tmp").replace(trace)
    averages = prof.key_averages()
    atomic_write_text(out / f"{name}.txt", averages.table(sort_by="self_cpu_time_total", row_limit=rows))
    total = sum(e.self_cpu_time_total for e in averages) or 1.0
    top = sorted(averages, key=lambda e: e.self_cpu_time_total, reverse=True)[:rows]
    return [(e.key, e.self_cpu_time_total / 1e3 / steps, e.self_cpu_time_total / total) for e in top]


def openvino_layers(batch: int, models=None, size: int = 256) -> list[tuple[str, float, float]]:
    """One call of each of ``models`` ((pose, ReID); default the bench's paper-size networks, random weights) on
    ``batch`` images of ``size`` pixels on OpenVINO's CPU plugin at its default precision, with per-layer
    counters -> [("stage: layer type [kernel]", ms, share of both calls)], longest first."""


    times: Counter = Counter()
    with tempfile.TemporaryDirectory() as folder:
        weights = dict(zip(("pose", "reid"), _checkpoints(*(models or paper_models()), Path(folder), size)))
        for stage, path in weights.items():
            onnx = str(cached_onnx(stage, path, (size, size)))
            compiled = openvino_core().compile_model(onnx, "CPU", {"PERF_COUNT": "YES"})
            request = compiled.create_infer_request()
            feed = {i.get_any_name(): np.random.default_rng(0).standard_normal(
                [d.get_length() if d.is_static else batch for d in i.get_partial_shape()], dtype=np.float32)
                for i in compiled.inputs}
            request.infer(feed)  # warm-up
            request.infer(feed)
            for layer in request.profiling_info:
                times[f"{stage}: {layer.node_type} [{layer.exec_type}]"] += layer.real_time.total_seconds() * 1e3
    total = sum(times.values()) or 1.0
    return [(key, ms, ms / total) for key, ms in times.most_common()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pamtri.pipeline.bench.profile", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder for the tables and Chrome traces")
    parser.add_argument("--batch", type=int, default=4, help="images per inference call / training step (4)")
    parser.add_argument("--only", nargs="+", choices=(*JOBS, OPENVINO), default=list(JOBS),
                        help=f"these jobs (default: {', '.join(JOBS)})")
    parser.add_argument("--top", type=int, default=12, help="ops printed per job (12)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.only:
        print(f"{name} (batch {args.batch}): op, self CPU ms per call, share")
        if name == OPENVINO:
            rows = openvino_layers(args.batch)
            atomic_write_text(out / "openvino.txt", "".join(f"{k}\t{ms:.2f} ms\t{100 * f:.1f}%\n" for k, ms, f in rows))
        else:
            rows = profile_job(name, job(name, args.batch), out)
        for op, ms, share in rows[:args.top]:
            print(f"  {op:<48} {ms:10.1f} {100 * share:5.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
