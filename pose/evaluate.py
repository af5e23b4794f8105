"""Evaluate a pose model on a labelled split: PCK table (paper Table 5 groups), optional legacy PCK, curve plot."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader

from pamtri.common.atomic import atomic_write, atomic_write_text
from pamtri.data.images import read_image

from .config import DataSource, PoseConfig
from .dataset import PoseDataset, collate, read_source
from .keypoints import PCK_GROUP_TITLES
from .metrics import DEFAULT_CURVE, legacy_pck, pck_curve, pck_table
from .predict import PosePredictor, predict_loader
from .visualize import pose_grid, save_image

log = logging.getLogger(__name__)


def pck_report(predictor: PosePredictor, cfg: PoseConfig, sources, num_workers: int = 0,
             legacy: bool = False, threshold: float = 0.5) -> dict:
    """Predict every image of ``sources`` (DataSource list) and score it -> report dict
    (table, curve, optional legacy, n_images, predictions (N, 36, 3), ground truth (N, 36, 3))."""
    records = [r for src in sources for r in read_source(src)]
    ds = PoseDataset(records, predictor.codec, predictor.enlarge)
    loader = DataLoader(ds, batch_size=cfg.eval.batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=collate)
    pred, gt, _ = predict_loader(predictor, loader, progress="eval")
    report = {
        "n_images": len(records),
        "threshold": threshold,
        "flip_test": predictor.flip_test,
        "decode": predictor.codec.decode_method,
        "table": pck_table(pred[..., :2], gt, threshold),
        "curve": {"thresholds": DEFAULT_CURVE.tolist(),
                  **{k: v.tolist() for k, v in pck_curve(pred[..., :2], gt).items()}},
        "names": [r.name for r in records],
        "predictions": pred,
        "ground_truth": gt,
    }
    if legacy:
        report["legacy"] = legacy_pck(pred[..., :2], gt, threshold)
    return report


def save_report(report: dict, out_dir: str | os.PathLike) -> list[Path]:
    """Write pck.json, pck_curve.png and predictions.npz into ``out_dir``; returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plain = {k: v for k, v in report.items() if k not in ("predictions", "ground_truth", "names")}
    atomic_write_text(out_dir / "pck.json", json.dumps(plain, indent=2, allow_nan=True) + "\n")
    plot_curve(report["curve"], out_dir / "pck_curve.png")
    with atomic_write(out_dir / "predictions.npz", "wb") as fh:
        np.savez(fh, names=np.asarray(report["names"]), predictions=report["predictions"],
                 ground_truth=report["ground_truth"])
    return [out_dir / "pck.json", out_dir / "pck_curve.png", out_dir / "predictions.npz"]


def plot_curve(curve: dict, path: str | os.PathLike) -> None:
    """PCK (percent) against threshold (fraction of 0.25 x box diagonal), one line per group plus the mean."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = curve["thresholds"]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for key, title in PCK_GROUP_TITLES.items():
        ax.plot(t, curve[key], label=title, linewidth=1)
    ax.plot(t, curve["mean"], label="Mean", color="black", linewidth=2)
    ax.set_xlabel("threshold (x 0.25 x box diagonal)")
    ax.set_ylabel("PCK (%)")
    ax.set_xlim(0, max(t))
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png")
    plt.close(fig)


def split_pck_report(predictor: PosePredictor, cfg: PoseConfig, root: str | os.PathLike, split: str, fmt: str,
                   out: str | os.PathLike, num_workers: int = 0, legacy: bool = False, vis: int = 0
                   ) -> tuple[dict, list[Path]]:
    """PCK of ``predictor`` on one labelled split, written to ``out`` (``save_report``, and vis.png: the first
    ``vis`` samples, ground truth | prediction) -> (report of :func:`pck_report`, paths written)."""

    source = DataSource(root=str(root), format=fmt, split=split)
    report = pck_report(predictor, cfg, [source], num_workers=num_workers, legacy=legacy,
                      threshold=cfg.eval.pck_threshold)
    out = Path(out)
    paths = save_report(report, out)
    if vis:
        n = min(vis, report["n_images"])
        images = [read_image(r.path, max_side=None) for r in read_source(source)[:n]]
        save_image(pose_grid(images, report["ground_truth"][:n], report["predictions"][:n]), out / "vis.png")
        paths.append(out / "vis.png")
    return report, paths
