"""PCK for the 36-keypoint vehicle model (paper Sec. 4.5), and the reference code's formula (docs/facts.md).

PCK: a visible ground-truth keypoint is correct when its error is <= threshold x 0.25 x the diagonal of
the tight box of that image's ground-truth keypoints (all 36 of them: occluded keypoints are annotated at
their estimated positions and belong to the vehicle's extent). Groups pool their keypoints over all
images; 'mean' pools all 36. Values are percentages; a group with no visible keypoint gives NaN.
"""
from __future__ import annotations

import numpy as np

from .keypoints import NUM_KEYPOINTS, PCK_GROUP_TITLES, PCK_GROUPS

DEFAULT_CURVE = np.round(np.linspace(0.0, 0.5, 51), 4)
TABLE_COLUMNS = tuple(PCK_GROUPS) + ("mean", "mean@0.1")


def _check(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64)[..., :2]
    gt = np.asarray(gt, dtype=np.float64)
    if pred.ndim != 3 or gt.ndim != 3 or pred.shape[:2] != gt.shape[:2] or gt.shape[-1] < 3:
        raise ValueError(f"expected pred (N, {NUM_KEYPOINTS}, 2) and gt (N, {NUM_KEYPOINTS}, 3), "
                         f"got {pred.shape} and {gt.shape}")
    return pred, gt


def normalised_errors(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(N, 36) error / (0.25 x the image's keypoint-box diagonal): pred (N, 36, >=2), gt (N, 36, 3) pixels.

    A keypoint is correct at threshold t when this is <= t. A degenerate box (zero diagonal) gives inf,
    or 0 for an exact hit.
    """
    pred, gt = _check(pred, gt)
    span = gt[..., :2].max(axis=1) - gt[..., :2].min(axis=1)  # (N, 2)
    scale = 0.25 * np.hypot(span[:, 0], span[:, 1])  # (N,)
    err = np.linalg.norm(pred - gt[..., :2], axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = err / scale[:, None]
    out[err == 0] = 0.0
    return out


def _pooled(correct: np.ndarray, visible: np.ndarray) -> dict[str, float]:
    """correct, visible (..., N, 36) bool -> {group: percent (...)} pooled over images and keypoints."""
    out = {}
    for name, idx in list(PCK_GROUPS.items()) + [("mean", tuple(range(NUM_KEYPOINTS)))]:
        hits = (correct[..., list(idx)] & visible[..., list(idx)]).sum(axis=(-2, -1))
        total = visible[..., list(idx)].sum(axis=(-2, -1))
        with np.errstate(divide="ignore", invalid="ignore"):
            out[name] = np.where(total > 0, 100.0 * hits / np.maximum(total, 1), np.nan)
    return out


def pck(pred: np.ndarray, gt: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """PCK in percent: pred (N, 36, 2) pixels, gt (N, 36, 3) x, y, visibility -> {group: %, 'mean': %}."""
    errors = normalised_errors(pred, gt)
    visible = np.asarray(gt)[..., 2] > 0.5
    return {k: float(v) for k, v in _pooled(errors <= threshold, visible).items()}


def pck_curve(pred: np.ndarray, gt: np.ndarray, thresholds=DEFAULT_CURVE) -> dict[str, np.ndarray]:
    """PCK (percent) at each threshold: {group or 'mean': (T,) array}, thresholds (T,) in box-diagonal units."""
    errors = normalised_errors(pred, gt)
    visible = np.asarray(gt)[..., 2] > 0.5
    t = np.asarray(thresholds, dtype=np.float64)[:, None, None]
    return _pooled(errors[None] <= t, np.broadcast_to(visible, (len(t),) + visible.shape))


def pck_table(pred: np.ndarray, gt: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """The paper's Table 5 row: groups and 'mean' at ``threshold``, plus 'mean@0.1'; percent."""
    row = pck(pred, gt, threshold)
    row["mean@0.1"] = pck(pred, gt, 0.1)["mean"]
    return row


def legacy_pck(pred: np.ndarray, gt: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """The reference code's PCK (docs/facts.md), for comparison with published figures only; percent.

    Its threshold is one constant for the whole set, threshold x 0.25 x sqrt(N) pixels for N images
    (its box arithmetic collapses to that); a group is the unweighted mean of its keypoints' PCKs and
    'mean' the unweighted mean over all 36; its 'mean@0.1' really uses 0.11.
    """
    pred, gt = _check(pred, gt)
    n = len(gt)
    err = np.linalg.norm(pred - gt[..., :2], axis=-1)
    visible = gt[..., 2] > 0.5

    def per_keypoint(t: float) -> np.ndarray:
        correct = (err <= t * 0.25 * np.sqrt(n)) & visible
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(visible.sum(0) > 0, correct.sum(0) / np.maximum(visible.sum(0), 1), np.nan)

    def unweighted(values: np.ndarray) -> float:
        return float(100.0 * np.nanmean(values)) if np.isfinite(values).any() else float("nan")

    kp = per_keypoint(threshold)
    out = {name: unweighted(kp[list(idx)]) for name, idx in PCK_GROUPS.items()}
    out["mean"] = unweighted(kp)
    out["mean@0.1"] = unweighted(per_keypoint(0.11))
    out["threshold_px"] = float(threshold * 0.25 * np.sqrt(n))
    return out


def format_table(row: dict[str, float], title: str = "") -> str:
    """Table 5 layout (Wheel, Fender, Back, Front, Back windshield, Front windshield, Mean, Mean@0.1) as text."""
    names = [PCK_GROUP_TITLES[g] for g in PCK_GROUPS] + ["Mean", "Mean@0.1"]
    widths = [max(len(n), 6) for n in names]
    head = "  ".join(n.rjust(w) for n, w in zip(names, widths))
    vals = "  ".join(f"{row.get(k, float('nan')):.2f}".rjust(w) for k, w in zip(TABLE_COLUMNS, widths))
    return (title + "\n" if title else "") + head + "\n" + vals
