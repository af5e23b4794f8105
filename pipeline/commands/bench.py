"""``pamtri bench``: speed and memory, each figure side by side with its baseline in the same run."""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench", help="measure speed/memory against baselines in one run (prints a table, writes JSON)",
        description="Every row is measured side by side with a baseline implemented in pipeline/bench/baselines.py; "
                    "ratio reads 'times better than the baseline'.")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (about 2 minutes)")
    parser.add_argument("--out", default="bench.json", help="JSON output (default bench.json)")
    parser.add_argument("--only", action="append", default=None, metavar="GROUP",
                        help="run only this group (repeatable)")
    parser.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    from pamtri.pipeline.bench import format_table, run_bench
    result = run_bench(quick=args.quick, only=args.only, out=args.out)
    print(format_table(result))
    print(f"\nwritten to {args.out}")
    return 0
