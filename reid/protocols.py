"""Evaluation protocols: query against gallery (``data_set_metrics``), and VehicleID's gallery draws.

VehicleID: features of every test image once, then ``data.draws`` gallery draws. Each draw
(``pamtri.data.readers.gallery_draws``, seed ``data.draw_seed``) puts one image per vehicle, chosen at random,
in the gallery and every other image in the queries; it is evaluated without the same-camera rule (VehicleID
has no cameras). The summary holds the mean over the draws of every metric and, beside mAP, rank-1 and rank-5,
their population standard deviation (``<metric>_std``), with each draw's values.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from torch.utils.data import DataLoader

from pamtri.common.errors import ConfigError
from pamtri.data.readers import check_format, gallery_draws, read_split, resolve_test_size
from pamtri.data.records import Record

from .config import DataConfig, EvalConfig
from .evaluate import (
    eval_loader,
    eval_loaders,
    extract_features,
    metrics_and_distances,
    model_metrics,
    read_eval_records,
)
from .model import ReIDNet
from .pose_inputs import cache_weights_sha256

DRAW_METRICS = ("mAP", "rank1", "rank5")


def vehicleid_loader(data: DataConfig, model_cfg, batch_size: int, root: str) -> DataLoader:
    """A test-time loader of every image of the VehicleID test list of ``data.test_size`` (pose channels from
    ``data.gallery_cache``, a cache of the test split, when the config reads caches)."""
    records = read_split(root, "test", "vehicleid", check_images=True, test_size=data.test_size or None)
    return eval_loader(records, data, model_cfg, batch_size, data.gallery_cache)


def summarise_draws(results: list[dict]) -> dict:
    """Mean over the draws of every number in ``results`` (and of the CMC curve), the std of DRAW_METRICS, the
    draws' own DRAW_METRICS; the counts of the first draw."""
    out = dict(results[0])
    for key, value in results[0].items():
        if isinstance(value, float):
            out[key] = float(np.mean([r[key] for r in results]))
    out["cmc"] = [float(v) for v in np.mean([r["cmc"] for r in results], axis=0)]
    for key in DRAW_METRICS:
        out[f"{key}_std"] = float(np.std([r[key] for r in results]))
    out["draws"] = [{k: r[k] for k in DRAW_METRICS} for r in results]
    return out


def vehicleid_metrics(model: ReIDNet, loader: DataLoader, data: DataConfig, cfg: EvalConfig, device: torch.device,
                       dtype: torch.dtype | None = None) -> tuple[dict, np.ndarray, list[Record], list[Record]]:
    """(summary over the draws, rank-list distances of the first draw (K, G) (``metrics_and_distances``), its query
    records, its gallery records)."""
    records = loader.dataset.records
    features = extract_features(model, loader, device, dtype, "test", cfg.flip_feature)
    cfg = replace(cfg, ignore_cameras=True)
    results, first = [], None
    for q, g in gallery_draws(records, data.draws, data.draw_seed):
        res, dist = metrics_and_distances(features.subset(q), features.subset(g), cfg)
        results.append(res)
        if first is None:
            first = (res["_first_rank"], dist, [records[i] for i in q], [records[i] for i in g])
    summary = summarise_draws(results)
    summary.update({"protocol": "vehicleid", "num_draws": data.draws, "draw_seed": data.draw_seed,
                    "_first_rank": first[0]})
    return summary, first[1], first[2], first[3]


def data_set_metrics(model: ReIDNet, data: DataConfig, cfg: EvalConfig, device: torch.device,
                      dtype: torch.dtype | None, root: str, pose_weights_sha256: str | None = None,
                      weights: str = "") -> tuple[dict, np.ndarray, list[Record], list[Record]]:
    """Evaluate ``model`` on the data set at ``root`` under its protocol (VehicleID: the draws; any other: query
    against gallery). Returns (summary, rank-list distances (K, G) of ``metrics_and_distances``, query records,
    gallery records) of the (first) draw.

    ``pose_weights_sha256``: the pose weights the model was trained with; pose caches built with others are
    refused (``weights`` names the checkpoint in that message).
    """
    vehicleid = check_format(data.eval_format, root) == "vehicleid"
    if vehicleid:
        loaders = (vehicleid_loader(data, model.cfg, cfg.batch_size, root),)
    else:
        query, gallery = read_eval_records(data, root, cameras=not cfg.ignore_cameras)
        loaders = eval_loaders(query, gallery, data, model.cfg, cfg.batch_size)
    eval_with = cache_weights_sha256(loaders[0].dataset.pose)
    if pose_weights_sha256 and eval_with and pose_weights_sha256 != eval_with:
        raise ConfigError(f"{data.query_cache or data.gallery_cache}: this pose cache was built with other pose "
                          f"weights than the ones {weights} was trained with; rebuild the query/gallery caches with "
                          "that pose checkpoint")
    if vehicleid:
        res, dist, query, gallery = vehicleid_metrics(model, loaders[0], data, cfg, device, dtype)
    else:
        res, dist = model_metrics(model, *loaders, cfg, device, dtype)
    res.update({"ignore_cameras": cfg.ignore_cameras or vehicleid,
                "test_size": resolve_test_size(root, data.eval_format, data.test_size or None)})
    return res, dist, query, gallery
