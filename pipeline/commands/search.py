"""``pamtri search``: the gallery images nearest to query images."""
from __future__ import annotations

import argparse
import os

from pamtri.pipeline.cli import add_part_weight_arg, add_pipeline_args, pipeline_options


def register(subparsers) -> None:
    s = subparsers.add_parser(
        "search", help="find the gallery images nearest to query images",
        description="The simple form of `pamtri index search`: embed the query images with the weights recorded in "
                    "the gallery (or the ones given), search it exactly (a gallery .npz or shard folder is held as a "
                    "flat Euclidean index for the call; an index is searched as it is), print the top matches, "
                    "write them as CSV and draw a rank list PNG.")
    s.add_argument("--query", required=True, nargs="+", metavar="IMG", help="query image files")
    s.add_argument("--gallery", required=True, help="`pamtri embed` .npz, its OUT.shards folder, or a `pamtri index`")
    s.add_argument("--top", type=int, default=10)
    s.add_argument("--rerank", action="store_true",
                   help="k-reciprocal re-ranking of the 100 nearest from k-NN lists (k1=20, k2=6, lambda=0.3)")
    add_part_weight_arg(s)
    s.add_argument("--pose-weights", help="override the pose weights recorded in the gallery file")
    s.add_argument("--reid-weights", help="override the ReID weights recorded in the gallery file")
    s.add_argument("--out", default="search.png", help="rank list PNG (default search.png)")
    s.add_argument("--out-csv", metavar="CSV", help="results CSV: query, rank, image, distance, camera (rank 1 first)")
    add_pipeline_args(s)
    s.set_defaults(func=cmd_search)


def cmd_search(args: argparse.Namespace) -> int:
    from pamtri.pipeline.search import search_gallery
    rows = search_gallery(args.query, args.gallery, args.out, top=args.top, rerank=args.rerank,
                          part_weight=args.part_weight, out_csv=args.out_csv, pose_weights=args.pose_weights,
                          reid_weights=args.reid_weights, **pipeline_options(args))
    for q in args.query:
        print(q)
        for r in (r for r in rows if r["query"] == os.path.basename(q)):
            print(f"  {r['rank']:3d}. {r['image']}  distance {r['distance']:.4f}  camera {r['camera']}")
    print(f"rank list: {args.out}" + (f"; results: {args.out_csv}" if args.out_csv else ""))
    return 0
