"""The ``inference`` row: two-stage inference at the paper's sizes, ours vs the naive path, with its roofline."""
from __future__ import annotations

import copy
import importlib.util
import logging
import shutil
import tempfile
import time
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import torch

from pamtri.common.atomic import atomic_write_bytes
from pamtri.common.checkpoint import save_checkpoint
from pamtri.common.config import to_dict
from pamtri.common.device import autocast
from pamtri.pipeline.infer import Pipeline, run_pose
from pamtri.pipeline.quantize import Thresholds, export_int8, int8_or_fp32_pipeline, int8_retrieval
from pamtri.pipeline.runtimes import OnnxNetwork, cpu_name, openvino_default_precision, record_fastest
from pamtri.pose.codec import HeatmapCodec
from pamtri.pose.config import PoseConfig
from pamtri.pose.predict import PosePredictor
from pamtri.reid.config import DataConfig, ReIDConfig

from .baselines import naive_two_stage
from .harness import (
    LayerCost,
    Row,
    attainable_seconds,
    count_flops,
    layer_costs,
    make_row,
    memory_bandwidth,
    peak_flops,
    timed,
)
from .inputs import paper_models

log = logging.getLogger(__name__)


PRECISION_BYTES = {"fp32": 4, "bf16": 2, "int8": 1}  # element size of weights and activations at each precision


def _roofline(fast, pose, reid, images, ours_rate: float, naive_rate: float, batch: int
              ) -> tuple[float, float, str, dict[str, float]]:
    """(share of the measured matmul peak our rate reaches, share of the per-layer attainable bound it reaches,
    the row's note, the bound at each runtime precision: :func:`precision_bounds`) from the FLOPs of one image and
    its layers' FLOPs and bytes (``harness.layer_costs``)."""
    x, kv = fast.reid_inputs(images[:1], run_pose(fast.predictor, images[:1], fast.grid))
    crop = torch.from_numpy(fast.predictor.crop(images[0])[0][None])
    flops = 2 * count_flops(lambda: pose(crop)) + count_flops(lambda: reid(x, kv))
    prec = "bf16" if fast.dtype == torch.bfloat16 else "fp32"
    peak = peak_flops(prec)
    peak32 = peak if prec == "fp32" else peak_flops("fp32")
    bandwidth = memory_bandwidth()
    crops = torch.cat([crop, crop.flip(-1)]).contiguous(memory_format=torch.channels_last)  # the flip test's two

    def costs(width: int | None):
        with autocast(fast.device, fast.dtype):
            return (layer_costs(fast.predictor.model, lambda: fast.predictor.model(crops), width)
                    + layer_costs(fast.model, lambda: fast.model(x, kv), width))
    bound = attainable_seconds(costs(None), peak, bandwidth)  # seconds per image
    bounds = precision_bounds(costs(1), bandwidth, {prec: peak, "fp32": peak32})
    naive_share = flops * naive_rate / peak32
    note = (f"HRNet-W32 256x256 flip test + DenseNet121 (3+36 ch) 256x256, batch {batch}, {prec}; "
            f"{flops / 1e9:.1f} GFLOP/img; peak {prec} matmul {peak / 1e9:.0f} GFLOP/s, fp32 "
            f"{peak32 / 1e9:.0f}; memory bandwidth {bandwidth / 1e9:.1f} GB/s; attainable bound (per layer, "
            f"networks only) {1 / bound:.1f} img/s; the naive path already runs at {100 * naive_share:.0f}% of the "
            f"fp32 peak, so even 100% of the {prec} peak would be {peak / (flops * naive_rate):.1f}x it")
    return flops * ours_rate / peak, bound * ours_rate, note, bounds


def precision_bounds(elements: list[LayerCost], bandwidth: float, peaks: dict[str, float]) -> dict[str, float]:
    """Seconds per image of both networks' per-layer attainable bound at each precision of ``PRECISION_BYTES``:
    each layer's FLOPs against that precision's matrix peak (``peaks``, else measured: ``harness.peak_flops``), its
    ``elements`` (``layer_costs`` at one byte each) at that precision's size against ``bandwidth``. The bound the
    runtime rows' ``attainable_share`` is read against."""
    bounds = {}
    for prec, width in PRECISION_BYTES.items():
        peak = peaks.get(prec) or peak_flops(prec)
        bounds[prec] = attainable_seconds([LayerCost(c.name, c.flops, c.bytes * width) for c in elements], peak,
                                          bandwidth)
    return bounds


def runtime_precision(runtime: str) -> str:
    """The precision a float graph runs at on ``runtime`` without a hint: onnxruntime fp32, OpenVINO its CPU
    default (``runtimes.openvino_default_precision``)."""
    return openvino_default_precision() if runtime == "openvino" else "fp32"


def share_of(bounds: dict[str, float] | None, precision: str, rate: float) -> float | None:
    """The attainable share of ``rate`` images/s against the bound at ``precision`` (None without bounds)."""
    return None if not bounds else rate * bounds[precision]


def bound_note(bounds: dict[str, float] | None, precision: str) -> str:
    """What a runtime row's ``attainable_share`` is read against (empty without bounds)."""
    if not bounds:
        return ""
    return (f"; attainable share against the networks' per-layer {precision} bound "
            f"({1 / bounds[precision]:.3g} img/s)")


def fast_pipeline(pose, reid, batch: int, compile: bool = False):
    """The ``inference`` row's fast path over ``pose`` / ``reid`` (256 x 256, flip test, bf16 autocast where the
    CPU has it, channels-last; ``compile``: inductor with freezing) at ``batch`` images per call."""
    predictor = PosePredictor(pose, HeatmapCodec(), flip_test=True, device="cpu", precision="auto")
    return Pipeline(predictor, reid, DataConfig(height=256, width=256), batch_size=batch, compile=compile)


def bench_inference(quick: bool) -> list[Row]:
    """Two-stage inference at paper sizes: our pipeline vs the naive path (fp32, eager, NCHW, batch 1,
    per-keypoint Python decoding, heatmaps through 36 JPEG files as the reference does), then the same job,
    images and batch on the ONNX runtimes and INT8 (:func:`runtime_rows`); a full run adds the INT8 guard on
    the latest demo run's trained models (:func:`int8_trained_row`)."""

    n_ours, n_naive = (8, 2) if quick else (32, 6)
    pose, reid = paper_models()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (256, 256, 3), dtype=np.uint8) for _ in range(n_ours)]
    fast = fast_pipeline(pose, reid, n_ours)
    t_ours = timed(lambda: fast.embed_arrays(images), repeat=2)

    pose32, reid32 = paper_models()
    slow = PosePredictor(pose32, HeatmapCodec(), flip_test=True, device="cpu", precision="fp32")
    work = Path(tempfile.mkdtemp(prefix="pamtri-bench-naive-"))
    try:
        t_naive = timed(lambda: naive_two_stage(images[:n_naive], slow, reid32, work), repeat=1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ours_rate, naive_rate = n_ours / t_ours, n_naive / t_naive
    share, attainable, note, bounds = _roofline(fast, pose, reid, images, ours_rate, naive_rate, n_ours)
    row = make_row("inference", ours_rate, naive_rate, "img/s", roofline_share=share, note=note,
                   attainable_share=attainable)
    rows = [row] if quick else [row, compile_row(pose, reid, images, ours_rate, share / ours_rate,
                                                 attainable / ours_rate)]
    trained = [] if quick else int8_trained_row()  # the INT8 guard on the demo's trained models (minutes)
    return [*rows, *runtime_rows(pose, reid, images, ours_rate, record=not quick, bounds=bounds), *trained]


def compile_row(pose, reid, images, eager_rate: float, share_per_rate: float, attainable_per_rate: float) -> Row:
    """``inference_compile``: the same job on ``Pipeline(compile=True)`` (inductor with freezing) vs eager
    (``eager_rate``), with the compile time and the job size from which it pays (full bench only: the compile
    alone takes minutes)."""
    pipe = fast_pipeline(copy.deepcopy(pose), copy.deepcopy(reid), len(images), compile=True)
    t0 = time.perf_counter()
    pipe.embed_arrays(images)
    first = time.perf_counter() - t0
    rate = len(images) / timed(lambda: pipe.embed_arrays(images), repeat=3)
    steady = first - len(images) / rate
    pays = (f"so it pays from about {steady / (1 / eager_rate - 1 / rate):,.0f} images" if rate > eager_rate
            else "and it never pays here")
    return make_row("inference_compile", rate, eager_rate, "img/s", roofline_share=rate * share_per_rate,
                    attainable_share=rate * attainable_per_rate,
                    note=f"torch.compile (inductor, freezing), same images and batch; ratio vs eager; compile "
                         f"{steady:.0f} s, {pays}")


def _checkpoints(pose, reid, folder: Path, size: int) -> tuple[Path, Path]:
    """The benchmark's networks as pose / ReID checkpoints (``size`` x ``size`` inputs), as ``pamtri embed``
    loads them."""
    pcfg, rcfg = PoseConfig(), ReIDConfig()
    pcfg.model.name, pcfg.codec.input_size = pose.name, (size, size)
    rcfg.model, rcfg.data.height, rcfg.data.width = reid.cfg, size, size
    save_checkpoint({"model": pose.state_dict(), "config": to_dict(pcfg)}, folder / "pose.pt")
    save_checkpoint({"model": reid.state_dict(), "model_description": reid.describe(), "config": to_dict(rcfg)},
                    folder / "reid.pt")
    return folder / "pose.pt", folder / "reid.pt"


def _write_int8_images(folder: Path, images) -> None:
    """``folder``/calib: as many random images as ``images``; ``folder``/guard: ``images`` (PNG)."""

    rng = np.random.default_rng(1)
    for name, ims in (("calib", [rng.integers(0, 255, im.shape, dtype=np.uint8) for im in images]),
                      ("guard", images)):
        (folder / name).mkdir()
        for i, im in enumerate(ims):
            atomic_write_bytes(folder / name / f"{i:03d}.png", cv2.imencode(".png", im[..., ::-1])[1].tobytes())


def _int8_pipeline(runtime: str, pose_pt: Path, reid_pt: Path, folder: Path, batch: int):
    """(the ``runtime`` pipeline with both networks INT8 (onnxruntime QDQ / OpenVINO NNCF, calibrated on
    ``folder``/calib, the guard measured on ``folder``/guard), the guard's note)."""
    # the bench measures the guard and reports it; it writes the model whatever the figures (thresholds 0)
    measure = Thresholds(cosine=-1.0, top10=0.0, within=0.0)
    ext = ".xml" if runtime == "openvino" else ".onnx"
    p = export_int8("pose", pose_pt, folder / f"pose.int8{ext}", folder / "calib", folder / "guard",
                    thresholds=measure, runtime=runtime)
    r = export_int8("reid", reid_pt, folder / f"reid.int8{ext}", folder / "calib", folder / "guard",
                    pose_weights=pose_pt, thresholds=measure, heads=True, runtime=runtime)
    pipe = int8_or_fp32_pipeline(pose_pt, reid_pt, (p.path, r.path), True, runtime, batch, precision="auto")
    default = Thresholds()
    passed = r.cosine >= default.cosine and r.top10 >= default.top10 and p.within >= default.within
    how = "OpenVINO NNCF" if runtime == "openvino" else "onnxruntime QDQ"
    note = (f"{how} INT8, both networks; guard: cosine {r.cosine:.4f}, top-10 agreement {r.top10:.3f}, pose "
            f"{100 * p.within:.0f}% of visible keypoints within 0.5 px; {'passes' if passed else 'fails'} the "
            f"default guard (random weights)")
    return pipe, note


def int8_row(pose_pt: Path, reid_pt: Path, folder: Path, images, rates: dict[str, float],
             bounds: dict[str, float] | None = None) -> list[Row]:
    """``inference_int8``: the fastest INT8 runtime (onnxruntime; OpenVINO too when it and NNCF are installed)
    vs the best fp32/bf16 one in ``rates``; the note gives each INT8 runtime's rate and guard figures."""
    runtimes = [r for r in ("onnxruntime", "openvino") if r in rates]
    if "openvino" in runtimes and importlib.util.find_spec("nncf") is None:
        runtimes.remove("openvino")
    if not runtimes:
        return []
    _write_int8_images(folder, images)
    measured = {}
    for runtime in runtimes:
        pipe, note = _int8_pipeline(runtime, pose_pt, reid_pt, folder, len(images))
        measured[runtime] = (len(images) / timed(partial(pipe.embed_arrays, images), repeat=2), note)
    fastest = max(measured, key=lambda r: measured[r][0])
    best = max(rates, key=rates.get)
    notes = "; ".join(f"{r} {rate:.3g} img/s: {note}" for r, (rate, note) in measured.items())
    return [make_row("inference_int8", measured[fastest][0], rates[best], "img/s",
                     attainable_share=share_of(bounds, "int8", measured[fastest][0]),
                     note=f"fastest INT8 runtime {fastest}, ratio vs the best fp32/bf16 runtime ({best}); guard on "
                          f"the {len(images)} bench images, calibrated on {len(images)} others; {notes}"
                          f"{bound_note(bounds, 'int8')}")]


def graph_rows(pose_pt: Path, reid_pt: Path, folder: Path, images, torch_rate: float, stage_rates: dict[str, float],
               bounds: dict[str, float] | None = None) -> tuple[list[Row], dict[str, float]]:
    """``inference_graph_onnxruntime`` / ``inference_graph_openvino``: the one graph (pipeline.export.PipelineGraph,
    what ``--runtime`` runs) vs the per-stage graphs of the same runtime (``stage_rates``), with its ratio vs torch
    eager (``torch_rate``) in the note; ``inference_graph_int8``: the fastest INT8 one graph (onnxruntime QDQ,
    OpenVINO NNCF) vs the fastest fp32 one graph, its guard in the note. Same images and batch as ``inference``.
    -> (rows, the one graph's images/s per runtime)."""
    batch, rows, rates = len(images), [], {}
    for runtime in ("onnxruntime", "openvino"):
        if importlib.util.find_spec(runtime) is None:
            continue
        pipe = Pipeline.from_weights(pose_pt, reid_pt, device="cpu", batch_size=batch, runtime=runtime)
        rates[runtime] = batch / timed(partial(pipe.embed_arrays, images), repeat=2)
        stage = stage_rates.get(runtime, torch_rate)
        rows.append(make_row(f"inference_graph_{runtime}", rates[runtime], stage, "img/s",
                             attainable_share=share_of(bounds, runtime_precision(runtime), rates[runtime]),
                             note=f"the one ONNX graph (crop, flip test, decoding, pose channels and both networks "
                                  f"in one graph) on {runtime}; ratio vs the per-stage {runtime} graphs "
                                  f"({stage:.3g} img/s); {rates[runtime] / torch_rate:.2f}x torch eager "
                                  f"({torch_rate:.3g} img/s); same images and batch {batch}"
                                  f"{bound_note(bounds, runtime_precision(runtime))}"))
    if rates:
        rows += _graph_int8_row(pose_pt, reid_pt, folder, images, rates, bounds)
    return rows, rates


def _graph_int8_row(pose_pt: Path, reid_pt: Path, folder: Path, images, rates: dict[str, float],
                    bounds: dict[str, float] | None = None) -> list[Row]:
    """``inference_graph_int8`` (see :func:`graph_rows`); the guard is measured and reported, never enforced."""
    if not (folder / "calib").is_dir():
        _write_int8_images(folder, images)
    measure = Thresholds(cosine=-1.0, top10=0.0, within=0.0)
    measured = {}
    for runtime in rates:
        if runtime == "openvino" and importlib.util.find_spec("nncf") is None:
            continue
        ext = ".xml" if runtime == "openvino" else ".onnx"
        r = export_int8("pipeline", reid_pt, folder / f"graph.int8{ext}", folder / "calib", folder / "guard",
                        pose_weights=pose_pt, thresholds=measure, runtime=runtime)
        pipe = int8_or_fp32_pipeline(pose_pt, reid_pt, r.path, False, runtime, len(images), precision="auto")
        rate = len(images) / timed(partial(pipe.embed_arrays, images), repeat=2)
        measured[runtime] = (rate, f"cosine {r.cosine:.4f}, top-10 agreement {r.top10:.3f}, "
                                   f"{100 * r.within:.0f}% of visible keypoints within 0.5 px")
    if not measured:
        return []
    fastest, best = max(measured, key=lambda k: measured[k][0]), max(rates, key=rates.get)
    notes = "; ".join(f"{k} {rate:.3g} img/s, guard {note}" for k, (rate, note) in measured.items())
    return [make_row("inference_graph_int8", measured[fastest][0], rates[best], "img/s",
                     attainable_share=share_of(bounds, "int8", measured[fastest][0]),
                     note=f"the one graph with both networks INT8 (onnxruntime QDQ / OpenVINO NNCF), fastest "
                          f"{fastest}, ratio vs the fastest fp32 one graph ({best}); guard on the {len(images)} "
                          f"bench images (random weights), calibrated on {len(images)} others; {notes}"
                          f"{bound_note(bounds, 'int8')}")]


GPU_PROVIDERS = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


def cuda_rows(pose_pt: Path, reid_pt: Path, images, cpu_rate: float) -> list[Row]:
    """On a CUDA device (none: no rows): ``inference_cuda`` (torch, fp16/bf16 autocast, channels-last) and
    ``inference_onnxruntime_cuda`` / ``inference_onnxruntime_tensorrt`` where onnxruntime-gpu offers the
    provider, on the same images and batch; ratios vs the torch CPU path (``cpu_rate``)."""

    if not torch.cuda.is_available():
        return []
    batch, rows = len(images), []
    variants = [("inference_cuda", "torch", None)]
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime as ort
        offered = ort.get_available_providers()
        variants += [(f"inference_onnxruntime_{name}", "onnxruntime", name == "tensorrt")
                     for name in ("cuda", "tensorrt") if GPU_PROVIDERS[name] in offered]
    for name, runtime, tensorrt in variants:
        pipe = Pipeline.from_weights(pose_pt, reid_pt, device="cuda", batch_size=batch, runtime=runtime,
                                     one_graph=False)
        if tensorrt:
            pipe.predictor.model = OnnxNetwork(pipe.predictor.model.path, runtime, device="cuda", tensorrt=True)
            pipe.model = OnnxNetwork(pipe.model.path, runtime, as_dict=True, device="cuda", tensorrt=True)
        pipe.embed_arrays(images)  # warm-up: CUDA context, cuDNN autotune, TensorRT engine build
        rate = batch / timed(partial(pipe.embed_arrays, images), repeat=2)
        how = (f"providers {', '.join(pipe.model.providers)}" if runtime == "onnxruntime"
               else f"torch autocast {pipe.dtype}, channels-last")
        rows.append(make_row(name, rate, cpu_rate, "img/s", note=f"{torch.cuda.get_device_name()}; {how}; same "
                             f"images and batch {batch}; ratio vs the torch CPU path"))
    return rows


def runtime_rows(pose, reid, images, torch_rate: float, record: bool, size: int = 256,
                 bounds: dict[str, float] | None = None) -> list[Row]:
    """``inference_onnxruntime``, ``inference_openvino`` (images/s vs the torch path, ``torch_rate``) and
    ``inference_int8`` (vs the best fp32/bf16 runtime; :func:`int8_row`), plus the CUDA rows on a GPU
    (:func:`cuda_rows`), on the same images and batch, networks at ``size``
    pixels; with ``record`` (a full run) the fastest fp32/bf16 runtime is recorded for ``pamtri embed
    --runtime measured`` (pipeline.runtimes.record_fastest), torch unless another measured faster."""
    batch = len(images)
    work = Path(tempfile.mkdtemp(prefix="pamtri-bench-runtimes-"))
    rows, rates = [], {"torch": torch_rate}
    try:
        pose_pt, reid_pt = _checkpoints(pose, reid, work, size)
        for runtime in ("onnxruntime", "openvino"):
            if importlib.util.find_spec(runtime) is None:
                log.warning("bench: %s is not installed, no inference_%s row", runtime, runtime)
                continue
            pipe = Pipeline.from_weights(pose_pt, reid_pt, device="cpu", batch_size=batch, runtime=runtime,
                                         one_graph=False)
            rates[runtime] = batch / timed(partial(pipe.embed_arrays, images), repeat=2)
            rows.append(make_row(f"inference_{runtime}", rates[runtime], torch_rate, "img/s",
                                 attainable_share=share_of(bounds, runtime_precision(runtime), rates[runtime]),
                                 note=f"same job, images and batch {batch} as `inference`; ratio vs the torch path"
                                      f"{bound_note(bounds, runtime_precision(runtime))}"))
        rows += int8_row(pose_pt, reid_pt, work, images, rates, bounds)
        graph, graph_rates = graph_rows(pose_pt, reid_pt, work, images, torch_rate, rates, bounds)
        rows += graph
        rows += cuda_rows(pose_pt, reid_pt, images, torch_rate)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if record:  # `--runtime onnxruntime|openvino` runs the one graph: its rates are the runtimes' rates
        log.info("bench: fastest runtime here %s (recorded for `pamtri embed --runtime auto`)",
                 record_fastest({**rates, **graph_rates}, cpu_name()))
    return rows


DEMO_RUNS = Path("runs/demo")  # where `pamtri demo` (make demo) writes its timestamped runs


def latest_demo_run(runs: Path = DEMO_RUNS) -> Path | None:
    """The newest run under ``runs`` with trained pose and pose-aware ReID checkpoints and its data set."""
    done = [r for r in sorted(runs.glob("*"), reverse=True)
            if all((r / p).is_file() for p in ("pose/best.pt", "reid_pose/best.pt", "data/label_query.csv"))]
    return done[0] if done else None


def _linked_images(folder: Path, images: list[Path]) -> Path:
    """``folder`` holding symbolic links to ``images`` (a calibration / guard subset without copies)."""
    folder.mkdir()
    for i, src in enumerate(images):
        (folder / f"{i:04d}{src.suffix}").symlink_to(src.resolve())
    return folder


def int8_trained_row(run: Path | None = None, calibration: int = 128, guard: int = 64,
                     runtimes: tuple[str, ...] = ("onnxruntime", "openvino")) -> list[Row]:
    """``inference_int8_trained``: the INT8 guard on TRAINED models, those of the latest demo run (none: no row):
    both networks quantised for onnxruntime as per-stage graphs (calibrated on ``calibration`` training images, the
    guard on ``guard`` query images), then mAP / rank-1 of the run's query vs test split with both INT8 graphs
    against the fp32 graphs (ours: INT8 mAP, baseline: fp32 mAP). ``inference_graph_int8_trained``: the same for
    the one graph (what ``--runtime`` runs), on onnxruntime QDQ and OpenVINO NNCF (those of ``runtimes`` installed),
    the better INT8 mAP the row's.
    The checkpoints are copied first, so that no INT8 model lands in the demo run's model cache."""
    run = run or latest_demo_run()
    if run is None:
        log.warning("bench: no demo run under %s (make demo), no inference_int8_trained row", DEMO_RUNS)
        return []
    data = run / "data"
    work = Path(tempfile.mkdtemp(prefix="pamtri-bench-int8-trained-"))
    try:
        pose_pt, reid_pt = work / "pose.pt", work / "reid.pt"
        atomic_write_bytes(pose_pt, (run / "pose/best.pt").read_bytes())
        atomic_write_bytes(reid_pt, (run / "reid_pose/best.pt").read_bytes())
        calib = _linked_images(work / "calib", sorted((data / "image_train").iterdir())[:calibration])
        held = _linked_images(work / "guard", sorted((data / "image_query").iterdir())[::3][:guard])
        measure = Thresholds(cosine=-1.0, top10=0.0, within=0.0)
        p = export_int8("pose", pose_pt, work / "pose.int8.onnx", calib, held, thresholds=measure)
        r = export_int8("reid", reid_pt, work / "reid.int8.onnx", calib, held, pose_weights=pose_pt,
                        thresholds=measure, heads=True)
        change = int8_retrieval(pose_pt, reid_pt, (p.path, r.path), data)
        stages = {"onnxruntime": (r.cosine, r.top10, p.within, change)}
        rows = [_trained_row("inference_int8_trained", run, stages, "per-stage graphs", calibration, guard)]
        graphs = {}
        for runtime in runtimes:
            if importlib.util.find_spec(runtime) is None or (runtime == "openvino" and
                                                             importlib.util.find_spec("nncf") is None):
                continue
            ext = ".xml" if runtime == "openvino" else ".onnx"
            g = export_int8("pipeline", reid_pt, work / f"graph.int8{ext}", calib, held, pose_weights=pose_pt,
                            thresholds=measure, runtime=runtime)
            graphs[runtime] = (g.cosine, g.top10, g.within,
                               int8_retrieval(pose_pt, reid_pt, g.path, data, runtime=runtime))
        if graphs:
            rows.append(_trained_row("inference_graph_int8_trained", run, graphs, "the one graph", calibration,
                                     guard))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def _trained_row(name: str, run: Path, measured: dict, what: str, calibration: int, guard: int) -> Row:
    """One INT8-on-trained-models row from {runtime: (guard cosine, top-10, keypoints within, RetrievalChange)}:
    ours the best INT8 mAP, baseline its fp32 mAP; every runtime's figures in the note."""
    default = Thresholds()
    notes = []
    for runtime, (cosine, top10, within, ch) in measured.items():
        passed = cosine >= default.cosine and top10 >= default.top10 and within >= default.within
        how = "OpenVINO NNCF" if runtime == "openvino" else "onnxruntime QDQ"
        notes.append(f"{how}: guard cosine {cosine:.4f}, top-10 agreement {top10:.3f}, pose {100 * within:.0f}% "
                     f"of visible keypoints within 0.5 px: {'passes' if passed else 'fails'} the default guard; "
                     f"{ch.queries} queries x {ch.gallery} gallery: mAP {100 * ch.fp32_map:.2f} -> "
                     f"{100 * ch.int8_map:.2f}, rank-1 {100 * ch.fp32_rank1:.2f} -> {100 * ch.int8_rank1:.2f}, "
                     f"feature cosine {ch.cosine:.4f}, query->gallery top-10 agreement {ch.top10:.3f}")
    best = max(measured, key=lambda k: measured[k][3].int8_map)
    ch = measured[best][3]
    return make_row(name, ch.int8_map, ch.fp32_map, "mAP",
                    note=f"trained demo models ({run.name}), INT8 of both networks in {what} vs fp32 on the same "
                         f"runtime; guard on {guard} query images, calibrated on {calibration} training images; "
                         + "; ".join(notes))
