"""``pamtri embed``: two-stage inference on image files into a gallery file."""
from __future__ import annotations

import argparse

from pamtri.pipeline.cli import add_pipeline_args, pipeline_options


def register(subparsers) -> None:
    e = subparsers.add_parser(
        "embed", help="two-stage inference: images -> ReID embeddings (+ keypoints, colour, type)",
        description="Run the pose stage, then the ReID stage on the stacked channels, in batches without "
                    "intermediate files. Writes an .npz with names, paths, features (N, D), keypoints (N, 36, 3), "
                    "colour and type predictions, and the weights it used.")
    e.add_argument("--pose-weights", help="pose checkpoint (needed when the ReID model uses pose input)")
    e.add_argument("--reid-weights", required=True, help="ReID checkpoint")
    e.add_argument("--images", required=True, metavar="DIR|LIST", help="image folder or a list file")
    e.add_argument("--out", required=True, help="output .npz")
    add_pipeline_args(e)
    e.set_defaults(func=cmd_embed)


def cmd_embed(args: argparse.Namespace) -> int:
    from pamtri.pipeline.search import embed_to_file
    n, dim = embed_to_file(args.images, args.out, args.pose_weights, args.reid_weights, **pipeline_options(args))
    print(f"{n} images embedded ({dim}-d) -> {args.out}")
    return 0
