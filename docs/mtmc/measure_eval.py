"""The held-out MTMC measurement of docs/mtmc.md, step 2 (after measure_train.sh WORKDIR).

Generated scenes: seed 100 for choosing each variant's merge threshold (a grid, best IDF1 with ground-truth
tracks), seeds 101-103 held out. Per scene, tracks (gt | simulated tracker) and model (RGB | pose-aware), crops
and features are computed once; the variants differ only in association:
  (a) RGB-only features, (b) pose-aware features, (c) + spatio-temporal constraints, (d) + re-ranking
(plus RGB with constraints / re-ranking, for the comparison). IDF1 is `pamtri mtmc eval`'s (motmetrics).
Usage: PYTHONPATH=. python docs/mtmc/measure_eval.py WORKDIR [--seeds 101 102 103]
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from pamtri.pipeline.infer import Pipeline
from pamtri.pipeline.mtmc.associate import Timing, associate
from pamtri.pipeline.mtmc.config import MTMCConfig
from pamtri.pipeline.mtmc.evaluate import evaluate_mtmc
from pamtri.pipeline.mtmc.run import track1_text
from pamtri.pipeline.mtmc.scene import read_scene
from pamtri.pipeline.mtmc.synth_city import generate_city
from pamtri.pipeline.mtmc.tracklets import build_tracklets, sample_crops, tracklet_features

VARIANTS = {  # name -> (model, constraints, rerank)
    "a_rgb": ("rgb", False, False), "b_pose": ("pose", False, False), "c_pose_st": ("pose", True, False),
    "d_pose_st_rr": ("pose", True, True), "rgb_st": ("rgb", True, False), "rgb_st_rr": ("rgb", True, True)}
GRID = [round(x, 2) for x in np.arange(0.1, 1.01, 0.1)]
SCENE = dict(cameras=4, vehicles=40, minutes=1.0, fps=10, width=320, height=180)


def features(scene_dir: Path, tracks: str, pipe, cfg: MTMCConfig):
    scene = read_scene(scene_dir, tracks=tracks)
    tls = build_tracklets(scene, cfg.tracklets)
    sample_crops(scene, tls, cfg.crops)
    tls = [t for t in tls if t.crops]
    return scene, tls, tracklet_features(pipe, tls, cfg.crops.batch_size)


def idf1(scene_dir, scene, tls, feats, cfg: MTMCConfig, constraints: bool, rerank: bool, thr: float, tmp: Path):
    a = replace(cfg.association, constraints=constraints, rerank=rerank, threshold=thr, rerank_threshold=thr)
    timing = Timing(np.array([t.camera for t in tls]), np.array([t.start for t in tls]),
                    np.array([t.end for t in tls]), scene.windows() if constraints else {})
    labels, _ = associate(feats, timing, a)
    tmp.write_text(track1_text(scene, tls, labels, True))
    return evaluate_mtmc(scene_dir, tmp)["idf1"] or 0.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("work", type=Path)
    ap.add_argument("--seeds", type=int, nargs="+", default=[101, 102, 103])
    args = ap.parse_args()
    w = args.work
    cfg = MTMCConfig()
    pipes = {"rgb": Pipeline.from_weights(None, w / "reid_rgb" / "best.pt", device="cpu"),
             "pose": Pipeline.from_weights(w / "pose" / "best.pt", w / "reid_pose" / "best.pt", device="cpu")}
    for seed in [100] + args.seeds:
        if not (w / f"city{seed}" / "synth_city.json").exists():
            generate_city(w / f"city{seed}", seed=seed, progress=False, overwrite=True, **SCENE)
    tmp = w / "track1.tmp"
    results = {"thresholds": {}, "idf1": {}, "scene": SCENE, "seeds": args.seeds}
    cache = {}
    t0 = time.time()
    for model in pipes:
        cache[(100, "gt", model)] = features(w / "city100", "gt", pipes[model], cfg)
    for name, (model, st, rr) in VARIANTS.items():
        scores = [idf1(w / "city100", *cache[(100, "gt", model)], cfg, st, rr, thr, tmp) for thr in GRID]
        results["thresholds"][name] = GRID[int(np.argmax(scores))]
    for seed in args.seeds:
        for tracks in ("gt", "mtsc"):
            for model in pipes:
                cache[(seed, tracks, model)] = features(w / f"city{seed}", tracks, pipes[model], cfg)
            for name, (model, st, rr) in VARIANTS.items():
                v = idf1(w / f"city{seed}", *cache[(seed, tracks, model)], cfg, st, rr,
                         results["thresholds"][name], tmp)
                results["idf1"].setdefault(tracks, {}).setdefault(name, {})[str(seed)] = round(v, 4)
            print(seed, tracks, {k: v[str(seed)] for k, v in results["idf1"][tracks].items()}, flush=True)
        (w / "mtmc_measure.json").write_text(json.dumps(results, indent=1))
    results["seconds"] = round(time.time() - t0, 1)
    (w / "mtmc_measure.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
