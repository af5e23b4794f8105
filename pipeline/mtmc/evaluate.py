"""``pamtri mtmc eval``: the AI City Track 1 metric with motmetrics.

IDF1, IDP and IDR count identities over all cameras jointly: every camera's frames go into one accumulator
(frame keys offset per camera), so a vehicle keeps one identity across cameras or loses it. As in AI City, the
ground truth holds the vehicles seen by 2+ cameras. MOTA (and its parts) per camera, from one accumulator each.
Boxes match at IoU >= 0.5.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from pamtri.common.errors import DataError

from .scene import read_scene, read_tracks

log = logging.getLogger(__name__)

TRACK1_COLUMNS = ("camera_id", "obj_id", "frame_id", "xmin", "ymin", "width", "height", "xworld", "yworld")


def read_track1(path: str | os.PathLike, cameras: dict[int, object] | None = None) -> np.ndarray:
    """(K, 7) float64 [camera, id, frame, left, top, width, height] of an AI City submission file; a bad line is
    a DataError naming the file and line (an unknown camera or a frame past its video included, given
    ``cameras``: id -> scene.Camera)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise DataError(path, f"cannot be read: {exc.strerror or exc}") from exc
    rows = []
    for no, raw in enumerate(text.splitlines(), 1):
        parts = raw.replace(",", " ").split()
        if not parts:
            continue
        if len(parts) not in (7, 9):
            raise DataError(path, f"expected 9 values ({' '.join(TRACK1_COLUMNS)}), got {len(parts)}", line=no)
        try:
            vals = [float(p) for p in parts[:7]]
        except ValueError:
            raise DataError(path, f"non-numeric value in {raw.strip()[:60]!r}", line=no) from None
        cam, frame = int(vals[0]), int(vals[2])
        if cameras is not None:
            if cam not in cameras:
                raise DataError(path, f"camera {cam} is not in the scene (cameras: "
                                      f"{', '.join(map(str, sorted(cameras)))})", line=no)
            if not 1 <= frame <= cameras[cam].frames:
                raise DataError(path, f"frame {frame} is outside camera {cam}'s 1..{cameras[cam].frames}", line=no)
        if not (vals[5] > 0 and vals[6] > 0):
            raise DataError(path, "width and height must be > 0", line=no)
        rows.append(vals)
    return np.asarray(rows, np.float64).reshape(-1, 7)


def iou_distance(gt: np.ndarray, hyp: np.ndarray, max_iou: float = 0.5) -> np.ndarray:
    """(G, H) 1 - IoU of [left, top, width, height] boxes, NaN (no match) where 1 - IoU > ``max_iou``: what
    ``motmetrics.distances.iou_matrix`` returns, which motmetrics 1.4.0 cannot compute under NumPy 2
    (``np.asfarray`` is gone); the matching and every metric stay motmetrics'."""
    g = np.asarray(gt, np.float64).reshape(-1, 4)
    h = np.asarray(hyp, np.float64).reshape(-1, 4)
    x0 = np.maximum(g[:, None, 0], h[None, :, 0])
    y0 = np.maximum(g[:, None, 1], h[None, :, 1])
    x1 = np.minimum(g[:, None, 0] + g[:, None, 2], h[None, :, 0] + h[None, :, 2])
    y1 = np.minimum(g[:, None, 1] + g[:, None, 3], h[None, :, 1] + h[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    union = (g[:, 2] * g[:, 3])[:, None] + (h[:, 2] * h[:, 3])[None, :] - inter
    d = 1.0 - inter / np.maximum(union, 1e-12)
    return np.where(d > max_iou, np.nan, d)


def _accumulate(acc, gt: np.ndarray, hyp: np.ndarray, frame_key) -> None:
    """gt, hyp (K, 6) [frame, id, l, t, w, h] of one camera into ``acc``; frame keys from ``frame_key(frame)``."""
    frames = np.union1d(gt[:, 0], hyp[:, 0]).astype(int)
    g_by = {f: gt[gt[:, 0] == f] for f in np.unique(gt[:, 0]).astype(int)}
    h_by = {f: hyp[hyp[:, 0] == f] for f in np.unique(hyp[:, 0]).astype(int)}
    empty = np.zeros((0, 6))
    for f in frames:
        g, h = g_by.get(f, empty), h_by.get(f, empty)
        dist = iou_distance(g[:, 2:6], h[:, 2:6])
        acc.update(g[:, 1].astype(int).tolist(), h[:, 1].astype(int).tolist(), dist, frameid=frame_key(f))


def evaluate_mtmc(scene_dir: str | os.PathLike, pred: str | os.PathLike) -> dict:
    """{'idf1', 'idp', 'idr', 'precision', 'recall', 'gt_ids', 'pred_ids', 'per_camera': {name: {'mota', ...}}}."""
    import motmetrics as mm
    scene = read_scene(scene_dir, tracks="gt")
    cams = {c.id: c for c in scene.cameras}
    gt = {c.id: read_tracks(c.gt, c) for c in scene.cameras}
    seen: dict[int, set[int]] = {}
    for cid, rows in gt.items():
        for v in np.unique(rows[:, 1]).astype(int):
            seen.setdefault(int(v), set()).add(cid)
    multi = np.array(sorted(v for v, s in seen.items() if len(s) >= 2))
    gt = {cid: rows[np.isin(rows[:, 1], multi)] for cid, rows in gt.items()}
    hyp_all = read_track1(pred, cams)
    hyp = {cid: hyp_all[hyp_all[:, 0] == cid][:, [2, 1, 3, 4, 5, 6]] for cid in cams}
    joint = mm.MOTAccumulator(auto_id=False)
    stride = max(c.frames for c in scene.cameras) + 1
    per_cam = {}
    mh = mm.metrics.create()
    for k, cid in enumerate(sorted(cams)):
        _accumulate(joint, gt[cid], hyp[cid], lambda f, k=k: k * stride + int(f))
        acc = mm.MOTAccumulator(auto_id=False)
        _accumulate(acc, gt[cid], hyp[cid], int)
        s = mh.compute(acc, metrics=["mota", "idf1", "num_switches", "num_false_positives", "num_misses",
                                     "num_objects"], name=cams[cid].name)
        per_cam[cams[cid].name] = {k2: _num(v) for k2, v in s.iloc[0].items()}
    s = mh.compute(joint, metrics=["idf1", "idp", "idr", "precision", "recall", "mota"], name="all")
    out = {k: _num(v) for k, v in s.iloc[0].items()}
    out.update(gt_ids=int(len(multi)), pred_ids=int(len(np.unique(hyp_all[:, 1]))),
               scene=str(Path(scene_dir)), pred=str(Path(pred)), per_camera=per_cam)
    return out


def _num(v):
    v = float(v)
    return round(v, 6) if np.isfinite(v) else None


def format_metrics(m: dict) -> str:
    """A few lines: the joint IDF1 / IDP / IDR, then MOTA per camera."""
    def pct(v):
        return "  n/a" if v is None else f"{100 * v:5.1f}"
    lines = [f"IDF1 {pct(m['idf1'])}   IDP {pct(m['idp'])}   IDR {pct(m['idr'])}   "
             f"({m['gt_ids']} ground-truth vehicles in 2+ cameras, {m['pred_ids']} predicted)"]
    for name, c in m["per_camera"].items():
        lines.append(f"  {name}  MOTA {pct(c['mota'])}  IDF1 {pct(c['idf1'])}  switches {int(c['num_switches'])}")
    return "\n".join(lines)
