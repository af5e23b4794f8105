"""``pamtri pose``: train the keypoint estimator, predict keypoints/heatmaps/segments, evaluate PCK."""
from __future__ import annotations

import argparse
import json
import logging
import sys

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    from pamtri.pipeline.cli import add_config_args
    parser = subparsers.add_parser("pose", help="the pose stage: train, predict, eval (36 vehicle keypoints)",
                                   description="Stage 1 of PAMTRI: HRNet vehicle keypoint estimation.")
    sub = parser.add_subparsers(dest="pose_command", metavar="SUBCOMMAND")
    sub.required = True

    train = sub.add_parser("train", help="train a pose model from a config",
                           description="Train HRNet on reference pose CSV sets and/or synthetic sets. Writes "
                                       "RUN_DIR/{config.yaml, metrics.csv, last.pt, best.pt}.")
    add_config_args(train, printable=True)
    train.add_argument("--out", metavar="RUN_DIR", help="run folder (default runs/pose/<config name>)")
    train.add_argument("--resume", action="store_true",
                       help="continue RUN_DIR/last.pt exactly (its stored config; --set may still override)")
    train.set_defaults(func=cmd_pose_train)

    pred = sub.add_parser("predict", help="predict keypoints, heatmaps and segments for images",
                          description="Batched inference with flip test. Writes OUT/keypoints.csv (the "
                                      "reference ReID-label layout), OUT/poses.npz (names, image sizes, "
                                      "keypoints (N,36,3) in original pixels + confidence, heatmaps (N,36,h,w) "
                                      "float16) and optionally a visualisation grid.")
    pred.add_argument("--weights", required=True, metavar="PT", help="pamtri pose checkpoint (best.pt / last.pt), "
                      "or an official PoseEstNet file together with --model")
    pred.add_argument("--images", required=True, metavar="DIR|LIST", help="image folder or a file listing images")
    pred.add_argument("--out", required=True, metavar="OUT", help="output folder")
    _inference_args(pred)
    pred.add_argument("--no-heatmaps", action="store_true", help="do not store heatmaps in poses.npz")
    pred.add_argument("--vis", type=int, default=0, metavar="N", help="also draw the first N images to vis.png")
    pred.set_defaults(func=cmd_pose_predict)

    ev = sub.add_parser("eval", help="PCK of a pose model on a labelled split (paper Table 5 layout)",
                        description="Prints Wheel, Fender, Back, Front, Back windshield, Front windshield, Mean, "
                                    "Mean@0.1 (PCK: a visible keypoint is correct within threshold x 0.25 x the "
                                    "diagonal of its image's keypoint box) and writes OUT/pck.json, "
                                    "OUT/pck_curve.png, OUT/predictions.npz.")
    ev.add_argument("--weights", required=True, metavar="PT")
    ev.add_argument("--data", required=True, metavar="ROOT",
                    help="data set root with pose_label_<split>.csv and image_<split>/")
    ev.add_argument("--split", default="test")
    ev.add_argument("--format", dest="fmt", choices=("pose_csv", "synthetic"), default="pose_csv")
    ev.add_argument("--legacy-pck", action="store_true",
                    help="also print the reference code's PCK formula (one constant pixel threshold, unweighted "
                         "keypoint means), labelled as such")
    ev.add_argument("--out", metavar="DIR", help="output folder (default: beside the weights, eval_<split>)")
    ev.add_argument("--vis", type=int, default=0, metavar="N", help="also draw N samples (GT | prediction) to vis.png")
    _inference_args(ev)
    ev.set_defaults(func=cmd_pose_eval)


def _inference_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", metavar="NAME", help="HRNet name for weights without a stored config (e.g. hrnet_w32)")
    p.add_argument("--batch-size", type=int, default=None, metavar="N")
    p.add_argument("--no-flip", action="store_true", help="disable the flip test")
    p.add_argument("--decode", choices=("dark", "reference"), default=None, help="peak decoding (default: config)")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto")
    p.add_argument("--workers", type=int, default=2, metavar="N", help="image loading processes")


def _predictor(args: argparse.Namespace):
    """(PosePredictor, its config) from --weights and the inference options."""
    from pamtri.pose.predict_images import load_predictor
    return load_predictor(args.weights, args.model, decode=args.decode, batch_size=args.batch_size,
                          device=args.device, precision=args.precision, flip_test=not args.no_flip)


def _default_out(config: str | None) -> str:
    import os
    name = os.path.splitext(os.path.basename(config))[0] if config else "default"
    return os.path.join("runs", "pose", name)


def cmd_pose_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pamtri.common.config import config_yaml, load_config, read_yaml
    from pamtri.common.errors import PamtriError
    from pamtri.pose.config import PoseConfig

    out = args.out or _default_out(args.config)
    if args.resume:
        saved = Path(out) / "config.yaml"
        if not saved.is_file():
            raise PamtriError(f"{out}: nothing to resume (no config.yaml; pass the run folder with --out)")
        if args.config:
            log.warning("--resume uses %s; --config %s is ignored", saved, args.config)
        cfg = load_config(PoseConfig, None, args.overrides, stored=read_yaml(saved), stored_source=str(saved))
    else:
        cfg = load_config(PoseConfig, args.config, args.overrides)
    if args.print_config:
        sys.stdout.write(config_yaml(cfg))
        return 0
    from pamtri.pose.train import train
    row = train(cfg, out, resume=args.resume)
    if row:
        print(json.dumps({"run": str(out), **row}))
    return 0


def cmd_pose_predict(args: argparse.Namespace) -> int:
    from pamtri.pose.predict_images import predict_images
    predictor, cfg = _predictor(args)
    n, paths = predict_images(predictor, args.images, args.out, batch_size=cfg.eval.batch_size,
                              workers=args.workers, heatmaps=not args.no_heatmaps, vis=args.vis)
    print(f"{n} images -> {paths[0]}, {paths[1]}")
    return 0


def cmd_pose_eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pamtri.pose.evaluate import split_pck_report
    from pamtri.pose.metrics import format_table

    predictor, cfg = _predictor(args)
    out = Path(args.out) if args.out else Path(args.weights).parent / f"eval_{args.split}"
    report, paths = split_pck_report(predictor, cfg, args.data, args.split, args.fmt, out, num_workers=args.workers,
                                   legacy=args.legacy_pck, vis=args.vis)
    flip = "flip test" if predictor.flip_test else "no flip test"
    print(format_table(report["table"], f"PCK (%) on {args.data} [{args.split}], {report['n_images']} images, "
                                        f"{flip}, {predictor.codec.decode_method} decoding"))
    if args.legacy_pck:
        leg = report["legacy"]
        print(format_table(leg, f"Legacy PCK (%) - the reference code's formula, NOT the paper's definition: "
                                f"one constant threshold of {leg['threshold_px']:.2f} px, unweighted keypoint "
                                f"means, Mean@0.1 at 0.11"))
    print("wrote " + ", ".join(str(p) for p in paths), file=sys.stderr)
    return 0
