"""``pamtri weights convert``: official PAMTRI checkpoints -> self-describing pamtri checkpoints."""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("weights", help="convert published weights into pamtri checkpoints",
                              description="Tools for weight files (see weights/README.md).")
    sub = p.add_subparsers(dest="weights_command", metavar="ACTION")
    sub.required = True
    c = sub.add_parser(
        "convert", help="convert an official PAMTRI checkpoint (PoseEstNet or MultiTaskNet)",
        description="Rename the tensors of an official PAMTRI checkpoint into pamtri's names and write a "
                    "self-describing checkpoint (atomically) that `pamtri pose predict --weights`, `pamtri reid "
                    "eval --weights`, `pamtri embed` and `pamtri export onnx` load without further options. "
                    "official-posestnet: the pose_hrnet file of PoseEstNet (model_best.pth / final_state.pth); "
                    "the HRNet width is found from the tensor shapes (or --model) and the reference code's "
                    "heatmap conventions are recorded. official-pamtri-reid: MultiTaskNet's model_best.pth.tar; "
                    "the model description (input channels 3/16/39/52, colour/type heads, keypoint vector) is "
                    "derived from the tensor shapes; the data config is the default (256x256, ImageNet mean/std). "
                    "Input files are read with torch.load(weights_only=True).")
    c.add_argument("--from", dest="source", required=True, choices=("official-posestnet", "official-pamtri-reid"),
                   help="layout of the input file")
    c.add_argument("--in", dest="src", required=True, metavar="FILE", help="official checkpoint")
    c.add_argument("--out", required=True, metavar="FILE", help="pamtri checkpoint to write (e.g. weights/pose.pt)")
    c.add_argument("--model", metavar="NAME",
                   help="official-posestnet only: timm HRNet name (default: found from the shapes, e.g. hrnet_w32)")
    c.set_defaults(func=cmd_weights_convert)


def cmd_weights_convert(args: argparse.Namespace) -> int:
    from pamtri.pipeline.weights import convert
    summary = convert(args.source, args.src, args.out, args.model)
    print(f"{args.src} ({args.source}) -> {args.out}: {summary}")
    return 0
