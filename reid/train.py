"""ReID training: records, model, losses and evaluation; the loop is ``pamtri.common.engine.fit``.

A run folder holds ``config.yaml`` (resolved), ``last.pt`` (full training state after each epoch, for an
exact ``--resume``), ``best.pt`` (weights with the best mAP and their description), ``metrics.csv`` and
``DONE``. Single-process by default; DistributedDataParallel when launched by ``torchrun`` (each rank samples
its own share of P x K batches; rank 0 evaluates and writes).
"""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from pamtri.common.config import to_dict
from pamtri.common.engine import Run, Stage, fit, open_run
from pamtri.common.errors import ConfigError, DataError
from pamtri.common.training import unwrap
from pamtri.data.readers import read_split, single_image_identities
from pamtri.data.records import REAL, SYNTHETIC, Record

from .config import ReIDConfig
from .dataset import ReIDDataset, collate_labels, combine_training_sets, side_information
from .evaluate import eval_loaders, model_metrics, read_eval_records
from .losses import reid_losses
from .model import ReIDNet
from .pose_inputs import cache_weights_sha256, make_pose_source
from .samplers import DomainBalancedSampler, IdentitySampler, SeededBatches
from .transforms import make_builder
from .weights import build_model

log = logging.getLogger(__name__)
DOMAINS = {"real": REAL, "synthetic": SYNTHETIC}


def train(cfg: ReIDConfig, out: str | Path, resume: bool = False) -> dict:
    """Train the ReID network of ``cfg`` into run folder ``out``; returns {'best_mAP', 'best_epoch', 'last'}
    (-1 for both when nothing was evaluated; 'last': the last evaluation's metrics)."""
    with open_run(out, resume, seed=cfg.seed, device=cfg.device, precision=cfg.precision,
                  threads=cfg.threads) as run:
        records, data_info = load_training_records(cfg)
        num_colors, num_types = class_counts(records, cfg)
        cfg = replace(cfg, model=replace(cfg.model, num_colors=num_colors, num_types=num_types,
                                         input_size=(cfg.data.height, cfg.data.width)))
        check_sie_cameras(records, cfg)
        log.info("training on %d images of %d identities (%d real, %d synthetic ids); device %s, autocast %s",
                 data_info["num_images"], data_info["num_ids"], data_info["ids_per_domain"][REAL],
                 data_info["ids_per_domain"][SYNTHETIC], run.device, run.dtype)
        stage = build_stage(cfg, run, records, data_info)
        result = fit(run, stage, cfg.optim, config=cfg, eval_every=cfg.eval.every, max_batches=cfg.max_batches)
    return {"best_mAP": -1.0 if result.best is None else result.best, "best_epoch": result.best_epoch or -1,
            "last": result.validation}


def load_training_records(cfg: ReIDConfig) -> tuple[list[Record], dict]:
    """Every training source read and merged (contiguous ids, real first, domain set per source; info["source"]
    gives each record's index in ``cfg.data.train``)."""
    sets = []
    for src in cfg.data.train:
        recs = read_split(src.root, src.split, src.format, check_images=True)
        if not recs:
            raise DataError(src.root, f"training split {src.split!r} is empty")
        if cfg.loss.triplet > 0 and (single := single_image_identities(recs, src.root, src.split)) is not None:
            raise single
        sets.append((recs, DOMAINS[src.domain]))
    return combine_training_sets(sets)


def class_counts(records: list[Record], cfg: ReIDConfig) -> tuple[int, int]:
    """(num_colors, num_types): the config's, or max label + 1 over the training records."""
    def count(configured: int, values: list[int], key: str) -> int:
        top = max(values, default=-1) + 1
        if configured and top > configured:
            where = next(r.path for r, v in zip(records, values) if v >= configured)
            raise ConfigError(f"model.{key} = {configured} but the training labels go up to {top - 1} (e.g. {where}); "
                              f"raise model.{key}, set it to 0 (= from the labels) or fix the labels")
        return configured or max(top, 1)
    return (count(cfg.model.num_colors, [r.color_id for r in records], "num_colors"),
            count(cfg.model.num_types, [r.type_id for r in records], "num_types"))


def check_sie_cameras(records: list[Record], cfg: ReIDConfig) -> None:
    """ConfigError naming an image whose camera id (the data set's number, VeRi c001 -> 1) the SIE camera table
    (model.sie_cameras rows, ids 0..N-1) lacks."""
    n = cfg.model.sie_cameras
    if n and (bad := next((r for r in records if r.camera_id >= n), None)) is not None:
        raise ConfigError(f"model.sie_cameras = {n} but {bad.path} has camera id {bad.camera_id}; set "
                          "model.sie_cameras to the largest camera id + 1")


def build_stage(cfg: ReIDConfig, run: Run, records: list[Record], data_info: dict) -> Stage:
    """The ReID network, its P x K loader, its losses and (on rank 0) mAP evaluation, for ``fit``."""
    loader = train_loader(records, data_info["source"], cfg, run)
    eval_sets = evaluation_loaders(cfg) if run.info.is_main else None
    pose_sha = cache_weights_sha256(loader.dataset.pose)
    if eval_sets is not None and pose_sha is not None and cache_weights_sha256(eval_sets[0].dataset.pose) != pose_sha:
        raise ConfigError(f"data.query_cache / data.gallery_cache ({cfg.data.query_cache}) were built with other "
                          "pose weights than the training caches (data.train[i].pose_cache); rebuild them with the "
                          "same pose checkpoint")
    model = build_model(cfg.model, data_info["num_ids"], cfg.model.num_colors, cfg.model.num_types).to(run.device)
    description = model.describe()
    steps = cfg.optim.epochs * (len(loader) if cfg.max_batches == 0 else min(len(loader), cfg.max_batches))

    def forward(model: torch.nn.Module, batch: dict, progress: float) -> dict[str, torch.Tensor]:
        """Images (B, C, H, W), keypoint vectors (B, 108), camera and orientation-bin ids (B,) for the ViT's SIE
        -> the heads' outputs; progress drives the GRL ramp and the backbone freeze of model.freeze_iters steps."""
        unwrap(model).set_progress(progress)
        step = round(progress * steps)
        unwrap(model).backbone_frozen = (step < cfg.model.freeze_iters
                                         or step < cfg.model.freeze_epochs * steps // cfg.optim.epochs)
        return model(batch["image"], batch["keypoints"], *side_information(batch))

    def losses(outputs: dict[str, torch.Tensor], batch: dict) -> dict[str, torch.Tensor]:
        labels = {**collate_labels(batch), "keypoints": batch["keypoints"]}  # keypoints: view-aware mining's views
        return reid_losses({k: v.float() for k, v in outputs.items()}, labels, cfg.loss)

    def evaluate(model: torch.nn.Module) -> dict:
        """mAP, rank-k, mINP, attribute accuracy on the query and gallery splits."""
        return model_metrics(model, *eval_sets, cfg.eval, run.device, run.dtype)[0]

    def weights_file(metrics: dict) -> dict:
        """What best.pt holds: the weights and everything needed to use them."""
        return {"model": model.state_dict(), "model_description": description, "config": to_dict(cfg),
                "epoch": metrics["epoch"], "metrics": metrics, "pose_weights_sha256": pose_sha,
                "format": "pamtri-reid-weights-1"}

    return Stage(model=model, loader=loader, forward=forward, losses=losses,
                 validate=evaluate if eval_sets is not None else None, score="mAP", weights_file=weights_file,
                 state_extra={"model_description": description}, side_optimizer=center_optimizer(model, cfg),
                 find_unused_parameters=idle_parameters(model, cfg),
                 done_marker=True)


def center_optimizer(model: ReIDNet, cfg: ReIDConfig) -> torch.optim.SGD | None:
    """BoT's own SGD for the class centres at loss.center_lr (None: the main optimiser trains them).

    BoT multiplies the centres' gradient by 1 / loss.center before that step, so they move on the unweighted
    center-loss gradient; for plain SGD (no momentum, no decay) that is the step of rate center_lr / center.
    """
    if model.centers is None or cfg.loss.center_lr == 0:
        return None
    return torch.optim.SGD([model.centers], lr=cfg.loss.center_lr / cfg.loss.center)


def idle_parameters(model: ReIDNet, cfg: ReIDConfig) -> bool:
    """True when some parameters get no gradient, which DDP must be told: a head whose loss weight is 0, or the
    ReID FC when neither the ID head nor the embedding uses it, or the backbone while it is frozen."""
    if cfg.model.freeze_iters > 0 or cfg.model.freeze_epochs > 0:
        return True
    heads = ("id", "color", "type", "orientation", "domain")
    if any(getattr(cfg.loss, h) == 0 for h in heads if getattr(model, f"{h}_classifier", None) is not None):
        return True
    return model.id_fc is not None and not cfg.model.id_head and cfg.model.embedding_source == "pool"


def evaluation_loaders(cfg: ReIDConfig) -> tuple[DataLoader, DataLoader] | None:
    """(query, gallery) loaders for the evaluation during training; None (with a warning) when there is none."""
    if cfg.data.pose_source == "cache" and not (cfg.data.query_cache and cfg.data.gallery_cache):
        log.warning("no evaluation during training: data.query_cache and data.gallery_cache name no pose caches")
        return None
    try:
        return eval_loaders(*read_eval_records(cfg.data, cameras=not cfg.eval.ignore_cameras), cfg.data, cfg.model,
                            cfg.eval.batch_size)
    except DataError as exc:
        log.warning("no evaluation during training: %s", exc)
        return None


def train_loader(records: list[Record], sources: list[int], cfg: ReIDConfig, run: Run) -> DataLoader:
    """This rank's loader of P x K batches (identity or domain-balanced), each image with its own seed."""
    pids = [r.vehicle_id for r in records]
    s, info = cfg.sampler, run.info
    try:
        if s.kind == "domain":
            sampler = DomainBalancedSampler(pids, [r.domain for r in records], s.ids_per_batch, s.k, seed=cfg.seed,
                                            rank=info.rank, world_size=info.world_size)
        else:
            sampler = IdentitySampler(pids, s.ids_per_batch, s.k, seed=cfg.seed, rank=info.rank,
                                      world_size=info.world_size, per_image=s.epoch == "images")
    except ConfigError as exc:  # name the training data the sampler counted
        roots = ", ".join(f"{src.root} ({src.split})" for src in cfg.data.train)
        raise ConfigError(f"data.train {roots}: {exc}") from None
    pose = make_pose_source(cfg.data, cfg.model, records, [src.pose_cache for src in cfg.data.train], sources)
    ds = ReIDDataset(records, make_builder(cfg.data, cfg.model, train=True), pose, cfg.model.orientation_bins)
    return DataLoader(ds, batch_sampler=SeededBatches(sampler, cfg.seed, info.rank), num_workers=cfg.data.workers,
                      pin_memory=run.device.type == "cuda", persistent_workers=cfg.data.workers > 0)
