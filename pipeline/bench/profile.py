"""``python -m pamtri.pipeline.bench.profile --out DIR``: torch.profiler of the PyTorch path on this CPU.

Three jobs at the bench's paper sizes and settings (bf16 autocast where the CPU has it, channels-last):
``inference`` (two-stage ``Pipeline.embed_arrays``, HRNet-W32 flip test + DenseNet121 3+36 ch), ``train_pose``
and ``train_reid`` (one Adam step each, as the ``train_*`` rows). Per job it writes DIR/JOB.txt (the
key_averages table sorted by self CPU time) and DIR/JOB.trace.json (a Chrome trace: chrome://tracing or
Perfetto), and prints the top ops with their share of the job's self CPU time. Absolute times move with
whatever else runs on the machine; compare shares, and A/B in one process.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

JOBS = ("inference", "train_pose", "train_reid")


def inference_job(batch: int):
    """Two-stage inference of ``batch`` random 256x256 images as a function (the ``inference`` row's fast path)."""
    from pamtri.pipeline.infer import Pipeline
    from pamtri.pose.codec import HeatmapCodec
    from pamtri.pose.predict import PosePredictor
    from pamtri.reid.config import DataConfig

    from .inputs import paper_models
    pose, reid = paper_models()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (256, 256, 3), dtype=np.uint8) for _ in range(batch)]
    predictor = PosePredictor(pose, HeatmapCodec(), flip_test=True, device="cpu", precision="auto")
    pipe = Pipeline(predictor, reid, DataConfig(height=256, width=256), batch_size=batch)
    return lambda: pipe.embed_arrays(images)


def job(name: str, batch: int):
    """A function that runs job ``name`` (inference, train_pose, train_reid) once on ``batch`` images."""
    from .inputs import paper_models
    from .training import _pose_batch, _pose_loss, _reid_batch, _reid_loss, train_step
    if name == "inference":
        return inference_job(batch)
    if name == "train_pose":
        return train_step(paper_models()[0], _pose_batch, _pose_loss, batch, fast=True)
    return train_step(paper_models()[1], _reid_batch, _reid_loss, batch, fast=True)


def profile_job(name: str, fn, out: Path, steps: int = 1, rows: int = 30) -> list[tuple[str, float, float]]:
    """Profile ``steps`` calls of ``fn`` after one warm-up; write out/NAME.txt and out/NAME.trace.json ->
    [(op, self CPU ms, share of the total self CPU time)] for the top ``rows`` ops."""
    from torch.profiler import ProfilerActivity, profile

    from pamtri.common.atomic import atomic_write_text
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pamtri.pipeline.bench.profile", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder for the tables and Chrome traces")
    parser.add_argument("--batch", type=int, default=4, help="images per inference call / training step (4)")
    parser.add_argument("--only", nargs="+", choices=JOBS, default=list(JOBS), help="these jobs (default: all)")
    parser.add_argument("--top", type=int, default=12, help="ops printed per job (12)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.only:
        print(f"{name} (batch {args.batch}): op, self CPU ms per call, share")
        for op, ms, share in profile_job(name, job(name, args.batch), out)[:args.top]:
            print(f"  {op:<48} {ms:10.1f} {100 * share:5.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
