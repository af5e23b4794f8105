"""``pamtri mtmc run``: a scene's per-camera tracks -> global vehicle identities, flows and a report.

Reads and validates everything first (every track file against its video), then tracklets -> crops by quality
(one decoding pass per camera) -> features (the two-stage pipeline) -> constrained association -> outputs, all
written into a staging folder and moved into --out together (run.json last).
"""
from __future__ import annotations

import csv
import io
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from pamtri.common.atomic import atomic_write_text
from pamtri.common.config import to_dict
from pamtri.data.attributes import VERI_COLORS, VERI_TYPES
from pamtri.pipeline.infer import Pipeline
from pamtri.pipeline.report import render

from .associate import Timing, associate
from .config import MTMCConfig
from .evaluate import evaluate_mtmc
from .report import report_context
from .scene import read_scene
from .staging import staged_outputs
from .tracklets import Tracklet, build_tracklets, sample_crops, tracklet_features

log = logging.getLogger(__name__)

OUTPUTS = ("track1.txt", "tracklets.csv", "flows.csv", "report.html", "metrics.json", "run.json")
MARKER = "run.json"


def track1_text(scene, tracklets: list[Tracklet], labels: np.ndarray, multi_camera_only: bool) -> str:
    """AI City submission lines: camera_id obj_id frame_id xmin ymin width height xworld yworld (-1: unknown)."""
    cams_of: dict[int, set[int]] = {}
    for tl, g in zip(tracklets, labels):
        cams_of.setdefault(int(g), set()).add(tl.camera)
    lines = []
    for tl, g in zip(tracklets, labels):
        if multi_camera_only and len(cams_of[int(g)]) < 2:
            continue
        for f, (left, top, w, h) in zip(tl.frames, tl.boxes):
            lines.append((tl.camera, int(g) + 1, int(f), int(round(left)), int(round(top)), int(round(w)),
                          int(round(h))))
    lines.sort()
    return "".join(f"{c} {g} {f} {x} {y} {w} {h} -1 -1\n" for c, g, f, x, y, w, h in lines)


def tracklets_csv(scene, tracklets: list[Tracklet], labels: np.ndarray) -> str:
    names = {c.id: c.name for c in scene.cameras}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["camera", "local_id", "global_id", "start_s", "end_s", "frames", "first_frame", "last_frame",
                "color", "type"])
    for tl, g in sorted(zip(tracklets, labels), key=lambda p: (p[0].camera, p[0].local_id)):
        w.writerow([names[tl.camera], tl.local_id, int(g) + 1, f"{tl.start:.2f}", f"{tl.end:.2f}", len(tl.frames),
                    int(tl.frames[0]), int(tl.frames[-1]), VERI_COLORS[tl.color] if tl.color >= 0 else "",
                    VERI_TYPES[tl.type] if tl.type >= 0 else ""])
    return buf.getvalue()


def flows(scene, tracklets: list[Tracklet], labels: np.ndarray) -> list[dict]:
    """Origin-destination trips: consecutive cameras of each global identity (by time), with travel times."""
    names = {c.id: c.name for c in scene.cameras}
    by_gid: dict[int, list[Tracklet]] = {}
    for tl, g in zip(tracklets, labels):
        by_gid.setdefault(int(g), []).append(tl)
    trips: dict[tuple[str, str], list[float]] = {}
    for tls in by_gid.values():
        tls = sorted(tls, key=lambda t: t.start)
        # merge one camera's consecutive fragments into one visit
        visits: list[list] = []
        for t in tls:
            if visits and visits[-1][0] == t.camera:
                visits[-1][2] = max(visits[-1][2], t.end)
            else:
                visits.append([t.camera, t.start, t.end])
        for (ca, _, ea), (cb, sb, _) in zip(visits, visits[1:]):
            trips.setdefault((names[ca], names[cb]), []).append(sb - ea)
    out = []
    for (a, b), times in sorted(trips.items()):
        q1, med, q3 = np.percentile(times, [25, 50, 75])
        out.append(dict(origin=a, destination=b, count=len(times), median=float(med), iqr=float(q3 - q1),
                        times=times))
    return out


def flows_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["origin", "destination", "vehicles", "travel_median_s", "travel_iqr_s", "travel_min_s",
                "travel_max_s"])
    for r in rows:
        w.writerow([r["origin"], r["destination"], r["count"], f"{r['median']:.2f}", f"{r['iqr']:.2f}",
                    f"{min(r['times']):.2f}", f"{max(r['times']):.2f}"])
    return buf.getvalue()


def run_mtmc(scene_dir: str | os.PathLike, reid_weights: str | os.PathLike, out: str | os.PathLike, *,
             pose_weights: str | os.PathLike | None = None, tracks: str = "mtsc", tracker: str | None = None,
             cfg: MTMCConfig | None = None, pipeline_options: dict | None = None, evaluate: bool = True,
             overwrite: bool = False, progress: bool = True, pipeline=None) -> dict:
    """The whole job (module docstring); returns the run summary (also in run.json)."""

    cfg = cfg or MTMCConfig()
    cfg.validate()
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    scene = read_scene(scene_dir, tracks=tracks, tracker=tracker)
    tracklets = build_tracklets(scene, cfg.tracklets)   # reads and checks every track line
    times["read"] = time.perf_counter() - t0
    if pipeline is None:
        pipeline = Pipeline.from_weights(pose_weights, reid_weights, **(pipeline_options or {}))
    t = time.perf_counter()
    sample_crops(scene, tracklets, cfg.crops, progress)
    tracklets = [tl for tl in tracklets if tl.crops]
    times["crops"] = time.perf_counter() - t
    t = time.perf_counter()
    feats = tracklet_features(pipeline, tracklets, cfg.crops.batch_size, progress)
    times["features"] = time.perf_counter() - t
    t = time.perf_counter()
    timing = Timing(np.array([tl.camera for tl in tracklets]), np.array([tl.start for tl in tracklets]),
                    np.array([tl.end for tl in tracklets]),
                    scene.windows() if cfg.association.constraints else {})
    labels, mode = associate(feats, timing, cfg.association)
    times["associate"] = time.perf_counter() - t
    od = flows(scene, tracklets, labels)
    cams_of: dict[int, set[int]] = {}
    for tl, g in zip(tracklets, labels):
        cams_of.setdefault(int(g), set()).add(tl.camera)
    summary = dict(scene=str(Path(scene_dir)), tracks=tracks, n_cameras=len(scene.cameras),
                   n_tracklets=len(tracklets), n_global=len(cams_of),
                   n_multi=sum(len(s) >= 2 for s in cams_of.values()), mode=mode,
                   threshold=cfg.association.rerank_threshold if cfg.association.rerank else cfg.association.threshold,
                   constraints=cfg.association.constraints, rerank=cfg.association.rerank)
    with staged_outputs(out, "mtmc run", OUTPUTS, MARKER, overwrite) as stage:
        atomic_write_text(stage / "track1.txt", track1_text(scene, tracklets, labels,
                                                            cfg.output.multi_camera_only))
        atomic_write_text(stage / "tracklets.csv", tracklets_csv(scene, tracklets, labels))
        atomic_write_text(stage / "flows.csv", flows_csv(od))
        metrics = None
        if evaluate and all(c.gt is not None for c in scene.cameras):
            metrics = evaluate_mtmc(scene_dir, stage / "track1.txt")
            metrics["pred"] = "track1.txt"
            atomic_write_text(stage / "metrics.json", json.dumps(metrics, indent=1) + "\n")
        ctx = report_context(scene, tracklets, labels, od, cfg.output.report_vehicles, metrics, summary)
        atomic_write_text(stage / "report.html", render("mtmc_report.html", **ctx))
        times["total"] = time.perf_counter() - t0
        summary.update(seconds={k: round(v, 2) for k, v in times.items()}, config=to_dict(cfg),
                       idf1=None if metrics is None else metrics["idf1"])
        atomic_write_text(stage / MARKER, json.dumps(summary, indent=1) + "\n")
    summary["out"] = str(out)
    return summary
