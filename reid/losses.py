"""ReID losses: batch-hard triplet, (masked) cross-entropy, margin softmaxes, and the PAMTRI / StRDAN totals.

Every attribute loss is masked per sample: a label of -1 (no label) contributes nothing, so a batch with
no labelled image gives exactly 0 and no gradient into that head.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from pamtri.data.records import REAL, SYNTHETIC

from .config import LossConfig
from .vit import pose_view


def pairwise_euclidean(x: torch.Tensor) -> torch.Tensor:
    """(B, D) -> (B, B) Euclidean distances, with a safe gradient at zero distance."""
    sq = (x * x).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * x @ x.t()).clamp_min(1e-12)
    return d2.sqrt()


def triplet_batch_hard(features: torch.Tensor, labels: torch.Tensor, margin: float = 0.3,
                       soft_margin: bool = False, views: torch.Tensor | None = None) -> torch.Tensor:
    """Batch-hard triplet loss (Hermans et al. 2017): features (B, D), labels (B,) -> scalar.

    For each anchor: hardest positive (largest distance, same label, not itself) and hardest negative
    (smallest distance, other label); hinge max(0, d_ap - d_an + margin), or softplus(d_ap - d_an) when
    ``soft_margin``. Anchors without a positive or without a negative are left out. With ``views`` (B,) view ids
    (-1 unknown): view-aware mining (:func:`triplet_from_distances`).
    """
    return triplet_from_distances(pairwise_euclidean(features.float()), labels, margin, soft_margin, views)


def triplet_from_distances(d: torch.Tensor, labels: torch.Tensor, margin: float = 0.3, soft_margin: bool = False,
                           views: torch.Tensor | None = None, usable_pairs: torch.Tensor | None = None
                           ) -> torch.Tensor:
    """Batch-hard triplet loss of a (B, B) distance matrix; ``usable_pairs`` (B, B) bool: pairs that may be mined
    (default all). With ``views`` (B,) view-aware mining (Chu et al., VANet, ICCV 2019): the hardest positive among
    the anchor's images of another view and the hardest negative among those of its own view, since a same-view
    negative and an other-view positive are the pairs a view-blind feature gets wrong; an anchor whose batch has
    no such image falls back to batch-hard over all (an unknown view, -1, matches no view)."""
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    ok = ~eye if usable_pairs is None else usable_pairs & ~eye
    pos, neg = same & ok, ~same & ok
    if views is not None:
        v = views.to(labels.device)
        same_view = (v[:, None] == v[None, :]) & (v[:, None] >= 0)
        pos = torch.where((pos & ~same_view).any(1, keepdim=True), pos & ~same_view, pos)
        neg = torch.where((neg & same_view).any(1, keepdim=True), neg & same_view, neg)
    usable = pos.any(1) & neg.any(1)
    if not usable.any():
        return d.sum() * 0.0
    d_ap = torch.where(pos, d, torch.full_like(d, -1.0)).max(1).values
    d_an = torch.where(neg, d, torch.full_like(d, float("inf"))).min(1).values
    d_ap, d_an = d_ap[usable], d_an[usable]
    if soft_margin:
        return F.softplus(d_ap - d_an).mean()
    return F.relu(d_ap - d_an + margin).mean()


def covisible_part_distance(parts: torch.Tensor, visibility: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Part features (B, P, d) and visibilities (B, P) of one batch -> (co-visible distance (B, B) =
    sum_k v_ik v_jk ||p_ik - p_jk|| / sum_k v_ik v_jk, pairs that share a visible part (B, B) bool)."""
    d = torch.stack([pairwise_euclidean(parts[:, k].float()) for k in range(parts.shape[1])], -1)  # (B, B, P)
    v = visibility.float()
    w = v[:, None, :] * v[None, :, :]
    den = w.sum(-1)
    return (w * d).sum(-1) / den.clamp_min(1e-12), den > 0


def masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, smoothing: float = 0.0,
                         mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy over samples whose label is >= 0 (and ``mask`` is true): logits (B, C), labels (B,).

    With ``smoothing`` e, the target is (1 - e) one-hot + e / C uniform. No usable sample -> exactly 0,
    with a zero gradient.
    """
    keep = labels >= 0
    if mask is not None:
        keep = keep & mask
    logp = F.log_softmax(logits.float(), dim=1)
    nll = -logp.gather(1, labels.clamp_min(0).long()[:, None]).squeeze(1)
    if smoothing > 0:
        nll = (1.0 - smoothing) * nll - smoothing * logp.mean(1)
    per = torch.where(keep, nll, torch.zeros_like(nll))
    return per.sum() / keep.sum().clamp_min(1)


def center_loss(features: torch.Tensor, labels: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """Center loss (Wen et al. 2016, as the strong baseline): mean over labelled samples of ||f_i - c_{y_i}||^2;
    features (B, D), labels (B,) with -1 = no label, centers (C, D)."""
    keep = labels >= 0
    d2 = (features.float() - centers.float()[labels.clamp_min(0).long()]).square().sum(1)
    return torch.where(keep, d2, torch.zeros_like(d2)).sum() / keep.sum().clamp_min(1)


def margin_logits(cosine: torch.Tensor, labels: torch.Tensor, kind: str, scale: float, margin: float
                  ) -> torch.Tensor:
    """Cosine similarities (B, C) to the class weights -> logits (B, C) of a margin softmax; labels (B,), -1 allowed.

    Others get s cos, except in Circle. CosFace (Wang et al. 2018): s (cos - m) for the true class; ArcFace (Deng
    et al. 2019): s cos(theta + m) for the true class; Circle (Sun et al. 2020, as fast-reid's CircleSoftmax):
    s [1 + m - cos]_+ (cos - 1 + m) for the true class, s [cos + m]_+ (cos - m) for the others ([.]_+ detached).
    """
    cos = cosine.float()
    target = F.one_hot(labels.clamp_min(0).long(), cos.shape[1]).bool()
    if kind == "cosface":
        return scale * torch.where(target, cos - margin, cos)
    if kind == "arcface":
        theta = torch.acos(cos.clamp(-1 + 1e-7, 1 - 1e-7))
        return scale * torch.where(target, torch.cos(theta + margin), cos)
    if kind == "circle":
        alpha_p = F.relu(1 + margin - cos).detach()
        alpha_n = F.relu(cos + margin).detach()
        return scale * torch.where(target, alpha_p * (cos - 1 + margin), alpha_n * (cos - margin))
    raise ValueError(f"unknown margin softmax {kind!r}")


def reid_losses(outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], cfg: LossConfig
                ) -> dict[str, torch.Tensor]:
    """Named losses of one batch and their weighted ``total``.

    ``outputs``: the model's dict (feature, [triplet_feature], [centers], id, color, type, orientation, domain
    logits as present);
    ``batch``: pid (B,), color (B,), type (B,), orientation (B,) bins, domain (B,); -1 = no label.
    Heads whose loss weight is 0 are still reported (for logging) and add nothing to the total.

    PAMTRI: ``triplet + center * L_center + id + color * CE(colour) + type * CE(type)``, attributes on every
    labelled image (id: cross-entropy of the linear logits or of a margin softmax's).
    StRDAN: ``L_joint + disjoint_weight * L_disjoint`` with L_joint = ID + domain + triplet (+ center) on every image
    and L_disjoint = colour + type + orientation on synthetic images only, whatever labels a real image
    carries (Lee et al. 2020, Sec. 3).
    """
    pid = batch["pid"]
    eps = cfg.label_smoothing
    out: dict[str, torch.Tensor] = {}
    weights: dict[str, float] = {}
    # BNNeck models give the BN's input as 'triplet_feature' and its output as 'bn_feature' (triplet and center
    # loss, loss.triplet_feature); else the test feature
    feature = outputs.get("bn_feature" if cfg.triplet_feature == "after" else "triplet_feature", outputs["embedding"])
    views = batch_views(batch, cfg) if cfg.triplet_mining == "view_aware" else None
    if cfg.triplet > 0:
        out["triplet"] = triplet_batch_hard(feature, pid, cfg.margin, cfg.soft_margin, views)
        if "triplet_local" in outputs:  # JPM: TransReID's 0.5 global + 0.5 mean over the local branches
            local = torch.stack([triplet_batch_hard(f, pid, cfg.margin, cfg.soft_margin, views)
                                 for f in outputs["triplet_local"]]).mean()
            out["triplet"] = 0.5 * out["triplet"] + 0.5 * local
        weights["triplet"] = cfg.triplet
    if "centers" in outputs:
        out["center"] = center_loss(feature, pid, outputs["centers"])
        weights["center"] = cfg.center
    if "id" in outputs:
        mask = batch["domain"] == REAL if cfg.id_real_only else None
        logits = outputs["id"] if cfg.id_loss == "softmax" else margin_logits(
            outputs["id"], pid, cfg.id_loss, cfg.scale, cfg.id_margin)
        out["id"] = masked_cross_entropy(logits, pid, eps, mask)
        if "id_local" in outputs:  # JPM, as the triplet term (damo-cv/TransReID loss/make_loss.py)
            local = torch.stack([masked_cross_entropy(z if cfg.id_loss == "softmax" else margin_logits(
                z, pid, cfg.id_loss, cfg.scale, cfg.id_margin), pid, eps, mask) for z in outputs["id_local"]]).mean()
            out["id"] = 0.5 * out["id"] + 0.5 * local
        weights["id"] = cfg.id
    if "part_triplet" in outputs:
        out.update(part_losses(outputs, batch, cfg, views))
        weights.update(part_triplet=cfg.part_triplet, part_id=cfg.part_id)
    attr_mask = batch["domain"] == SYNTHETIC if cfg.objective == "strdan" else None
    for name in ("color", "type", "orientation"):
        if name in outputs:
            out[name] = masked_cross_entropy(outputs[name], batch[name], eps, attr_mask)
            weights[name] = getattr(cfg, name)
    if "domain" in outputs:
        out["domain"] = masked_cross_entropy(outputs["domain"], batch["domain"])
        weights["domain"] = cfg.domain
    zero = outputs["embedding"].sum() * 0.0
    if cfg.objective == "strdan":
        joint = sum((weights[k] * out[k] for k in ("id", "domain", "triplet", "center", "part_triplet", "part_id")
                     if k in out), zero)
        disjoint = sum((weights[k] * out[k] for k in ("color", "type", "orientation") if k in out), zero)
        out["joint"], out["disjoint"] = joint, disjoint
        out["total"] = joint + cfg.disjoint_weight * disjoint
    else:
        out["total"] = sum((w * out[k] for k, w in weights.items() if w > 0), zero)
    return out


def batch_views(batch: dict[str, torch.Tensor], cfg: LossConfig) -> torch.Tensor:
    """(B,) view ids for view-aware mining: ``vit.pose_view`` of the batch's keypoint vectors (loss.view_source
    pose; -1 where no face is seen) or the orientation bins (label)."""
    if cfg.view_source == "label":
        return batch["orientation"]
    kp = batch["keypoints"]
    return pose_view(kp.reshape(len(kp), -1, 3)[..., 2] + 0.5)


def part_losses(outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], cfg: LossConfig,
                views: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The part head's terms: 'part_triplet', batch-hard on the co-visible part distance (pairs without a shared
    visible part are not mined), and 'part_id', the mean over parts of each part's cross-entropy over the images
    that show it (visibility > 0; label smoothing as the global head)."""
    pid = batch["pid"]
    d, shared = covisible_part_distance(outputs["part_triplet"], outputs["part_visibility"])
    out = {"part_triplet": triplet_from_distances(d, pid, cfg.margin, cfg.soft_margin, views, shared)}
    if "part_id" in outputs:
        seen = outputs["part_visibility"] > 0
        mask = (batch["domain"] == REAL) if cfg.id_real_only else torch.ones_like(pid, dtype=torch.bool)
        out["part_id"] = torch.stack([masked_cross_entropy(z, pid, cfg.label_smoothing, mask & seen[:, k])
                                      for k, z in enumerate(outputs["part_id"])]).mean()
    return out
