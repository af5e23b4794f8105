"""``pamtri reid train`` and ``pamtri reid eval``: the ReID stage from the command line."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from pamtri.pipeline.cli import add_config_args

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser("reid", help="train and evaluate the ReID network (PAMTRI / StRDAN)")
    sub = p.add_subparsers(dest="reid_command", metavar="ACTION")
    sub.required = True

    t = sub.add_parser("train", help="train a ReID network from an experiment YAML",
                       description="Train the ReID network of an experiment YAML (configs/reid/*.yaml).")
    add_config_args(t, required=True, printable=True)
    t.add_argument("--out", metavar="RUN", help="run folder (default runs/reid/<config name>)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    t.set_defaults(func=_train)

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
    e.set_defaults(func=_eval)


def _train(args: argparse.Namespace) -> int:
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


def _eval_config(ckpt: dict, model, args: argparse.Namespace):
    """The checkpoint's resolved config (or defaults), then --config and --set on top."""
    from pamtri.common.config import deep_update, from_dict, parse_overrides, read_yaml, to_dict
    from pamtri.reid.config import ReIDConfig
    data = dict(ckpt.get("config") or {})
    data["model"] = to_dict(model.cfg)  # the model is the one the checkpoint holds
    if args.config:
        deep_update(data, read_yaml(args.config))
    deep_update(data, parse_overrides(args.overrides))
    return from_dict(ReIDConfig, data, "checkpoint config" + (f" + {args.config}" if args.config else ""))


def _eval(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from pamtri.common.atomic import atomic_write_text
    from pamtri.common.runtime import autocast_dtype, pick_device
    from pamtri.data.readers import write_attribute_names
    from pamtri.reid.model import load_reid_weights
    from pamtri.reid.protocols import evaluate_data_set
    from pamtri.reid.visualize import plot_cmc, rank_list_image

    model, ckpt = load_reid_weights(args.weights)
    cfg = _eval_config(ckpt, model, args)
    ev = replace(cfg.eval, rerank=args.rerank or cfg.eval.rerank,
                 ignore_cameras=args.ignore_cameras or cfg.eval.ignore_cameras)
    data = replace(cfg.data, eval_root=args.data, eval_format=args.format,
                   test_size=cfg.data.test_size if args.test_size is None else args.test_size)
    device = pick_device(args.device or cfg.device)
    dtype = autocast_dtype(device, cfg.precision)
    model.to(device)
    res, dist, query, gallery = evaluate_data_set(model, data, ev, device, dtype, args.data,
                                                  ckpt.get("pose_weights_sha256"), args.weights)
    res.pop("_first_rank", None)
    out = Path(args.out) if args.out else Path(args.weights).resolve().parent / "eval"
    out.mkdir(parents=True, exist_ok=True)
    res.update({"weights": str(args.weights), "data": str(args.data), "rerank": ev.rerank,
                "metric": ev.metric})
    atomic_write_text(out / "metrics.json", json.dumps(res, indent=2) + "\n")
    write_attribute_names(out / "attributes.json", [(args.data, args.format)])
    plot_cmc(res["cmc"], out / "cmc.png", label=Path(args.weights).parent.name)
    rank_list_image(dist, [r.path for r in query], [r.path for r in gallery], [r.vehicle_id for r in query],
                    [r.vehicle_id for r in gallery], [r.camera_id for r in query], [r.camera_id for r in gallery],
                    out / "ranklist.png", ignore_cameras=res["ignore_cameras"])
    k = ev.topk_map

    def std(key: str) -> str:
        return f" +- {100 * res[key + '_std']:.2f}" if key + "_std" in res else ""
    lines = [f"queries       {res['num_valid_queries']} of {res['num_queries']} with a match in {len(gallery)} "
             "gallery images" + (" (re-ranked)" if ev.rerank else "")]
    if res.get("protocol") == "vehicleid":
        lines.append(f"protocol      VehicleID test size {res['test_size']}: mean over {res['num_draws']} gallery "
                     f"draws (seed {res['draw_seed']}), no camera rule")
    lines.append(f"mAP           {100 * res['mAP']:6.2f}%{std('mAP')}")
    lines += [f"rank-{r:<8d} {100 * res[f'rank{r}']:6.2f}%{std(f'rank{r}')}" for r in (1, 5, 10, 20)
              if f"rank{r}" in res]
    lines += [f"rank-{k} mAP  {100 * res[f'mAP@{k}']:6.2f}%", f"mINP          {100 * res['mINP']:6.2f}%"]
    for name, key in (("colour acc", "color_acc"), ("type acc", "type_acc")):
        if res.get(key) is not None:
            lines.append(f"{name:<13} {100 * res[key]:6.2f}%")
    lines.append(f"written       {out / 'metrics.json'}, {out / 'cmc.png'}, {out / 'ranklist.png'}")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
