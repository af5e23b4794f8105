"""The baselines the bench measures ours against: each the common way of computing the same result.

Tests use them as oracles too (same results as ours, by a plain algorithm), so each exists once, here.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from pamtri.data.images import IMAGENET_MEAN, IMAGENET_STD


def decode_loop(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, K, h, w) heatmaps -> (xy (N, K, 2) cells, peak value (N, K)) by the reference rule (HRNet's
    get_final_preds: argmax, then a quarter-cell step towards the higher neighbour on each axis away from the
    border), with a Python loop over every keypoint of every image."""
    n, k, h, w = heatmaps.shape
    xy = np.zeros((n, k, 2), np.float32)
    conf = np.zeros((n, k), np.float32)
    for i in range(n):
        for j in range(k):
            hm = heatmaps[i, j]
            idx = int(np.argmax(hm))
            py, px = divmod(idx, w)
            conf[i, j] = hm[py, px]
            x, y = float(px), float(py)
            if 1 < px < w - 1 and 1 < py < h - 1:  # HRNet's get_final_preds
                x += 0.25 * np.sign(hm[py, px + 1] - hm[py, px - 1])
                y += 0.25 * np.sign(hm[py + 1, px] - hm[py - 1, px])
            xy[i, j] = (x, y)
    return xy, conf


def euclidean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(M, D) and (N, D) features -> (M, N) plain Euclidean distance matrix (float32)."""
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(d, 0.0)).astype(np.float32)


def evaluate_loop(dist, q_ids, g_ids, q_cams, g_cams, max_rank: int = 50) -> dict:
    """The common per-query Market-1501 evaluation loop over (Q, G) distances: mAP, CMC (max_rank,), mINP;
    same-identity same-camera gallery images are skipped."""
    indices = np.argsort(dist, axis=1)
    matches = (g_ids[indices] == q_ids[:, None]).astype(np.int32)
    all_cmc, all_ap, all_inp = [], [], []
    for q in range(dist.shape[0]):
        order = indices[q]
        keep = ~((g_ids[order] == q_ids[q]) & (g_cams[order] == q_cams[q]))
        raw = matches[q][keep]
        if not raw.any():
            continue
        cmc = raw.cumsum()
        last = np.where(raw == 1)[0].max()
        all_inp.append(cmc[last] / (last + 1.0))
        cmc[cmc > 1] = 1
        all_cmc.append(cmc[:max_rank])
        precision = [x / (i + 1.0) for i, x in enumerate(raw.cumsum())]
        all_ap.append((np.asarray(precision) * raw).sum() / raw.sum())
    return {"mAP": float(np.mean(all_ap)), "cmc": np.asarray(all_cmc, dtype=np.float64).mean(0),
            "mINP": float(np.mean(all_inp))}


def rerank_dense(q_g, q_q, g_g, k1: int = 20, k2: int = 6, lambda_value: float = 0.3,
                 dtype=np.float16) -> np.ndarray:
    """k-reciprocal re-ranking (Zhong et al. 2017) as commonly implemented, with dense N x N arrays and per-row
    loops -> (Q, G) distances: squared distances divided by the column maximum and transposed, k-reciprocal sets
    expanded with the k1/2 sets (2/3 overlap rule), Gaussian-kernel encoding V, query expansion over the k2
    nearest, Jaccard distance, lambda blend. ``dtype``: of V and the Jaccard sums (the common implementation's
    float16; float64 for an exact reference); distances are float32, or float64 with float64."""
    nq = q_g.shape[0]
    work = np.promote_types(dtype, np.float32)
    d = np.concatenate([np.concatenate([q_q, q_g], 1), np.concatenate([q_g.T, g_g], 1)], 0).astype(work)
    d = np.square(d)
    d = np.transpose(d / np.max(d, axis=0))
    v = np.zeros_like(d, dtype=dtype)  # allocated before the argsort, as the common implementation does
    rank = np.argsort(d, axis=1).astype(np.int32)
    _encode_neighbours(v, d, rank, k1)
    if k2 != 1:
        v_qe = np.zeros_like(v)
        for i in range(len(d)):
            v_qe[i] = np.mean(v[rank[i, :k2]], axis=0)
        v = v_qe
    jaccard = _jaccard(v, nq, dtype)
    final = jaccard * (1 - lambda_value) + d[:nq] * lambda_value
    return final[:nq, nq:]


def _encode_neighbours(v: np.ndarray, d: np.ndarray, rank: np.ndarray, k1: int) -> None:
    """Fill (N, N) zeros ``v``: row i spreads Gaussian weights exp(-d) over i's expanded k1-reciprocal neighbours
    (``rank`` (N, N): each row's neighbours, nearest first), summing to 1."""
    n = d.shape[0]
    half = int(np.around(k1 / 2))

    def reciprocal(i, k):
        forward = rank[i, :k + 1]
        return forward[np.where(rank[forward, :k + 1] == i)[0]]

    for i in range(n):
        r = reciprocal(i, k1)
        expanded = r
        for c in r:
            rc = reciprocal(c, half)
            if len(np.intersect1d(rc, r)) > 2 / 3 * len(rc):
                expanded = np.append(expanded, rc)
        expanded = np.unique(expanded)
        w = np.exp(-d[i, expanded])
        v[i, expanded] = w / np.sum(w)


def _jaccard(v: np.ndarray, nq: int, dtype) -> np.ndarray:
    """(nq, N) Jaccard distances 1 - m / (2 - m), m = sum of min(V_i, V_j), of the first nq rows of V to all."""
    n = v.shape[0]
    inverted = [np.where(v[:, j] != 0)[0] for j in range(n)]
    jaccard = np.zeros((nq, n), dtype=dtype)
    for i in range(nq):
        acc = np.zeros((1, n), dtype=dtype)
        nz = np.where(v[i] != 0)[0]
        for j in nz:
            acc[0, inverted[j]] += np.minimum(v[i, j], v[inverted[j], j])
        jaccard[i] = 1 - acc / (2 - acc)
    return jaccard


def naive_two_stage(images, predictor, reid, work) -> None:
    """Two-stage inference the naive way, one uint8 RGB image (H, W, 3) at a time: ``predictor`` (a PosePredictor)
    heatmaps, the per-keypoint decode loop, each heatmap through a JPEG file in folder ``work`` as the reference
    code stores them, resized to 256x256 and stacked with the normalised RGB for ``reid`` (39 channels + the
    keypoint vector)."""

    mean = np.asarray(IMAGENET_MEAN, np.float32)[:, None, None]
    std = np.asarray(IMAGENET_STD, np.float32)[:, None, None]
    with torch.no_grad():
        for idx, im in enumerate(images):
            crop, inverse = predictor.crop(im)
            hm = predictor.heatmaps(torch.from_numpy(crop[None])).numpy()
            xy, conf = decode_loop(hm)
            for k in range(36):  # the reference stores each heatmap as a JPEG and reads it back
                cv2.imwrite(str(work / f"{idx}_{k:02d}.jpg"), np.clip(hm[0, k] * 255, 0, 255).astype(np.uint8))
            maps = np.stack([cv2.imread(str(work / f"{idx}_{k:02d}.jpg"), cv2.IMREAD_GRAYSCALE)
                             for k in range(36)]).astype(np.float32) / 255.0
            maps = np.stack([cv2.resize(m, (256, 256)) for m in maps])
            rgb = (im.transpose(2, 0, 1).astype(np.float32) / 255.0 - mean) / std
            x = np.concatenate([rgb, (maps - mean.mean()) / std.mean()])[None]
            kv = np.concatenate([xy[0] / 64 - 0.5, conf[0, :, None] - 0.5], 1).reshape(1, -1)
            reid(torch.from_numpy(x), torch.from_numpy(kv.astype(np.float32)))
