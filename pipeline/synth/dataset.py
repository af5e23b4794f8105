"""Generate a VeRi-style synthetic data set tree (``pamtri synth``): identities, cameras, splits, images, labels.

Randomness is split into independent streams of one ``numpy.random.SeedSequence`` entropy ``seed``:
``[seed, 0, g]`` renders image g, ``[seed, 1, v]`` draws identity v, ``[seed, 2, c]`` camera c,
``[seed, 3]`` the train/test split and the query choice, ``[seed, 4, v]`` identity v's camera order. So the
output is byte-identical for a seed whatever the number of worker processes.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import multiprocessing as mp
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from pamtri.common.atomic import RunLock, atomic_write_bytes, atomic_write_text
from pamtri.common.errors import ConfigError
from pamtri.data.images import read_image
from pamtri.data.labels import write_pose_csv, write_reid_csv
from pamtri.data.records import REAL, SYNTHETIC, Record

from .body import Identity, make_identity
from .preview import contact_sheet
from .render import STYLES, CameraProfile, make_camera, render_view, sample_view

log = logging.getLogger(__name__)

VERSION = "pamtri-synth 1.0"
SPLITS = ("train", "query", "test")
META_HEADER = ("image", "vehicle_id", "camera_id", "color_id", "type_id", "orientation_deg", "domain")
DOMAIN_OF_STYLE = {"synthetic": "synthetic", "realistic": "real"}
OUTPUTS = tuple(f"image_{s}" for s in SPLITS) + tuple(f"name_{s}.txt" for s in SPLITS) + \
    tuple(f"{p}_{s}.csv" for p in ("label", "pose_label", "meta") for s in SPLITS) + ("synth.json", "preview.png")
PREVIEW_SAMPLES = 24


@dataclass(frozen=True)
class ImageTask:
    """One image to render: global index, identity, camera, VeRi name and split."""
    index: int
    vehicle_id: int
    camera_id: int
    frame: int
    split: str                # 'train' or 'test'
    query: bool

    @property
    def name(self) -> str:
        return f"{self.vehicle_id:04d}_c{self.camera_id:03d}_{self.frame:08d}_0.jpg"


def _stream(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in key]))


def check_args(seed: int, ids: int, images_per_id: int, size: int, style: str, cameras: int, test_fraction: float,
               workers: int) -> None:
    """Raise ConfigError naming the bad argument (ids >= 2, 0 < test_fraction < 1, size >= 32, ...)."""
    def bad(flag, msg):
        raise ConfigError(f"synth: {flag} {msg}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        bad("--seed", f"must be a non-negative integer, got {seed!r}")
    if ids < 2:
        bad("--ids", f"must be at least 2 (train and test identities are disjoint), got {ids}")
    if ids > 9999:
        bad("--ids", f"must be at most 9999 (VeRi names hold 4 digits), got {ids}")
    if images_per_id < 1:
        bad("--images-per-id", f"must be at least 1, got {images_per_id}")
    if size < 32:
        bad("--size", f"must be at least 32 pixels, got {size}")
    if size > 2048:
        bad("--size", f"must be at most 2048 pixels, got {size}")
    if style not in STYLES:
        bad("--style", f"must be one of {', '.join(STYLES)}, got {style!r}")
    if not 1 <= cameras <= 999:
        bad("--cameras", f"must be between 1 and 999 (VeRi names hold 3 digits), got {cameras}")
    if not (0.0 < test_fraction < 1.0):
        bad("--test-fraction", f"must be strictly between 0 and 1, got {test_fraction}")
    if workers < 1:
        bad("--workers", f"must be at least 1, got {workers}")


def plan(seed: int, ids: int, images_per_id: int, cameras: int, test_fraction: float) -> list[ImageTask]:
    """All images of a data set in render order (identity-major): ids 1..ids, cameras 1..cameras, splits."""
    split_rng = _stream(seed, 3)
    n_test = int(np.clip(round(ids * test_fraction), 1, ids - 1))
    test_ids = set((split_rng.permutation(ids)[:n_test] + 1).tolist())
    frames = np.zeros(cameras + 1, dtype=np.int64)
    tasks: list[ImageTask] = []
    for vid in range(1, ids + 1):
        order = _stream(seed, 4, vid).permutation(cameras) + 1
        for j in range(images_per_id):
            cam = int(order[j % cameras])
            frames[cam] += 1
            tasks.append(ImageTask(index=(vid - 1) * images_per_id + j, vehicle_id=vid, camera_id=cam,
                                   frame=int(frames[cam]), split="test" if vid in test_ids else "train", query=False))
    # query: one image per (test identity, camera), chosen at random among that pair's images
    groups: dict[tuple[int, int], list[int]] = {}
    for i, t in enumerate(tasks):
        if t.split == "test":
            groups.setdefault((t.vehicle_id, t.camera_id), []).append(i)
    for key in sorted(groups):
        members = groups[key]
        pick = members[int(split_rng.integers(len(members)))]
        t = tasks[pick]
        tasks[pick] = ImageTask(t.index, t.vehicle_id, t.camera_id, t.frame, t.split, True)
    return tasks


def identity_for(seed: int, vehicle_id: int) -> Identity:
    """The identity (model + colour) of ``vehicle_id`` under ``seed``."""
    return make_identity(_stream(seed, 1, vehicle_id))


def camera_for(seed: int, camera_id: int, style: str) -> CameraProfile:
    """The viewpoint distribution and colour cast of camera ``camera_id`` under ``seed``."""
    return make_camera(_stream(seed, 2, camera_id), camera_id, style)


def _render_task(job: tuple) -> tuple[int, bytes, np.ndarray, dict]:
    """Worker: render and JPEG-encode one image -> (index, jpeg bytes, keypoints (36, 3), meta)."""
    seed, index, ident, camera, size, style = job
    rng = _stream(seed, 0, index)
    view = sample_view(rng, camera, style, vehicle_length=ident.params()["L"])
    img, kps, meta = render_view(ident, view, size=size, camera=camera)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(view.jpeg_quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return index, buf.tobytes(), kps, meta


def _init_worker() -> None:
    cv2.setNumThreads(1)


def _existing_outputs(out: Path) -> list[str]:
    return [n for n in OUTPUTS if (out / n).exists()]


def _meta_csv(records: list[Record], domain: str) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(META_HEADER)
    for r in records:
        w.writerow([r.name, r.vehicle_id, r.camera_id, r.color_id, r.type_id, f"{r.orientation:.2f}", domain])
    return buf.getvalue()


def generate(out: str | os.PathLike, *, seed: int = 0, ids: int = 20, images_per_id: int = 8, size: int = 128,
             style: str = "synthetic", cameras: int = 4, test_fraction: float = 0.5, workers: int = 1,
             preview: bool = False, overwrite: bool = False, progress: bool = True) -> dict:
    """Write a synthetic VeRi-style data set tree under ``out`` and return a summary dict (counts, seconds, images/s).

    Everything is rendered into a hidden staging folder inside ``out`` and moved into place at the end, so an
    interrupted run leaves no partial tree. ``overwrite`` replaces the outputs of an earlier run.
    """
    check_args(seed, ids, images_per_id, size, style, cameras, test_fraction, workers)
    if images_per_id < 2 or cameras < 2:
        log.warning("synth: with --images-per-id %d and --cameras %d no query has a match in another camera; "
                    "ReID evaluation needs at least 2 of each", images_per_id, cameras)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"synth: --out {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with RunLock(out):
        existing = _existing_outputs(out)
        if existing and not overwrite:
            raise ConfigError(f"synth: {out} already holds a data set ({', '.join(existing[:3])}"
                              f"{', ...' if len(existing) > 3 else ''}); pass --overwrite to replace it")
        for stale in out.glob(".synth-staging-*"):
            shutil.rmtree(stale, ignore_errors=True)
        stage = Path(tempfile.mkdtemp(prefix=".synth-staging-", dir=out))
        try:
            summary = _generate_into(stage, seed, ids, images_per_id, size, style, cameras, test_fraction, workers,
                                     preview, progress)
            for name in existing:
                target = out / name
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            # synth.json last: its presence marks a complete tree
            for name in sorted(os.listdir(stage), key=lambda n: n == "synth.json"):
                os.replace(stage / name, out / name)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    seconds = time.perf_counter() - t0
    summary.update(out=str(out), seconds=round(seconds, 3), images_per_second=round(summary["images"] / seconds, 1))
    log.debug("synth: %d images (%s) in %.1f s, %.1f images/s -> %s", summary["images"],
             ", ".join(f"{s} {summary['splits'][s]['images']}" for s in SPLITS), seconds,
             summary["images_per_second"], out)
    return summary


def _generate_into(stage: Path, seed, ids, images_per_id, size, style, cameras, test_fraction, workers, preview,
                   progress) -> dict:
    tasks = plan(seed, ids, images_per_id, cameras, test_fraction)
    idents = {vid: identity_for(seed, vid) for vid in range(1, ids + 1)}
    cams = {c: camera_for(seed, c, style) for c in range(1, cameras + 1)}
    jobs = [(seed, t.index, idents[t.vehicle_id], cams[t.camera_id], size, style) for t in tasks]
    domain_name = DOMAIN_OF_STYLE[style]
    domain = SYNTHETIC if style == "synthetic" else REAL
    for s in SPLITS:
        (stage / f"image_{s}").mkdir()
    want_preview = set(np.linspace(0, len(tasks) - 1, min(PREVIEW_SAMPLES, len(tasks))).round().astype(int).tolist()) \
        if preview else set()
    records: dict[str, list[Record]] = {s: [] for s in SPLITS}
    shown: list[tuple[np.ndarray, np.ndarray, str]] = []

    def results():
        if workers == 1:
            for job in jobs:
                yield _render_task(job)
            return
        ctx = mp.get_context("spawn")
        with ctx.Pool(workers, initializer=_init_worker) as pool:
            yield from pool.imap(_render_task, jobs, chunksize=max(1, min(32, len(jobs) // (workers * 8) or 1)))

    bar = tqdm(total=len(jobs), desc="synth", unit="img", disable=not progress, leave=False)
    for (index, data, kps, meta), task in zip(results(), tasks):
        assert index == task.index
        name = task.name
        rec = Record(path=name, vehicle_id=task.vehicle_id, camera_id=task.camera_id, color_id=meta["color_id"],
                     type_id=meta["type_id"], orientation=meta["orientation_deg"], domain=domain, keypoints=kps,
                     width=meta["width"], height=meta["height"])
        dests = [task.split] + (["query"] if task.query else [])
        for split in dests:
            with open(stage / f"image_{split}" / name, "wb") as fh:
                fh.write(data)
            records[split].append(rec)
        if index in want_preview:
            img = read_image(stage / f"image_{dests[0]}" / name, max_side=None)[:, :, ::-1]  # the painter's BGR
            shown.append((np.ascontiguousarray(img), kps, name))
        bar.update(1)
    bar.close()

    for split in SPLITS:
        recs = sorted(records[split], key=lambda r: r.name)
        atomic_write_text(stage / f"name_{split}.txt", "".join(r.name + "\n" for r in recs))
        write_reid_csv(recs, stage / f"label_{split}.csv")
        write_pose_csv(recs, stage / f"pose_label_{split}.csv")
        atomic_write_text(stage / f"meta_{split}.csv", _meta_csv(recs, domain_name))
    if preview and shown:
        sheet = contact_sheet([s[0] for s in shown], [s[1] for s in shown], cols=6, tile=192,
                              captions=[s[2] for s in shown])
        ok, png = cv2.imencode(".png", sheet, [cv2.IMWRITE_PNG_COMPRESSION, 9])
        atomic_write_bytes(stage / "preview.png", png.tobytes())
    splits = {s: dict(images=len(records[s]), ids=len({r.vehicle_id for r in records[s]}),
                      cameras=len({r.camera_id for r in records[s]})) for s in SPLITS}
    args = dict(seed=int(seed), ids=int(ids), images_per_id=int(images_per_id), size=int(size), style=style,
                cameras=int(cameras), test_fraction=float(test_fraction))
    info = dict(version=VERSION, args=args, domain=domain_name, splits=splits,
                note="workers and preview do not change the data and are not recorded")
    atomic_write_text(stage / "synth.json", json.dumps(info, indent=2, sort_keys=True) + "\n")
    return dict(version=VERSION, args=args, domain=domain_name, splits=splits, images=len(tasks),
                preview=bool(preview and shown))


def benchmark(n: int = 400, size: int = 128, style: str = "synthetic", end_to_end: bool = False, seed: int = 0,
              root: str | os.PathLike | None = None) -> float:
    """Images per second (wall clock) on one core at ``size`` px: render only (default), or ``end_to_end`` =
    generate() with JPEG encoding, file writes and label CSVs into a temporary folder under ``root`` (default:
    the system temporary folder; file creation speed depends on that file system)."""
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        if end_to_end:
            per_id = 8
            ids = max(2, -(-n // per_id))
            with tempfile.TemporaryDirectory(prefix="pamtri-synth-bench-", dir=root) as tmp:
                generate(Path(tmp) / "warm", seed=seed + 1, ids=2, images_per_id=4, size=size, style=style,
                         progress=False)
                t0 = time.perf_counter()
                s = generate(Path(tmp) / "run", seed=seed, ids=ids, images_per_id=per_id, size=size, style=style,
                             workers=1, progress=False)
                return s["images"] / (time.perf_counter() - t0)
        idents = [identity_for(seed, v) for v in range(1, 33)]
        cams = [camera_for(seed, c, style) for c in range(1, 5)]
        for i in range(min(20, n)):
            _render_only(seed, i, idents, cams, size, style)
        t0 = time.perf_counter()
        for i in range(n):
            _render_only(seed, i, idents, cams, size, style)
        return n / (time.perf_counter() - t0)
    finally:
        cv2.setNumThreads(threads)


def _render_only(seed, i, idents, cams, size, style):
    ident, cam = idents[i % len(idents)], cams[i % len(cams)]
    view = sample_view(_stream(seed, 0, i), cam, style, vehicle_length=ident.params()["L"])
    return render_view(ident, view, size=size, camera=cam)
