"""Test-time pipeline: features of query and gallery, distances (optionally re-ranked), metrics, attributes."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from pamtri.common.device import autocast
from pamtri.common.errors import ConfigError, DataError
from pamtri.data.readers import check_format, gallery_draws, missing_cameras, queries_without_gallery, read_split
from pamtri.data.readers.cityflow import read_tracks
from pamtri.data.records import Record
from pamtri.pose.keypoints import NUM_KEYPOINTS

from .config import DataConfig, EvalConfig
from .dataset import ReIDDataset, side_information
from .distance import covisible_distance, pairwise_distance, part_scale, split_embedding
from .metrics import (
    attribute_accuracy,
    cross_view_faces,
    metrics_from_features,
    metrics_from_ranked_lists,
    ranked_rows,
)
from .model import ReIDNet
from .pose_inputs import cache_weights_sha256, make_pose_source
from .rerank import rerank_neighbours
from .test_time import alpha_query_expansion, mirror_inputs, track_average
from .transforms import make_builder
from .visualize import rank_list_queries
from .vit import pose_view

log = logging.getLogger(__name__)


@dataclass
class Features:
    """Features and labels of one split: features (N, D) float32, labels (N,) int64, attribute logits or None,
    image file names (N,)."""
    features: torch.Tensor
    pids: np.ndarray
    camids: np.ndarray
    colors: np.ndarray
    types: np.ndarray
    color_logits: torch.Tensor | None = None
    type_logits: torch.Tensor | None = None
    names: list[str] = field(default_factory=list)
    layout: tuple[int, int, int] | None = None  # model.parts: (D, P, d) of the flat features (ReIDNet.part_layout)
    views: np.ndarray | None = None  # (N,) view bins of the images' label keypoints (vit.pose_view), -1 unknown

    def subset(self, index: np.ndarray) -> Features:
        """The rows ``index`` (K,) of every array: a Features of K images."""
        idx = torch.as_tensor(np.asarray(index, dtype=np.int64))
        logits = [None if t is None else t[idx] for t in (self.color_logits, self.type_logits)]
        return Features(self.features[idx], self.pids[index], self.camids[index], self.colors[index],
                        self.types[index], *logits, [self.names[i] for i in index] if self.names else [],
                        self.layout, None if self.views is None else self.views[index])


def record_views(records: list[Record]) -> np.ndarray:
    """(N,) view bins (``vit.pose_view``) of records' label keypoints; -1 for records without keypoints."""
    conf = np.stack([np.asarray(r.keypoints, np.float32)[:, 2] if r.keypoints is not None
                     else np.zeros(NUM_KEYPOINTS, np.float32) for r in records]) if records else np.zeros((0, 36))
    return pose_view(torch.from_numpy(conf)).numpy()


@torch.no_grad()
def extract_features(model: ReIDNet, loader: DataLoader, device: torch.device, dtype: torch.dtype | None = None,
                     desc: str = "features", flip: bool = False) -> Features:
    """Run ``model`` over a loader of ``ReIDDataset`` samples; colour/type logits when the model has those heads;
    with ``flip`` each feature is the mean of the image's and its mirror's (eval.flip_feature)."""
    model.eval()
    feats, colors_l, types_l = [], [], []
    labels = {k: [] for k in ("pid", "camid", "color", "type", "index")}
    attrs = model.color_classifier is not None or model.type_classifier is not None
    for batch in tqdm(loader, desc=desc, leave=False, dynamic_ncols=True):
        x = batch["image"].to(device, non_blocking=True)
        kp = batch["keypoints"].to(device, non_blocking=True)
        side = side_information(batch)  # cameras, views: the ViT's SIE
        with autocast(device, dtype):
            if attrs:
                out = model(x, kp, *side)
                feats.append(model.flat_embedding(out).float().cpu())
                if "color" in out:
                    colors_l.append(out["color"].float().cpu())
                if "type" in out:
                    types_l.append(out["type"].float().cpu())
            else:
                feats.append(model.embed(x, kp, *side).float().cpu())
            if flip:
                feats[-1] = 0.5 * (feats[-1] + model.embed(*mirror_inputs(x, kp, model.cfg), *side).float().cpu())
        for k in labels:
            labels[k].append(torch.as_tensor(batch[k]).numpy())
    cat = {k: np.concatenate(v) if v else np.zeros(0, np.int64) for k, v in labels.items()}
    records = [loader.dataset.records[i] for i in cat["index"]]
    return Features(torch.cat(feats) if feats else torch.zeros(0, model.embedding_dim), cat["pid"], cat["camid"],
                    cat["color"], cat["type"], torch.cat(colors_l) if colors_l else None,
                    torch.cat(types_l) if types_l else None, [Path(r.path).name for r in records], model.part_layout,
                    record_views(records))


VEHICLEID_CAMERAS = ("VehicleID has no camera ids: its protocol compares query and gallery images without the "
                     "same-camera rule; set eval.ignore_cameras: true (reid eval --format vehicleid applies the "
                     "protocol itself)")


def read_eval_records(data: DataConfig, root: str | None = None, cameras: bool = False
                      ) -> tuple[list[Record], list[Record]]:
    """Query and gallery records of the evaluation data set (``data.eval_root`` or the first training root);
    every query identity must have gallery images, and with ``cameras`` every image a camera id.

    VehicleID: the first of the protocol's draws (seed ``data.draw_seed``) from the test split; a test split
    of several sizes (VehicleID, VERI-Wild): the one of ``data.test_size``.
    """
    root = root or data.eval_root or data.train[0].root
    fmt, size = check_format(data.eval_format, root), data.test_size or None
    if fmt == "vehicleid":
        if cameras:
            raise DataError(root, VEHICLEID_CAMERAS)
        test = read_split(root, "test", fmt, check_images=True, test_size=size)
        q, g = gallery_draws(test, 1, data.draw_seed)[0]
        query, gallery = [test[i] for i in q], [test[i] for i in g]
    else:
        query = read_split(root, data.query_split, fmt, check_images=True, test_size=size)
        gallery = read_split(root, data.gallery_split, fmt, check_images=True, test_size=size)
    for name, recs in (("query", query), ("gallery", gallery)):
        if not recs:
            raise DataError(root, f"the {name} split is empty")
        unlabelled = sum(r.vehicle_id < 0 for r in recs)
        if unlabelled:
            raise DataError(root, f"{unlabelled} of {len(recs)} {name} images have no vehicle id; evaluation needs "
                                  "identity labels (CityFlow: put the ground truth beside the data, see "
                                  "pamtri.data.readers.cityflow)")
        if cameras and (err := missing_cameras(recs, name, root)) is not None:
            raise err
    for err in queries_without_gallery(query, gallery, data.gallery_split):
        raise err
    return query, gallery


def eval_loaders(query: list[Record], gallery: list[Record], data: DataConfig, model_cfg, batch_size: int,
                 workers: int | None = None) -> tuple[DataLoader, DataLoader]:
    """Test-time loaders (no augmentation) for query and gallery records (pose caches: data.query_cache and
    data.gallery_cache, which must come from the same pose weights)."""
    ql = eval_loader(query, data, model_cfg, batch_size, data.query_cache, workers)
    gl = eval_loader(gallery, data, model_cfg, batch_size, data.gallery_cache, workers)
    if cache_weights_sha256(ql.dataset.pose) != cache_weights_sha256(gl.dataset.pose):
        raise ConfigError(f"data.query_cache {data.query_cache} and data.gallery_cache {data.gallery_cache} were "
                          "built with different pose weights; rebuild them with one pose checkpoint")
    return ql, gl


def eval_loader(records: list[Record], data: DataConfig, model_cfg, batch_size: int, cache: str,
                workers: int | None = None) -> DataLoader:
    """A test-time loader (no augmentation, file order) of ``records``, pose channels from ``cache`` when the
    config reads pose caches."""
    ds = ReIDDataset(records, make_builder(data, model_cfg, train=False),
                     make_pose_source(data, model_cfg, records, [cache]), model_cfg.orientation_bins)
    nw = data.workers if workers is None else workers
    return DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=nw, pin_memory=torch.cuda.is_available())


def rerank_candidates(num_query: int, num_gallery: int, cfg: EvalConfig) -> int:
    """Gallery candidates per query for re-ranking: all of them (the dense algorithm, exact) when the dense
    algorithm's (Q + G)^2 float32 distance matrix fits eval.rerank_memory_mib, else eval.rerank_top (k-NN lists).

    VeRi-776 (1,678 + 11,579 images): 0.7 GB; VehicleID large (2,400 + 17,638): 1.6 GB; VERI-Wild small / medium
    (3,000 + 38,861 / 5,000 + 64,389): 7 / 19 GB, so the 8 GiB default re-ranks VeRi, VehicleID and VERI-Wild small
    densely."""
    dense = 4 * (num_query + num_gallery) ** 2 <= cfg.rerank_memory_mib * 2 ** 20
    return num_gallery if dense else min(cfg.rerank_top, num_gallery)


def rerank_lists(q: torch.Tensor, g: torch.Tensor, cfg: EvalConfig) -> tuple[np.ndarray, np.ndarray]:
    """k-reciprocal re-ranked candidate lists (gallery positions (Q, L), distances (Q, L)), L from
    :func:`rerank_candidates` (L = G: the dense algorithm's result), from the k-NN lists of query + gallery
    (``reid.rerank.rerank_neighbours``, never (Q, G) or (N, N)).

    Cosine features are L2-normalised and re-ranked with squared Euclidean distances, 2 - 2 cos, the kernel of the
    reference implementations (Zhong et al.'s re_ranking on normalised features, as fast-reid and TransReID call it);
    the evaluation's own ranking stays 1 - cos, which orders the same way."""
    t = time.time()
    top = rerank_candidates(len(q), len(g), cfg)
    if cfg.metric == "cosine":
        q, g = (torch.nn.functional.normalize(x.float(), dim=1) for x in (q, g))
    out = rerank_neighbours(q, g, top, "euclidean", cfg.k1, cfg.k2, cfg.lambda_value)
    mode = "dense: every gallery image" if top == len(g) else f"k-NN lists: top {top} of {len(g)} (over budget)"
    log.info("re-ranking %dx%d (%s, memory budget %d MiB) took %.1f s", len(q), len(g), mode,
             cfg.rerank_memory_mib, time.time() - t)
    return out


def summarise(metrics: dict, topk_map: int) -> dict:
    """Plain JSON-able summary: mAP, rank-1/5/10/20, rank-K mAP, mINP, counts, the CMC curve."""
    cmc = np.asarray(metrics["cmc"])
    out = {"mAP": metrics["mAP"]}
    for r in (1, 5, 10, 20):
        if r <= len(cmc):
            out[f"rank{r}"] = float(cmc[r - 1])
    out[f"mAP@{topk_map}"] = metrics[f"mAP@{topk_map}"]
    out["mINP"] = metrics["mINP"]
    out["num_queries"] = metrics["num_queries"]
    out["num_valid_queries"] = metrics["num_valid_queries"]
    out["cmc"] = [float(v) for v in cmc]
    return out


def queries_not_in_gallery(qf: Features, gf: Features) -> np.ndarray:
    """(Q,) bool: query images that are not also gallery images (same file name, vehicle and camera).

    On VeRi-776 every query image is also a test image; counting the union once keeps attribute accuracy
    a share of distinct test images.
    """
    if not qf.names:  # features without file names: nothing is known to repeat
        return np.ones(len(qf.pids), bool)
    gallery = set(zip(gf.names, gf.pids.tolist(), gf.camids.tolist()))
    return np.array([key not in gallery for key in zip(qf.names, qf.pids.tolist(), qf.camids.tolist())], bool)


def metrics_and_distances(qf: Features, gf: Features, cfg: EvalConfig) -> tuple[dict, np.ndarray]:
    """(summary metrics incl. colour/type accuracy over the distinct test images, distances (K, G) of the K
    rank-list queries ``visualize.rank_list_queries(Q)``); gallery features track-averaged (eval.track_file),
    then query-expanded (eval.query_expansion). The (Q, G) matrix is never built: the metrics come from the
    features block by block (``metrics.metrics_from_features``), re-ranked from the candidate lists of
    :func:`rerank_lists` (``metrics.metrics_from_ranked_lists``). Features with parts (``qf.layout``): the
    co-visible distance (``distance.covisible_distance``, lambda = eval.part_weight x ``distance.part_scale`` of the
    gallery); query expansion and re-ranking
    work on the global features alone. With eval.cross_view and known views, 'cross_view_*' entries repeat mAP,
    rank-1 and the valid query count over other-view true matches only (``metrics.cross_view_faces``)."""
    q, g = qf.features, gf.features
    if cfg.track_file:
        g = track_average(g, gf.names, read_tracks(cfg.track_file))
    qs = gs = None
    if qf.layout is not None:
        qs, gs = split_embedding(q, qf.layout), split_embedding(g, qf.layout)
        q, g = qs[0], gs[0]
    if cfg.query_expansion:
        q, g = alpha_query_expansion(q, g, cfg.qe_k, cfg.qe_alpha)
    shown = torch.from_numpy(rank_list_queries(len(qf.pids)))
    faces = cross_view_faces(qf.views, gf.views) if cross_view_known(qf, gf, cfg) else None
    if cfg.rerank:
        order, ranked = rerank_lists(q, g, cfg)
        def metrics(f):
            return metrics_from_ranked_lists(order, ranked, q, g, qf.pids, gf.pids, qf.camids, gf.camids, cfg.metric,
                                             cfg.max_rank, cfg.topk_map, ignore_cameras=cfg.ignore_cameras, faces=f)
        dist = ranked_rows(*(torch.as_tensor(a)[shown] for a in (order, ranked)), q[shown], g, cfg.metric).numpy()
    else:
        distance, weight = None, 0.0
        if qs is not None and cfg.part_weight > 0:
            weight = cfg.part_weight * part_scale((g, *gs[1:]), cfg.metric)  # lambda relative to the global scale
            log.info("co-visible distance: lambda %.4g (eval.part_weight %g x the gallery's scale)", weight,
                     cfg.part_weight)

            def distance(rows, s, e):
                return covisible_distance((rows, qs[1][s:e], qs[2][s:e]), (g, *gs[1:]), cfg.metric, weight)
        def metrics(f):
            return metrics_from_features(q, g, qf.pids, gf.pids, qf.camids, gf.camids, cfg.metric, cfg.max_rank,
                                         cfg.topk_map, ignore_cameras=cfg.ignore_cameras, distance=distance, faces=f)
        dist = (pairwise_distance(q[shown], g, cfg.metric) if distance is None else
                covisible_distance((q[shown], qs[1][shown], qs[2][shown]), (g, *gs[1:]), cfg.metric, weight)).numpy()
    raw = metrics(None)
    out = summarise(raw, cfg.topk_map)
    if faces is not None:
        out.update(cross_view_summary(metrics(faces)))
    if cfg.rerank:  # how many candidates each query re-ranked: the gallery size means the dense algorithm
        out["rerank_candidates"] = rerank_candidates(len(q), len(g), cfg)
    extra = torch.from_numpy(queries_not_in_gallery(qf, gf))
    for name, logits_attr, labels_attr in (("color_acc", "color_logits", "colors"),
                                           ("type_acc", "type_logits", "types")):
        lq, lg = getattr(qf, logits_attr), getattr(gf, logits_attr)
        if lq is not None and lg is not None:
            labels = np.concatenate([getattr(qf, labels_attr)[extra.numpy()], getattr(gf, labels_attr)])
            out[name] = attribute_accuracy(torch.cat([lq[extra], lg]), labels)
    out["_first_rank"] = raw["first_rank"]
    return out, dist


def cross_view_known(qf: Features, gf: Features, cfg: EvalConfig) -> bool:
    """Whether the cross-view metrics apply: eval.cross_view on and views known (label keypoints) for some query and
    gallery images (images of unknown view take no part in a cross-view match)."""
    if not cfg.cross_view or qf.views is None or gf.views is None:
        return False
    unknown = int((qf.views < 0).sum()), int((gf.views < 0).sum())
    if unknown != (0, 0):
        log.info("cross-view metrics: %d query and %d gallery images have no view (no label keypoints or no face "
                 "seen); they count in no cross-view match", *unknown)
    return unknown[0] < len(qf.views) and unknown[1] < len(gf.views)


def cross_view_summary(raw: dict) -> dict:
    """The 'cross_view_*' entries of the summary: mAP, rank-1, rank-5 and how many queries have an other-view
    match."""
    return {"cross_view_mAP": raw["mAP"], "cross_view_rank1": float(raw["cmc"][0]),
            "cross_view_rank5": float(raw["cmc"][min(4, len(raw["cmc"]) - 1)]),
            "cross_view_queries": raw["num_valid_queries"]}


def model_metrics(model: ReIDNet, query_loader: DataLoader, gallery_loader: DataLoader, cfg: EvalConfig,
                   device: torch.device, dtype: torch.dtype | None = None) -> tuple[dict, np.ndarray]:
    """Features of both splits, then ``metrics_and_distances``."""
    qf = extract_features(model, query_loader, device, dtype, "query", cfg.flip_feature)
    gf = extract_features(model, gallery_loader, device, dtype, "gallery", cfg.flip_feature)
    return metrics_and_distances(qf, gf, cfg)
