"""``pamtri search``: the gallery images nearest to query images."""
from __future__ import annotations

import argparse

from pamtri.pipeline.cli import add_pipeline_args, pipeline_options


def register(subparsers) -> None:
    s = subparsers.add_parser(
        "search", help="find the gallery images nearest to query images",
        description="Embed the query images with the weights recorded in the gallery file (or the ones given), "
                    "print the top matches and draw a rank list PNG.")
    s.add_argument("--query", required=True, nargs="+", metavar="IMG", help="query image files")
    s.add_argument("--gallery", required=True, help=".npz written by `pamtri embed`")
    s.add_argument("--top", type=int, default=10)
    s.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking (k1=20, k2=6, lambda=0.3)")
    s.add_argument("--pose-weights", help="override the pose weights recorded in the gallery file")
    s.add_argument("--reid-weights", help="override the ReID weights recorded in the gallery file")
    s.add_argument("--out", default="search.png", help="rank list PNG (default search.png)")
    add_pipeline_args(s)
    s.set_defaults(func=cmd_search)


def cmd_search(args: argparse.Namespace) -> int:
    from pamtri.pipeline.search import search_gallery
    paths, order, dist = search_gallery(args.query, args.gallery, args.out, top=args.top, rerank=args.rerank,
                                        pose_weights=args.pose_weights, reid_weights=args.reid_weights,
                                        **pipeline_options(args))
    for qi, q in enumerate(args.query):
        print(q)
        for rank, gi in enumerate(order[qi], start=1):
            print(f"  {rank:3d}. {paths[gi]}  distance {dist[qi, gi]:.4f}")
    print(f"rank list: {args.out}")
    return 0
