"""``pamtri embed`` and ``pamtri search``: two-stage inference on image files, nearest-neighbour search."""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    e = subparsers.add_parser(
        "embed", help="two-stage inference: images -> ReID embeddings (+ keypoints, colour, type)",
        description="Run the pose stage, then the ReID stage on the stacked channels, in batches without "
                    "intermediate files. Writes an .npz with names, paths, features (N, D), keypoints (N, 36, 3), "
                    "colour and type predictions, and the weights it used.")
    e.add_argument("--pose-weights", help="pose checkpoint (needed when the ReID model uses pose input)")
    e.add_argument("--reid-weights", required=True, help="ReID checkpoint")
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", metavar="DIR|LIST", help="image folder or a list file")
    src.add_argument("--data", metavar="ROOT", help="a data set split instead (any supported format)")
    e.add_argument("--split", default="test", help="split of --data: train, query or test (default test)")
    e.add_argument("--format", dest="fmt", default="auto", help="data set format of --data (default: detect)")
    e.add_argument("--test-size", type=int, metavar="N", help="VehicleID / VERI-Wild test set of --data")
    e.add_argument("--out", required=True, help="output .npz")
    _runtime_args(e)
    e.set_defaults(func=run_embed)

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
    _runtime_args(s)
    s.set_defaults(func=run_search)


def _runtime_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto")
    p.add_argument("--no-flip-test", action="store_true", help="skip the pose flip test (faster)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile both networks (off by default: on a 2-core CPU it compiled for 144 s and then "
                        "ran 4%% slower than eager, docs/perf.md; try it on a GPU)")


def _pipeline(args, pose_weights, reid_weights):
    from pamtri.pipeline.infer import Pipeline
    return Pipeline.from_weights(pose_weights, reid_weights, device=args.device, precision=args.precision,
                                 batch_size=args.batch_size, flip_test=False if args.no_flip_test else None,
                                 compile=args.compile)


def run_embed(args: argparse.Namespace) -> int:
    import io
    import os
    from pathlib import Path

    import numpy as np

    from pamtri.common.atomic import atomic_write_bytes
    from pamtri.data.images import read_image_list
    from pamtri.pipeline.cachebuild import split_images
    if args.data:
        base = Path(args.data)
        names = [os.path.relpath(p, base) for p in split_images(base, args.split, args.fmt, args.test_size)]
    else:
        base, names = read_image_list(args.images)
    pipe = _pipeline(args, args.pose_weights, args.reid_weights)
    out = pipe.embed([str(base / n) for n in names], progress=True)
    buf = io.BytesIO()
    np.savez(buf, names=np.asarray(names), paths=np.asarray([str((base / n).resolve()) for n in names]),
             pose_weights=np.asarray(str(args.pose_weights or "")), reid_weights=np.asarray(str(args.reid_weights)),
             **out)
    atomic_write_bytes(args.out, buf.getvalue())
    print(f"{len(names)} images embedded ({out['features'].shape[1]}-d) -> {args.out}")
    return 0


def run_search(args: argparse.Namespace) -> int:
    import numpy as np

    from pamtri.common.errors import DataError
    from pamtri.pipeline.search import draw_search, search
    try:
        gallery = dict(np.load(args.gallery, allow_pickle=False))
    except (OSError, ValueError) as exc:
        raise DataError(args.gallery, f"cannot read gallery file ({exc}); write it with `pamtri embed`") from None
    missing = [k for k in ("features", "paths", "reid_weights") if k not in gallery]
    if missing:
        raise DataError(args.gallery, f"not a `pamtri embed` file (missing {', '.join(missing)})")
    pose_w = args.pose_weights or str(gallery["pose_weights"]) or None
    reid_w = args.reid_weights or str(gallery["reid_weights"])
    pipe = _pipeline(args, pose_w, reid_w)
    query = pipe.embed(args.query)
    order, dist = search(query["features"], gallery["features"], args.top, rerank=args.rerank)
    for qi, q in enumerate(args.query):
        print(q)
        for rank, gi in enumerate(order[qi], start=1):
            print(f"  {rank:3d}. {gallery['paths'][gi]}  distance {dist[qi, gi]:.4f}")
    draw_search(args.query, [gallery["paths"][i] for i in range(len(gallery["paths"]))], order, dist, args.out)
    print(f"rank list: {args.out}")
    return 0
