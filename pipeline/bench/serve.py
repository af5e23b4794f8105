"""The ``serve_search`` and ``serve_add_search`` rows: ``pamtri serve`` under load on loopback HTTP.

A real uvicorn server in this process (its own thread) serves an index of generated crops; clients are
``httpx`` clients in threads. ``serve_search``: N concurrent clients, one image per request, against the same
requests sent one after another by one client (each a batch-1 model call), throughput, p50 / p99 latency and
errors. ``serve_add_search``: one client adds images while the others search; zero errors and the index
consistent afterwards (FAISS vectors = SQLite rows) are part of the row.
"""
from __future__ import annotations

import importlib.util
import logging
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from pamtri.common.atomic import atomic_write_bytes
from pamtri.common.checkpoint import save_checkpoint
from pamtri.common.config import to_dict
from pamtri.pipeline.gallery import ImageSource, embed_images, gallery_bytes, gallery_header
from pamtri.pipeline.index import _column, build_index, open_index
from pamtri.pipeline.infer import Pipeline
from pamtri.pipeline.synth.dataset import generate
from pamtri.pose.config import PoseConfig
from pamtri.pose.weights import build_pose_model
from pamtri.reid.config import ModelConfig, ReIDConfig
from pamtri.reid.weights import build_model

from .harness import Row, make_row

log = logging.getLogger(__name__)


def _checkpoints(folder: Path, pose_name: str, pose_size: int, reid_size: int) -> tuple[Path, Path]:
    """Random-weight pose (``pose_name`` at ``pose_size`` px) and DenseNet121 ReID (heatmaps + keypoints,
    ``reid_size`` px) checkpoints as ``pamtri pose/reid train`` write them."""

    torch.manual_seed(0)
    pcfg = PoseConfig()
    pcfg.model.name = pose_name
    pcfg.codec.input_size = (pose_size, pose_size)
    save_checkpoint({"model": build_pose_model(pose_name).state_dict(), "config": to_dict(pcfg)}, folder / "pose.pt")
    rcfg = ReIDConfig()
    rcfg.data.height = rcfg.data.width = reid_size
    rcfg.model = ModelConfig(heatmaps=True, segments=False, keypoints=True)
    reid = build_model(rcfg.model, num_ids=576)
    save_checkpoint({"model": reid.state_dict(), "model_description": reid.describe(), "config": to_dict(rcfg)},
                    folder / "reid.pt")
    return folder / "pose.pt", folder / "reid.pt"


def _world(folder: Path, n: int, size: int, models: tuple) -> tuple[Path, list[bytes], Path, Path]:
    """(index of ``n`` generated crops with cameras and times, the crops' JPEG bytes, pose and ReID weights)."""
    pose, reid = _checkpoints(folder, *models)
    generate(folder / "synth", seed=1, ids=max(2, n // 4), images_per_id=4, size=size, style="realistic", cameras=4,
             test_fraction=0.5, progress=False)
    found, seen = [], set()
    for f in sorted((folder / "synth").rglob("*.jpg")):
        if f.read_bytes() not in seen:
            seen.add(f.read_bytes())
            found.append(f)
    found = found[:n]
    source = ImageSource(folder / "synth", [str(f.relative_to(folder / "synth")) for f in found], {})
    pipe = Pipeline.from_weights(pose, reid, device="cpu")
    arrays = embed_images(pipe, source)
    arrays.update(cameras=np.arange(len(found)) % 4, timestamps=1.7e9 + 60.0 * np.arange(len(found)))
    atomic_write_bytes(folder / "g.npz", gallery_bytes(gallery_header(pose, reid), arrays))
    build_index([folder / "g.npz"], folder / "city.faiss").close()
    return folder / "city.faiss", [f.read_bytes() for f in found], pose, reid


class _Server:
    """uvicorn serving ``app`` on 127.0.0.1 and a free port, in a thread of this process."""

    def __init__(self, app):
        import uvicorn
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the bench's uvicorn server did not start")
            time.sleep(0.05)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def _search_load(url: str, crops: list[bytes], clients: int, requests: int, adds: int = 0
                 ) -> tuple[float, np.ndarray, int]:
    """``requests`` single-image searches from ``clients`` threads (and, with ``adds``, one more client adding two
    new crops ``adds`` times) -> (searches/s, latencies (requests,) s, failed requests)."""
    import httpx
    latencies, errors, lock = [], [0], threading.Lock()

    def searcher(k: int):
        with httpx.Client(base_url=url, timeout=120) as c:
            for j in range(k, requests, clients):
                t0 = time.perf_counter()
                try:
                    ok = c.post("/v1/search", params={"top": 10},
                                files={"files": (f"q{j}.jpg", crops[j % len(crops)], "image/jpeg")}).status_code == 200
                except httpx.HTTPError:
                    ok = False
                with lock:
                    latencies.append(time.perf_counter() - t0)
                    errors[0] += not ok

    def adder():
        with httpx.Client(base_url=url, timeout=120) as c:
            for a in range(adds):
                files = [("files", (f"added-{a}-{i}.jpg", crops[(2 * a + i) % len(crops)], "image/jpeg"))
                         for i in range(2)]
                try:
                    ok = c.post("/v1/index/add", files=files, data={"camera": "9"}).status_code == 200
                except httpx.HTTPError:
                    ok = False
                with lock:
                    errors[0] += not ok
    threads = [threading.Thread(target=searcher, args=(k,)) for k in range(clients)]
    threads += [threading.Thread(target=adder)] if adds else []
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return requests / (time.perf_counter() - t0), np.asarray(latencies), errors[0]


def bench_serve(quick: bool) -> list[Row]:
    """``pamtri serve`` on loopback: 8 concurrent clients vs one client sending the same single-image requests one
    after another, and searches while one client adds. Full: HRNet-W32 + DenseNet121 at 256 px (the paper's
    models, random weights), 128 indexed crops, 128 requests; quick: HRNet-W18-small 64 px + DenseNet121 64 px,
    48 crops, 48 requests."""
    missing = [m for m in ("fastapi", "uvicorn", "httpx", "multipart") if importlib.util.find_spec(m) is None]
    if missing:
        log.warning("bench serve: skipped, %s not installed (pip install -e '.[serve]' httpx)", ", ".join(missing))
        return []
    from pamtri.pipeline.serve.app import ServeConfig, create_app
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise
    models, n, size, requests, clients = ((("hrnet_w18_small", 64, 64), 48, 64, 48, 8) if quick else
                                          (("hrnet_w32", 256, 256), 128, 128, 128, 8))
    with tempfile.TemporaryDirectory(prefix="pamtri-bench-serve-") as tmp:
        index, crops, pose, reid = _world(Path(tmp), n, size, models)
        app = create_app(ServeConfig(index=str(index), pose_weights=str(pose), reid_weights=str(reid),
                                     pipeline_options={"device": "cpu", "batch_size": 32}))
        server = _Server(app)
        try:
            _search_load(server.url, crops, 1, 2)  # warm-up
            seq_rate, seq_lat, seq_err = _search_load(server.url, crops, 1, requests // 2)
            before = app.state.batcher.calls, len(app.state.batcher.batch_sizes)
            rate, lat, err = _search_load(server.url, crops, clients, requests)
            sizes = app.state.batcher.batch_sizes[before[1]:]
            adds = 4 if quick else 8
            add_rate, add_lat, add_err = _search_load(server.url, crops, clients - 1, requests, adds=adds)
        finally:
            server.stop()
        idx = open_index(index)
        vectors, rows = len(idx), len(_column(idx, "name"))
        idx.close()
    p50, p99 = (1000 * np.percentile(lat, q) for q in (50, 99))
    what = f"{models[0]} {models[1]} px + DenseNet121 {models[2]} px, {n} indexed crops"
    out = [make_row("serve_search", rate, seq_rate, "requests/s",
                    note=f"{clients} concurrent clients, {requests} single-image searches (top 10) on loopback HTTP "
                         f"vs one client's {requests // 2} one after another: p50 {p50:.0f} ms, p99 {p99:.0f} ms "
                         f"(sequential p50 {1000 * np.median(seq_lat):.0f} ms); {err + seq_err} errors; mean model "
                         f"batch {np.mean(sizes):.1f} images ({len(sizes)} calls); {what}")]
    consistent = vectors == rows == n + 2 * adds
    out.append(make_row("serve_add_search", add_rate, rate, "requests/s",
                        note=f"{clients - 1} clients searching ({requests} requests, p99 "
                             f"{1000 * np.percentile(add_lat, 99):.0f} ms) while 1 client adds 2 crops {adds} times: "
                             f"{add_err} errors; index afterwards {vectors} vectors, {rows} SQLite rows "
                             f"({'consistent' if consistent else 'INCONSISTENT'}); baseline: searches without adds"))
    if add_err or err or seq_err or not consistent:
        log.error("serve bench: %d errors, index %d vectors vs %d rows", add_err + err + seq_err, vectors, rows)
    return out
