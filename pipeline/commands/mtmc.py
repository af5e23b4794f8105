"""``pamtri mtmc``: cross-camera vehicle tracking (``run``) and its AI City evaluation (``eval``)."""
from __future__ import annotations

import argparse

from pamtri.pipeline.cli import add_config_args, add_pipeline_args, pipeline_options

RUN_HELP = """\
Camera videos + per-camera tracks -> global vehicle identities (docs/mtmc.md). Reads a scene in the CityFlow
layout (c001/vdo.avi or img1/, gt/gt.txt, mtsc/mtsc_<tracker>.txt, cam_timestamp/<scene>.txt, optional
topology.yaml) or the generic one (cameras.yaml, one folder per camera with a video or frames/ and tracks.txt).
Writes into --out, all together: track1.txt (AI City submission), tracklets.csv, flows.csv (origin-destination
counts and travel times), report.html, run.json, and metrics.json when every camera has gt/gt.txt."""


def register(subparsers) -> None:
    """Add ``mtmc run`` and ``mtmc eval``."""
    p = subparsers.add_parser("mtmc", help="multi-camera vehicle tracking: identities, flows, IDF1")
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    run = sub.add_parser("run", help="associate a scene's tracklets into city-wide vehicle identities",
                         description=RUN_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("--scene", required=True, metavar="DIR", help="scene folder (either layout)")
    run.add_argument("--reid-weights", required=True, metavar="PT", help="ReID checkpoint (pamtri reid train)")
    run.add_argument("--pose-weights", metavar="PT", help="pose checkpoint, when the ReID model takes pose input")
    run.add_argument("--tracks", choices=("mtsc", "gt"), default="mtsc",
                     help="the single-camera tracker's output (default) or the ground-truth tracks")
    run.add_argument("--tracker", metavar="NAME", help="CityFlow: use mtsc/mtsc_NAME.txt (default: the only one)")
    run.add_argument("--out", required=True, metavar="DIR", help="output folder")
    run.add_argument("--no-eval", action="store_true", help="skip metrics.json even when gt/gt.txt exists")
    run.add_argument("--overwrite", action="store_true", help="replace the outputs of an earlier run in --out")
    run.add_argument("--no-progress", action="store_true")
    add_config_args(run, printable=True)
    add_pipeline_args(run)
    run.set_defaults(func=cmd_mtmc_run)
    ev = sub.add_parser("eval", help="IDF1 / IDP / IDR over all cameras and MOTA per camera (motmetrics)")
    ev.add_argument("--gt", required=True, metavar="SCENE_DIR", help="scene folder with <camera>/gt/gt.txt")
    ev.add_argument("--pred", required=True, metavar="TRACK1", help="AI City submission file (track1.txt)")
    ev.add_argument("--out", metavar="DIR", help="also write DIR/metrics.json")
    ev.set_defaults(func=cmd_mtmc_eval)


def cmd_mtmc_run(args: argparse.Namespace) -> int:
    from pamtri.common.config import config_yaml, load_config
    from pamtri.pipeline.mtmc.config import MTMCConfig
    from pamtri.pipeline.mtmc.run import run_mtmc
    cfg = load_config(MTMCConfig, args.config, args.overrides)
    if args.print_config:
        print(config_yaml(cfg), end="")
        return 0
    s = run_mtmc(args.scene, args.reid_weights, args.out, pose_weights=args.pose_weights, tracks=args.tracks,
                 tracker=args.tracker, cfg=cfg, pipeline_options=pipeline_options(args), evaluate=not args.no_eval,
                 overwrite=args.overwrite, progress=not args.no_progress)
    print(f"mtmc: {s['n_tracklets']} tracklets in {s['n_cameras']} cameras -> {s['n_global']} vehicles "
          f"({s['n_multi']} in 2+ cameras, {s['mode']} association) in {s['seconds']['total']:.1f} s -> {s['out']}")
    if s.get("idf1") is not None:
        print(f"  IDF1 {100 * s['idf1']:.1f} (metrics.json)")
    return 0


def cmd_mtmc_eval(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from pamtri.common.atomic import atomic_write_text
    from pamtri.pipeline.mtmc.evaluate import evaluate_mtmc, format_metrics
    m = evaluate_mtmc(args.gt, args.pred)
    print(format_metrics(m))
    if args.out:
        atomic_write_text(Path(args.out) / "metrics.json", json.dumps(m, indent=1) + "\n")
    return 0
