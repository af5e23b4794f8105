"""``pamtri index build|add|search``: a FAISS gallery index of ``pamtri embed`` features with SQLite metadata."""
from __future__ import annotations

import argparse

from pamtri.pipeline.cli import add_part_weight_arg, add_pipeline_args, pipeline_options


def register(subparsers) -> None:
    p = subparsers.add_parser("index", help="a growing gallery: FAISS index of embed features + SQLite metadata",
                              description="Index `pamtri embed` features (FAISS; metadata in IDX.sqlite beside "
                                          "it), add to it incrementally and atomically, and search it.")
    sub = p.add_subparsers(dest="index_command", metavar="ACTION")
    sub.required = True

    b = sub.add_parser("build", help="a new index of embed files")
    b.add_argument("--features", required=True, nargs="+", metavar="F.npz", help="`pamtri embed` outputs")
    b.add_argument("--out", required=True, metavar="IDX", help="index file (metadata goes to IDX.sqlite)")
    b.add_argument("--kind", choices=("flat", "ivf", "ivfpq"), default="flat",
                   help="flat: exact; ivf / ivfpq: approximate, quantiser trained on a sample (default flat)")
    b.add_argument("--metric", choices=("cosine", "euclidean"), default="cosine")
    b.add_argument("--wait", type=float, default=60.0, metavar="S",
                   help="seconds to wait for another writer of this index before refusing (default 60)")
    b.set_defaults(func=cmd_index_build)

    a = sub.add_parser("add", help="add embed files to an index (atomic; same model only)")
    a.add_argument("index", metavar="IDX")
    a.add_argument("--features", required=True, nargs="+", metavar="F.npz")
    a.add_argument("--skip-existing", action="store_true", help="skip images already indexed (default: refuse)")
    a.add_argument("--wait", type=float, default=60.0, metavar="S",
                   help="seconds to wait for another writer of this index before refusing (default 60)")
    a.set_defaults(func=cmd_index_add)

    s = sub.add_parser("search", help="the indexed images nearest to queries")
    s.add_argument("index", metavar="IDX")
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument("--features", metavar="Q.npz", help="query features written by `pamtri embed`")
    src.add_argument("--images", nargs="+", metavar="IMG", help="query images (embedded first)")
    s.add_argument("--top", type=int, default=10, metavar="K")
    s.add_argument("--exclude-same-camera", action="store_true", help="leave out gallery images of the query's camera")
    s.add_argument("--rerank", action="store_true",
                   help="k-reciprocal re-ranking (k1=20, k2=6, lambda=0.3) from the index's neighbour lists")
    s.add_argument("--rerank-top", type=int, default=100, metavar="L",
                   help="with --rerank: how many nearest of each query are re-ranked (default 100)")
    add_part_weight_arg(s)
    s.add_argument("--out", metavar="CSV", help="results CSV: query, rank, image, distance, camera (rank 1 first)")
    s.add_argument("--png", metavar="PNG", help="rank list picture (needs the image files)")
    s.add_argument("--pose-weights", help="with --images: override the pose weights the index records")
    s.add_argument("--reid-weights", help="with --images: override the ReID weights the index records")
    add_pipeline_args(s)
    s.set_defaults(func=cmd_index_search)


def cmd_index_build(args: argparse.Namespace) -> int:
    from pamtri.pipeline.index import build_index
    idx = build_index(args.features, args.out, args.kind, args.metric, wait=args.wait)
    params = ", ".join(f"{k}={v}" for k, v in idx.info["params"].items())
    print(f"{len(idx)} vectors ({idx.info['dim']}-d, {args.metric}, {args.kind}{': ' + params if params else ''})"
          f" -> {args.out}")
    idx.close()
    return 0


def cmd_index_add(args: argparse.Namespace) -> int:
    from pamtri.pipeline.index import add_to_index
    added, skipped = add_to_index(args.index, args.features, skip_existing=args.skip_existing, wait=args.wait)
    print(f"{added} vectors added to {args.index}" + (f", {skipped} already there skipped" if skipped else ""))
    return 0


def cmd_index_search(args: argparse.Namespace) -> int:
    from pamtri.pipeline.index import printable
    from pamtri.pipeline.search import search_to_csv
    rows = search_to_csv(args.index, args.features, args.images, top=args.top,
                         exclude_same_camera=args.exclude_same_camera, rerank=args.rerank,
                         rerank_top=args.rerank_top, part_weight=args.part_weight, out=args.out, png=args.png,
                         pose_weights=args.pose_weights, reid_weights=args.reid_weights, **pipeline_options(args))
    if args.out is None:
        for r in rows:
            print(f"{printable(r['query'])}  {r['rank']:3d}. {printable(r['image'])}  "
                  f"distance {r['distance']:.4f}  camera {r['camera']}")
    else:
        print(f"{len(rows)} results -> {args.out}" + (f"; rank list: {args.png}" if args.png else ""))
    return 0
