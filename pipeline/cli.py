"""The ``pamtri`` console script: argparse subcommands, one-line errors, ``--debug`` for tracebacks."""
from __future__ import annotations

import argparse
import importlib
import sys

from pamtri.common.errors import PamtriError

# Order is the order of ``pamtri --help``.
COMMAND_MODULES = ("demo", "synth", "data", "pose", "reid", "cache", "embed", "search", "index", "mtmc", "bench",
                   "export", "weights", "serve")


def add_config_args(parser: argparse.ArgumentParser, required: bool = False, printable: bool = False) -> None:
    """--config FILE and repeatable --set key=value (dotted keys, YAML values); with ``printable``, also
    --print-config (print the resolved config as YAML and exit, touching no file)."""
    parser.add_argument("--config", required=required, metavar="YAML",
                        help="experiment YAML (overrides the built-in defaults)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key, e.g. --set optim.epochs=5 (repeatable)")
    if printable:
        parser.add_argument("--print-config", action="store_true",
                            help="print the fully resolved config (defaults <- YAML and its _base_ chain <- --set) "
                                 "as YAML and exit without creating or touching any file")


def add_pipeline_args(parser: argparse.ArgumentParser) -> None:
    """The two-stage inference options of ``embed`` and ``search`` (read back by :func:`pipeline_options`)."""
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto")
    parser.add_argument("--no-flip-test", action="store_true", help="skip the pose flip test (faster)")
    parser.add_argument("--runtime", choices=("auto", "measured", "torch", "onnxruntime", "openvino"), default="auto",
                        help="where both networks run: onnxruntime or openvino (CPU) run them from ONNX files "
                             "exported on first use and cached next to the weights; cropping, flip test, decoding "
                             "and the pose channels are the same code for every runtime. auto (default): torch, "
                             "on every device. measured: the runtime the last full `pamtri bench` measured fastest "
                             "on this CPU model (torch without such a record, and on a GPU). The run's first log "
                             "line says which runtime it uses and why")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile both networks (off by default: on a 2-core CPU it compiled for 144 s and "
                             "then ran 4%% slower than eager, docs/perf.md; try it on a GPU)")


def non_negative(text: str) -> float:
    """An argparse type: a float >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text} is negative (or not a number); give a weight >= 0")
    return value


def add_part_weight_arg(parser: argparse.ArgumentParser) -> None:
    """``--part-weight`` of ``search`` and ``index search`` (models with part features, issue 25)."""
    parser.add_argument("--part-weight", type=non_negative, default=None, metavar="W",
                        help="models with part features: weight of the co-visible part distance relative to the "
                             "global one (lambda = W x the index's part_scale; 0: the global distance alone; "
                             "default: the model's own eval.part_weight, recorded in the index). The global top "
                             "100 are re-scored")


def pipeline_options(args: argparse.Namespace) -> dict:
    """``Pipeline.from_weights`` keyword arguments from the options of :func:`add_pipeline_args`."""
    return dict(device=args.device, precision=args.precision, batch_size=args.batch_size,
                flip_test=False if args.no_flip_test else None, compile=args.compile,
                runtime=args.runtime)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pamtri",
        description="Pose-aware vehicle re-identification (PAMTRI) with StRDAN domain-adaptive training.")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug-level logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"pamtri.pipeline.commands.{name}").register(sub)
    return parser


def one_line(message: str) -> str:
    """``message`` on one line (a multi-line text, e.g. a YAML parser's, joined with spaces)."""
    return " ".join(part.strip() for part in message.splitlines() if part.strip())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from pamtri.common.device import setup_logging
    setup_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except PamtriError as exc:
        if args.debug:
            raise
        print(f"pamtri: error: {one_line(str(exc))}", file=sys.stderr)
        return 1
    except OSError as exc:  # a file, the disk, a permission: the user's to fix, so one line as well
        if args.debug:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"pamtri: error: {where}{one_line(exc.strerror or str(exc))} (--debug shows the traceback)",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("pamtri: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
