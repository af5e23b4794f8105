"""``pamtri demo``: the main job, end to end on freshly generated data."""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    from pamtri.pipeline.cli import add_config_args
    p = subparsers.add_parser(
        "demo", help="the whole pipeline on generated data: synth, pose, cache, two ReID variants, report",
        description="Generate a synthetic data set, train the pose stage (small HRNet), build the heatmap cache, "
                    "train the ReID stage twice with the same budget (RGB-only baseline and pose-aware), evaluate "
                    "both and write report.md / index.html with the tables and figures into "
                    "<out>/<timestamp>/. Needs no data and no weights.")
    add_config_args(p)
    p.add_argument("--out", help="parent folder of the run (default runs/demo)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pamtri.common.config import load_config
    from pamtri.pipeline.demo import DemoConfig, run_demo
    repo = Path(__file__).resolve().parents[2]
    config = args.config or (repo / "configs" / "demo.yaml")
    cfg = load_config(DemoConfig, config, args.overrides)
    if args.out:
        cfg.out = args.out
    folder = run_demo(cfg, repo)
    print(f"demo finished: {folder / 'report.md'} (open {folder / 'index.html'} in a browser)")
    return 0
