"""ReID weights on a data set's query and test splits -> metrics.json, cmc.png, ranklist.png (``pamtri reid eval``)."""
from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from pamtri.common.atomic import atomic_write_text
from pamtri.common.config import load_config, to_dict
from pamtri.common.device import autocast_dtype, pick_device
from pamtri.data.readers import write_attribute_names
from pamtri.data.records import Record

from .config import ReIDConfig
from .protocols import data_set_metrics
from .visualize import plot_cmc, rank_list_image, rank_list_queries
from .weights import load as load_reid


@dataclass
class CheckpointEval:
    """What ``checkpoint_metrics`` measured: ``metrics`` (the content of metrics.json), the gallery size, the K
    of the rank-K mAP, and the files written (metrics.json, cmc.png, ranklist.png)."""
    metrics: dict
    gallery_size: int
    topk_map: int
    paths: list[Path]


def checkpoint_config(ckpt: dict, model, config: str | os.PathLike | None = None,
                      overrides: Iterable[str] = ()) -> ReIDConfig:
    """The checkpoint's resolved config (or the defaults) with the model it holds, then ``config`` and ``--set``."""
    stored = dict(ckpt.get("config") or {})
    stored["model"] = to_dict(model.cfg)  # the model is the one the checkpoint holds
    return load_config(ReIDConfig, config, overrides, stored=stored, stored_source="checkpoint config")


def _write_results(out: Path, metrics: dict, dist: np.ndarray, query: list[Record], gallery: list[Record],
                   label: str, ignore_cameras: bool) -> list[Path]:
    """metrics.json, the CMC curve and the rank-list picture in ``out`` (``dist`` (K, G): the distances of the
    queries ``rank_list_queries(len(query))``); returns their paths."""

    query = [query[i] for i in rank_list_queries(len(query))]
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    plot_cmc(metrics["cmc"], out / "cmc.png", label=label)
    rank_list_image(dist, [r.path for r in query], [r.path for r in gallery], [r.vehicle_id for r in query],
                    [r.vehicle_id for r in gallery], [r.camera_id for r in query], [r.camera_id for r in gallery],
                    out / "ranklist.png", ignore_cameras=ignore_cameras)
    return [out / "metrics.json", out / "cmc.png", out / "ranklist.png"]


def checkpoint_metrics(weights: str | os.PathLike, root: str | os.PathLike, fmt: str = "auto",
                        out: str | os.PathLike | None = None, *, config: str | os.PathLike | None = None,
                        overrides: Iterable[str] = (), rerank: bool = False, ignore_cameras: bool = False,
                        device: str | None = None, test_size: int | None = None) -> CheckpointEval:
    """Evaluate ``weights`` (a pamtri checkpoint or an official MultiTaskNet file) on the query and test splits of
    ``root`` under the checkpoint's config (+ ``config`` + ``--set``); writes into ``out`` (default: <weights
    folder>/eval) with attributes.json (colour / type names). ``rerank`` / ``ignore_cameras`` switch those on over
    the config; ``device`` and ``test_size`` (VehicleID / VERI-Wild test set) None: the config's."""


    model, ckpt = load_reid(weights)
    cfg = checkpoint_config(ckpt, model, config, overrides)
    ev = replace(cfg.eval, rerank=rerank or cfg.eval.rerank, ignore_cameras=ignore_cameras or cfg.eval.ignore_cameras)
    data = replace(cfg.data, eval_root=str(root), eval_format=fmt,
                   test_size=cfg.data.test_size if test_size is None else test_size)
    device = pick_device(device or cfg.device)
    dtype = autocast_dtype(device, cfg.precision)
    model.to(device)
    metrics, dist, query, gallery = data_set_metrics(model, data, ev, device, dtype, str(root),
                                                      ckpt.get("pose_weights_sha256"), str(weights))
    metrics.pop("_first_rank", None)
    metrics.update({"weights": str(weights), "data": str(root), "rerank": ev.rerank, "metric": ev.metric})
    out = Path(out) if out else Path(weights).resolve().parent / "eval"
    paths = _write_results(out, metrics, dist, query, gallery, Path(weights).parent.name, metrics["ignore_cameras"])
    write_attribute_names(out / "attributes.json", [(str(root), fmt)])
    paths.append(out / "attributes.json")
    return CheckpointEval(metrics, len(gallery), ev.topk_map, paths)
