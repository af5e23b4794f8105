"""``pamtri data``: inspect data set trees (``pamtri data check ROOT``)."""
from __future__ import annotations

import argparse
import json
import textwrap


def _fill(text: str) -> str:
    return "\n".join(textwrap.fill(p, 88) for p in text.split("\n"))


def register(subparsers) -> None:
    from pamtri.data.readers import FORMATS  # light: numpy only

    parser = subparsers.add_parser(
        "data", help="inspect data set trees (check one before training on it)",
        description="Inspect data set trees in any supported format.")
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    sub.required = True
    check = sub.add_parser(
        "check", help="validate a data set tree and list every problem",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_fill(
            "Validate a data set tree (VeRi-776, CityFlow-ReID, AI City 2020 synthetic/VehicleX, the reference "
            "PAMTRI CSVs, a `pamtri synth` tree, VehicleID, VERI-Wild, a folder of crops or a CSV per split; "
            "every test set of VehicleID and VERI-Wild): print a summary per split (identities, images, cameras, "
            "colour/type/orientation/keypoint coverage) and every problem found, one line each naming the file "
            "and line. All problems are collected in one pass; errors fail the check, warnings do not."),
        epilog=_fill(
            "Images: every image's header is read (size, channels); at most --max-decodes images per split are "
            "fully decoded.\nExit status: 0 clean (warnings allowed), 1 problems found or nothing to check (no "
            "such folder, format not detectable; one error line), 2 usage error (bad arguments)."))
    check.add_argument("root", metavar="ROOT", help="data set folder")
    check.add_argument("--format", dest="fmt", choices=("auto",) + FORMATS + ("scene",), default="auto",
                       help="data set format (default: detect it)")
    check.add_argument("--json", action="store_true", help="print the report as one JSON object")
    check.add_argument("--max-decodes", type=int, default=None, metavar="N",
                       help="fully decode at most N images per split, spread evenly (default 200; 0 = headers "
                            "only; -1 = all)")
    check.set_defaults(func=cmd_data_check)


def cmd_data_check(args: argparse.Namespace) -> int:
    from pamtri.pipeline.datacheck import DEFAULT_MAX_DECODES, check_dataset, format_report
    max_decodes = DEFAULT_MAX_DECODES if args.max_decodes is None else args.max_decodes
    report = check_dataset(args.root, args.fmt, max_decodes=max_decodes)
    print(json.dumps(report, indent=None, sort_keys=False) if args.json else format_report(report))
    return 0 if report["ok"] else 1
