"""``pamtri cache``: build, verify, import and export heatmap/keypoint caches."""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "cache", help="precompute pose heatmaps/keypoints for a data set split (memory-mapped cache)",
        description="Heatmap/keypoint caches: one per (data set split, pose weights), memory-mapped, resumable "
                    "(a killed build finishes where it stopped when run again), checksummed.")
    sub = parser.add_subparsers(dest="cache_command", metavar="SUBCOMMAND")
    sub.required = True

    build = sub.add_parser("build", help="run the pose model over a split and store its output",
                           description="Run the pose stage over a data set split (or an image folder/list) and "
                                       "store 36 x G x G image-frame heatmaps and 36x3 keypoints per image. Under "
                                       "`torchrun --nproc_per_node N` the ranks share the work.")
    build.add_argument("--pose-weights", required=True, help="pose checkpoint written by `pamtri pose train`")
    src = build.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", metavar="ROOT", help="data set folder (any supported format)")
    src.add_argument("--images", metavar="DIR|LIST", help="an image folder or a list file instead of --data")
    build.add_argument("--split", default="train", help="split of --data: train, query or test (default train)")
    build.add_argument("--format", dest="fmt", default="auto", help="data set format of --data (default: detect)")
    build.add_argument("--test-size", type=int, metavar="N",
                       help="VehicleID / VERI-Wild: the test set of --split query/test (default: the smallest)")
    build.add_argument("--out", required=True, help="cache folder to create or resume")
    build.add_argument("--grid", type=int, default=64, metavar="G",
                       help="image-frame heatmap grid, cells per side: the ReID config's data.heatmap_size "
                            "(default 64)")
    build.add_argument("--batch-size", type=int, default=32)
    build.add_argument("--chunk-size", type=int, default=256, help="images per atomically committed chunk")
    build.add_argument("--heatmap-dtype", choices=("uint8", "float16"), default="uint8")
    build.add_argument("--device", default="auto")
    build.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto")
    build.add_argument("--no-flip-test", action="store_true", help="skip the flip test (faster)")
    build.add_argument("--rebuild", action="store_true", help="discard what the folder holds and start over")
    build.set_defaults(func=cmd_cache_build)

    verify = sub.add_parser("verify", help="check every chunk of a cache against its checksum")
    verify.add_argument("cache", help="cache folder")
    verify.set_defaults(func=cmd_cache_verify)

    imp = sub.add_parser("import-legacy", help="convert the reference implementation's heatmap folders",
                         description="Convert `<root>/heatmap_<split>/<stem>/NN.jpg` (36 JPEGs per image) and "
                                     "the keypoints of a reference ReID label CSV into a cache.")
    imp.add_argument("--root", required=True, help="folder holding heatmap_<split>/ and segment_<split>/")
    imp.add_argument("--split", required=True)
    imp.add_argument("--labels", required=True, help="reference ReID label CSV with the keypoints of these images")
    imp.add_argument("--out", required=True, help="cache folder to create")
    imp.add_argument("--grid", type=int, default=64, metavar="G", help="as for build (default 64)")
    imp.add_argument("--rebuild", action="store_true")
    imp.set_defaults(func=cmd_cache_import_legacy)

    exp = sub.add_parser("export-legacy", help="write a cache in the reference implementation's folder layout",
                         description="Write heatmap_<split>/<stem>/NN.jpg, segment_<split>/<stem>/NN.jpg and "
                                     "label_<split>.csv under ROOT for users of the reference tools.")
    exp.add_argument("--cache", required=True)
    exp.add_argument("--root", required=True, help="output folder")
    exp.add_argument("--split", required=True)
    exp.add_argument("--image-root", required=True, help="folder with the images (for segment sizes)")
    exp.set_defaults(func=cmd_cache_export_legacy)


def cmd_cache_build(args: argparse.Namespace) -> int:
    from pamtri.data.images import read_image_list
    from pamtri.pipeline.cachebuild import build_cache, split_images
    if args.data:
        images = split_images(args.data, args.split, args.fmt, args.test_size)
    else:
        base, names = read_image_list(args.images)
        images = [str(base / n) for n in names]
    out = build_cache(args.pose_weights, images, args.out, grid=args.grid, batch_size=args.batch_size,
                      chunk_size=args.chunk_size, heatmap_dtype=args.heatmap_dtype, device=args.device,
                      precision=args.precision, flip_test=False if args.no_flip_test else None, rebuild=args.rebuild)
    print(f"cache ready: {out} ({len(images)} images)")
    return 0


def cmd_cache_verify(args: argparse.Namespace) -> int:
    from pamtri.common.errors import CheckpointError
    from pamtri.pose.cache import Cache
    cache = Cache(args.cache)
    bad = cache.verify()
    if bad:
        raise CheckpointError(f"{args.cache}: {len(bad)} chunk(s) do not match their checksums: {bad[:10]}; "
                              "run `pamtri cache build` with the same arguments to rebuild them")
    print(f"{args.cache}: {len(cache)} images, all {len(cache.manifest['chunks'])} chunks intact")
    return 0


def cmd_cache_import_legacy(args: argparse.Namespace) -> int:
    from pamtri.pipeline.cachebuild import import_legacy
    out = import_legacy(args.root, args.split, args.labels, args.out, grid=args.grid, rebuild=args.rebuild)
    print(f"imported into {out}")
    return 0


def cmd_cache_export_legacy(args: argparse.Namespace) -> int:
    from pamtri.pipeline.cachebuild import export_legacy
    n = export_legacy(args.cache, args.root, args.split, args.image_root)
    print(f"exported {n} images to {args.root}")
    return 0
