"""``pamtri reid train`` and ``pamtri reid eval``: the ReID stage from the command line."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pamtri.pipeline.cli import add_config_args


def register(subparsers) -> None:
    p = subparsers.add_parser("reid", help="train and evaluate the ReID network (PAMTRI / StRDAN)")
    sub = p.add_subparsers(dest="reid_command", metavar="ACTION")
    sub.required = True

    t = sub.add_parser("train", help="train a ReID network from an experiment YAML",
                       description="Train the ReID network of an experiment YAML (configs/reid/*.yaml).")
    add_config_args(t, required=True, printable=True)
    t.add_argument("--out", metavar="RUN", help="run folder (default runs/reid/<config name>)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    t.set_defaults(func=cmd_reid_train)

    e = sub.add_parser("eval", help="evaluate ReID weights on a data set's query and test splits",
                       description="Evaluate weights (a pamtri run's best.pt / last.pt, or an official PAMTRI "
                                   "MultiTaskNet checkpoint) on the query and test splits of a data set.")
    e.add_argument("--weights", required=True, metavar="W", help="checkpoint file")
    e.add_argument("--data", required=True, metavar="ROOT", help="data set root with query and test splits")
    e.add_argument("--format", default="auto", help="data set format (default: detect)")
    e.add_argument("--test-size", type=int, metavar="N",
                   help="VehicleID 800|1600|2400 (10 gallery draws, mean and std) or VERI-Wild 3000|5000|10000 "
                        "test set (default: data.test_size, else the smallest present)")
    e.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking (k1=20, k2=6, lambda=0.3)")
    e.add_argument("--ignore-cameras", action="store_true",
                   help="keep same-vehicle same-camera gallery images (data sets without camera ids)")
    e.add_argument("--out", metavar="DIR", help="output folder (default: <weights folder>/eval)")
    e.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: the checkpoint's, else auto)")
    add_config_args(e)
    e.set_defaults(func=cmd_reid_eval)


def cmd_reid_train(args: argparse.Namespace) -> int:
    from pamtri.common.config import config_yaml, load_config
    from pamtri.reid.config import ReIDConfig
    cfg = load_config(ReIDConfig, args.config, args.overrides)
    if args.print_config:
        sys.stdout.write(config_yaml(cfg))
        return 0
    from pamtri.reid.train import train
    out = Path(args.out) if args.out else Path("runs") / "reid" / Path(args.config).stem
    result = train(cfg, out, resume=args.resume)
    from pamtri.data.readers import write_attribute_names
    write_attribute_names(out / "attributes.json", [(s.root, s.format) for s in cfg.data.train])
    print(f"run folder: {out}")
    if result["best_epoch"] >= 0:
        print(f"best mAP {100 * result['best_mAP']:.2f}% at epoch {result['best_epoch']}")
    return 0


def cmd_reid_eval(args: argparse.Namespace) -> int:
    from pamtri.reid.evaluate_checkpoint import checkpoint_metrics
    result = checkpoint_metrics(args.weights, args.data, args.format, args.out, config=args.config,
                                 overrides=args.overrides, rerank=args.rerank, ignore_cameras=args.ignore_cameras,
                                 device=args.device, test_size=args.test_size)
    res, k = result.metrics, result.topk_map

    def std(key: str) -> str:
        return f" +- {100 * res[key + '_std']:.2f}" if key + "_std" in res else ""
    lines = [f"queries       {res['num_valid_queries']} of {res['num_queries']} with a match in "
             f"{result.gallery_size} gallery images" + (" (re-ranked)" if res["rerank"] else "")]
    if res.get("protocol") == "vehicleid":
        lines.append(f"protocol      VehicleID test size {res['test_size']}: mean over {res['num_draws']} gallery "
                     f"draws (seed {res['draw_seed']}), no camera rule")
    lines.append(f"mAP           {100 * res['mAP']:6.2f}%{std('mAP')}")
    lines += [f"rank-{r:<8d} {100 * res[f'rank{r}']:6.2f}%{std(f'rank{r}')}" for r in (1, 5, 10, 20)
              if f"rank{r}" in res]
    lines += [f"rank-{k} mAP  {100 * res[f'mAP@{k}']:6.2f}%", f"mINP          {100 * res['mINP']:6.2f}%"]
    if "cross_view_mAP" in res:  # eval.cross_view: true matches that share no face with their query only
        lines.append(f"cross-view    mAP {100 * res['cross_view_mAP']:6.2f}%, rank-1 "
                     f"{100 * res['cross_view_rank1']:6.2f}% ({res['cross_view_queries']} queries with an other-view "
                     "match)")
    for name, key in (("colour acc", "color_acc"), ("type acc", "type_acc")):
        if res.get(key) is not None:
            lines.append(f"{name:<13} {100 * res[key]:6.2f}%")
    lines.append("written       " + ", ".join(str(p) for p in result.paths))
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
