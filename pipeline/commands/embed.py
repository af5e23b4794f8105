"""``pamtri embed``: two-stage inference on image files into a gallery file."""
from __future__ import annotations

import argparse

from pamtri.pipeline.cli import add_pipeline_args, pipeline_options


def register(subparsers) -> None:
    e = subparsers.add_parser(
        "embed", help="two-stage inference: images -> ReID embeddings (+ keypoints, colour, type)",
        description="Run the pose stage, then the ReID stage on the stacked channels, in batches without "
                    "intermediate files. Writes an .npz with names, paths, features (N, D), keypoints (N, 36, 3), "
                    "colour and type predictions, cameras and track ids (--data, where labelled) and the weights it "
                    "used. Under `torchrun --nproc_per_node N -m pamtri embed ...` the ranks share the chunks.")
    e.add_argument("--pose-weights", help="pose checkpoint (needed when the ReID model uses pose input)")
    e.add_argument("--reid-weights", required=True, help="ReID checkpoint")
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", metavar="DIR|LIST", help="image folder or a list file")
    src.add_argument("--data", metavar="ROOT", help="a data set split instead (any supported format)")
    e.add_argument("--split", default="test", help="split of --data: train, query or test (default test)")
    e.add_argument("--format", dest="fmt", default="auto", help="data set format of --data (default: detect)")
    e.add_argument("--test-size", type=int, metavar="N", help="VehicleID / VERI-Wild test set of --data")
    e.add_argument("--out", required=True, help="output .npz")
    e.add_argument("--chunk", type=int, metavar="N",
                   help="embed in chunks of N images, each kept in OUT.shards/ as it finishes, so a killed run "
                        "re-run with the same command resumes (default: one pass; 1024 under torchrun, where chunk "
                        "i goes to rank i %% world size)")
    add_pipeline_args(e)
    e.set_defaults(func=cmd_embed)


def cmd_embed(args: argparse.Namespace) -> int:
    from pamtri.pipeline.gallery import embed_to_file, image_source
    source = image_source(args.images, args.data, args.split, args.fmt, args.test_size)
    n, dim = embed_to_file(source, args.out, args.pose_weights, args.reid_weights, args.chunk,
                           **pipeline_options(args))
    print(f"{n} images embedded ({dim}-d) -> {args.out}")
    return 0
