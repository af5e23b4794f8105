"""``pamtri pose``: train the keypoint estimator, predict keypoints/heatmaps/segments, evaluate PCK."""
from __future__ import annotations

import argparse
import json
import sys


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
    train.set_defaults(func=run_train)

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
    pred.set_defaults(func=run_predict)

    ev = sub.add_parser("eval", help="PCK of a pose model on a labelled split (paper Table 5 layout)",
                        description="Prints Wheel, Fender, Back, Front, Back windshield, Front windshield, Mean, "
                                    "Mean@0.1 (PCK of SPEC section 7) and writes OUT/pck.json, "
                                    "OUT/pck_curve.png, OUT/predictions.npz.")
    ev.add_argument("--weights", required=True, metavar="PT")
    ev.add_argument("--data", required=True, metavar="ROOT",
                    help="data set root with pose_label_<split>.csv and image_<split>/")
    ev.add_argument("--split", default="test")
    ev.add_argument("--format", dest="fmt", choices=("pose_csv", "synthetic"), default="pose_csv")
    ev.add_argument("--legacy-pck", action="store_true",
                    help="also print the reference code's PCK formula (SPEC section 8), labelled as such")
    ev.add_argument("--out", metavar="DIR", help="output folder (default: beside the weights, eval_<split>)")
    ev.add_argument("--vis", type=int, default=0, metavar="N", help="also draw N samples (GT | prediction) to vis.png")
    _inference_args(ev)
    ev.set_defaults(func=run_eval)


def _inference_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", metavar="NAME", help="HRNet name for weights without a stored config (e.g. hrnet_w32)")
    p.add_argument("--batch-size", type=int, default=None, metavar="N")
    p.add_argument("--no-flip", action="store_true", help="disable the flip test")
    p.add_argument("--decode", choices=("dark", "reference"), default=None, help="peak decoding (default: config)")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto")
    p.add_argument("--workers", type=int, default=2, metavar="N", help="image loading processes")


def _predictor(args):
    from dataclasses import replace

    from pamtri.pose.predict import PosePredictor, load_pose_model
    model, cfg, codec = load_pose_model(args.weights, args.model)
    if args.decode:
        codec = replace(codec, decode_method=args.decode)
    if args.batch_size:
        cfg.eval.batch_size = args.batch_size
    predictor = PosePredictor.from_config(model, cfg, codec, device=args.device, precision=args.precision,
                                          flip_test=not args.no_flip)
    return predictor, cfg


def _default_out(config: str | None) -> str:
    import os
    name = os.path.splitext(os.path.basename(config))[0] if config else "default"
    return os.path.join("runs", "pose", name)


def run_train(args: argparse.Namespace) -> int:
    import logging
    from pathlib import Path

    from pamtri.common.config import config_yaml, deep_update, from_dict, load_config, parse_overrides, read_yaml
    from pamtri.common.errors import PamtriError
    from pamtri.pose.config import PoseConfig

    out = args.out or _default_out(args.config)
    if args.resume:
        saved = Path(out) / "config.yaml"
        if not saved.is_file():
            raise PamtriError(f"{out}: nothing to resume (no config.yaml; pass the run folder with --out)")
        data = read_yaml(saved)
        if args.config:
            logging.getLogger(__name__).warning("--resume uses %s; --config %s is ignored", saved, args.config)
        deep_update(data, parse_overrides(args.overrides))
        cfg = from_dict(PoseConfig, data, f"{saved} (with --set overrides)")
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


def _write_vis(path, images, gts, preds) -> None:
    from pamtri.pose.visualize import pose_grid, save_image
    save_image(pose_grid(images, gts, preds), path)


def run_predict(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    import numpy as np
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from pamtri.common.atomic import atomic_write
    from pamtri.pose.dataset import read_image
    from pamtri.pose.labels import write_reid_csv
    from pamtri.pose.predict import list_images
    from pamtri.pose.records import UNLABELLED, Record, parse_veri_name

    predictor, cfg = _predictor(args)
    base, names = list_images(args.images)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    loader = DataLoader(_ImageList(base, names), batch_size=cfg.eval.batch_size, num_workers=args.workers,
                        collate_fn=_as_list)
    w, h = predictor.codec.heatmap_size
    keypoints = np.zeros((len(names), 36, 3), np.float32)
    sizes = np.zeros((len(names), 2), np.int32)
    heat = None
    tmp_heat = out / ".heatmaps.tmp.npy"
    if not args.no_heatmaps:
        heat = np.lib.format.open_memmap(tmp_heat, mode="w+", dtype=np.float16, shape=(len(names), 36, h, w))
    i = 0
    try:
        for batch in tqdm(loader, desc="predict", unit="batch"):
            images = [im for _, im in batch]
            kps, hms = predictor.predict_arrays(images)
            n = len(images)
            keypoints[i:i + n] = kps
            sizes[i:i + n] = [(im.shape[1], im.shape[0]) for im in images]
            if heat is not None:
                heat[i:i + n] = hms.astype(np.float16)
            i += n
        records = []
        for name, kps, (wd, ht) in zip(names, keypoints, sizes):
            ids = parse_veri_name(name)
            records.append(Record(path=name, vehicle_id=ids[0] if ids else UNLABELLED, keypoints=kps,
                                  width=int(wd), height=int(ht)))
        write_reid_csv(records, out / "keypoints.csv")
        with atomic_write(out / "poses.npz", "wb") as fh:
            arrays = {"names": np.asarray(names), "image_sizes": sizes, "keypoints": keypoints}
            if heat is not None:
                heat.flush()
                arrays["heatmaps"] = heat
            np.savez(fh, **arrays)
    finally:
        del heat
        if tmp_heat.exists():
            os.unlink(tmp_heat)
    if args.vis:
        n = min(args.vis, len(names))
        _write_vis(out / "vis.png", [read_image(str(base / nm)) for nm in names[:n]], None, keypoints[:n])
    print(f"{len(names)} images -> {out / 'keypoints.csv'}, {out / 'poses.npz'}")
    return 0


def _as_list(items):
    return items


class _ImageList:
    """Dataset of (name, uint8 RGB image) for the predict command."""

    def __init__(self, base, names):
        self.base, self.names = base, names

    def __len__(self):
        return len(self.names)

    def __getitem__(self, i):
        from pamtri.pose.dataset import read_image
        return self.names[i], read_image(str(self.base / self.names[i]))


def run_eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pamtri.pose.config import DataSource
    from pamtri.pose.dataset import read_image
    from pamtri.pose.evaluate import evaluate, save_report
    from pamtri.pose.metrics import format_table

    predictor, cfg = _predictor(args)
    source = DataSource(root=args.data, format=args.fmt, split=args.split)
    report = evaluate(predictor, cfg, [source], num_workers=args.workers, legacy=args.legacy_pck,
                      threshold=cfg.eval.pck_threshold)
    out = Path(args.out) if args.out else Path(args.weights).parent / f"eval_{args.split}"
    paths = save_report(report, out)
    flip = "flip test" if predictor.flip_test else "no flip test"
    print(format_table(report["table"], f"PCK (%) on {args.data} [{args.split}], {report['n_images']} images, "
                                        f"{flip}, {predictor.codec.decode_method} decoding"))
    if args.legacy_pck:
        leg = report["legacy"]
        print(format_table(leg, f"Legacy PCK (%) - the reference code's formula, NOT the paper's definition: "
                                f"one constant threshold of {leg['threshold_px']:.2f} px, unweighted keypoint "
                                f"means, Mean@0.1 at 0.11"))
    if args.vis:
        n = min(args.vis, report["n_images"])
        from pamtri.pose.dataset import read_source
        recs = read_source(source)[:n]
        _write_vis(out / "vis.png", [read_image(r.path) for r in recs], report["ground_truth"][:n],
                   report["predictions"][:n])
        paths.append(out / "vis.png")
    print("wrote " + ", ".join(str(p) for p in paths), file=sys.stderr)
    return 0
