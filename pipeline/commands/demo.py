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
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from pamtri.pipeline.demo import REPO, demo_config, run_demo
    folder = run_demo(demo_config(args.config, args.overrides, args.out), REPO)
    print(f"demo finished: {folder / 'report.md'} (open {folder / 'index.html'} in a browser)")
    return 0
