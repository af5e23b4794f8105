"""Tracklets of one scene: read and filtered, crops sampled by quality in one sequential pass per camera, and
tracklet features (quality-weighted means of normalised crop features)."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import cv2
import numpy as np
from tqdm import tqdm

from pamtri.common.errors import DataError
from pamtri.data.images import read_image
from pamtri.reid.distance import normalise

from .config import CropConfig, TrackletConfig
from .scene import Camera, Scene, read_tracks

log = logging.getLogger(__name__)


@dataclass
class Tracklet:
    """One camera's track of one local id: frames (n,) 1-based and boxes (n, 4) [left, top, width, height] px."""
    camera: int
    local_id: int
    frames: np.ndarray
    boxes: np.ndarray
    start: float = 0.0           # global seconds of the first and last frame
    end: float = 0.0
    crops: list[np.ndarray] = field(default_factory=list, repr=False)   # RGB uint8
    crop_frames: list[int] = field(default_factory=list)
    quality: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    color: int = -1
    type: int = -1


def build_tracklets(scene: Scene, cfg: TrackletConfig) -> list[Tracklet]:
    """Every camera's tracks grouped by id, dropping short, tiny and out-of-ROI tracklets."""
    out: list[Tracklet] = []
    dropped = {"short": 0, "tiny": 0, "roi": 0}
    for cam in scene.cameras:
        rows = read_tracks(cam.tracks, cam)
        roi = _roi(cam)
        for tid in np.unique(rows[:, 1]).astype(int):
            r = rows[rows[:, 1] == tid]
            r = r[np.argsort(r[:, 0], kind="stable")]
            if len(r) < cfg.min_frames:
                dropped["short"] += 1
                continue
            if np.median(np.minimum(r[:, 4], r[:, 5])) < cfg.min_size:
                dropped["tiny"] += 1
                continue
            if roi is not None:
                x = np.clip((r[:, 2] + r[:, 4] / 2).astype(int), 0, cam.width - 1)
                y = np.clip((r[:, 3] + r[:, 5]).astype(int), 0, cam.height - 1)
                if float(np.mean(roi[y, x])) < cfg.roi_min_fraction:
                    dropped["roi"] += 1
                    continue
            frames = r[:, 0].astype(np.int64)
            out.append(Tracklet(cam.id, tid, frames, r[:, 2:6].astype(np.float32), float(cam.time(frames[0])),
                                float(cam.time(frames[-1]))))
    log.info("tracklets: %d kept, dropped %d short, %d tiny, %d outside the ROI", len(out), dropped["short"],
             dropped["tiny"], dropped["roi"])
    return out


def _roi(cam: Camera) -> np.ndarray | None:
    if cam.roi is None:
        return None
    img = read_image(cam.roi, max_side=None)
    if img.shape[:2] != (cam.height, cam.width):
        raise DataError(cam.roi, f"is {img.shape[1]} x {img.shape[0]}, the camera's frames {cam.width} x {cam.height}")
    return img.mean(axis=2) > 127


def geometric_quality(boxes: np.ndarray, width: int, height: int, ref_size: float) -> np.ndarray:
    """(n,) in [0, 1]: size (shorter side / ref_size, saturating) x share of the box inside the frame, halved
    when the box touches the frame border (a truncated vehicle)."""
    x, y, w, h = boxes.T
    size = np.clip(np.minimum(w, h) / ref_size, 0.05, 1.0)
    iw = np.clip(np.minimum(x + w, width) - np.maximum(x, 0), 0, None)
    ih = np.clip(np.minimum(y + h, height) - np.maximum(y, 0), 0, None)
    inside = iw * ih / np.maximum(w * h, 1e-6)
    border = (x <= 1) | (y <= 1) | (x + w >= width - 1) | (y + h >= height - 1)
    return (size * inside * np.where(border, 0.5, 1.0)).astype(np.float32)


def sharpness(crop: np.ndarray) -> float:
    """[0, 1): variance of the Laplacian of the grey crop, squashed (v / (v + 100))."""
    v = float(cv2.Laplacian(cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY), cv2.CV_32F).var())
    return v / (v + 100.0)


def _candidates(tl: Tracklet, cam: Camera, cfg: CropConfig) -> np.ndarray:
    """Indices into the tracklet's boxes: the best by geometric quality, one per time bin so they spread."""
    q = geometric_quality(tl.boxes, cam.width, cam.height, cfg.ref_size)
    bins = np.array_split(np.arange(len(q)), min(cfg.candidates, len(q)))
    return np.array([b[np.argmax(q[b])] for b in bins], np.int64)


def iter_frames(cam: Camera, wanted: set[int]):
    """(frame number, RGB frame) for the ``wanted`` 1-based frames, in order: one sequential decoding pass of a
    video (stopping after the last wanted frame), or the wanted files of a frame folder."""
    if not wanted:
        return
    last = max(wanted)
    if cam.is_video:
        cap = cv2.VideoCapture(str(cam.source))
        try:
            for f in range(1, last + 1):
                ok = cap.grab()
                if not ok:
                    raise DataError(cam.source, f"ends at frame {f - 1}, but the tracks need frame {last}")
                if f in wanted:
                    ok, img = cap.retrieve()
                    if not ok:
                        raise DataError(cam.source, f"frame {f} cannot be decoded")
                    yield f, cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        finally:
            cap.release()
    else:
        for f in sorted(wanted):
            yield f, read_image(cam.frame_files[f - 1], max_side=None)


def sample_crops(scene: Scene, tracklets: list[Tracklet], cfg: CropConfig, progress: bool = False) -> None:
    """Fill each tracklet's crops, crop_frames and (geometric x sharpness) quality; decodes each camera once."""
    by_cam: dict[int, list[Tracklet]] = {}
    for tl in tracklets:
        by_cam.setdefault(tl.camera, []).append(tl)
    for cam in tqdm(scene.cameras, desc="crops", unit="camera", disable=not progress):
        tls = by_cam.get(cam.id, [])
        need: dict[int, list[tuple[Tracklet, int]]] = {}
        for tl in tls:
            for i in _candidates(tl, cam, cfg):
                need.setdefault(int(tl.frames[i]), []).append((tl, int(i)))
        cand: dict[int, list[tuple[float, int, np.ndarray]]] = {}
        for f, img in iter_frames(cam, set(need)):
            for tl, i in need[f]:
                bx, by, w, h = tl.boxes[i]
                x0, y0 = max(0, int(np.floor(bx))), max(0, int(np.floor(by)))
                x1, y1 = min(cam.width, int(np.ceil(bx + w))), min(cam.height, int(np.ceil(by + h)))
                if x1 - x0 < 2 or y1 - y0 < 2:
                    continue
                crop = np.ascontiguousarray(img[y0:y1, x0:x1])
                q = float(geometric_quality(tl.boxes[i:i + 1], cam.width, cam.height, cfg.ref_size)[0])
                cand.setdefault(id(tl), []).append((q * (0.5 + 0.5 * sharpness(crop)), f, crop))
        for tl in tls:
            best = sorted(cand.get(id(tl), []), key=lambda c: -c[0])[:cfg.per_tracklet]
            tl.crops = [c[2] for c in best]
            tl.crop_frames = [c[1] for c in best]
            tl.quality = np.array([c[0] for c in best], np.float32)


def tracklet_features(pipeline, tracklets: list[Tracklet], batch_size: int = 32, progress: bool = False
                      ) -> np.ndarray:
    """(N, D) float32 unit-norm tracklet features: the quality-weighted mean of the normalised features of each
    tracklet's crops, quality = geometric x sharpness x pose confidence (mean keypoint confidence, when the model
    takes pose input). Also sets each tracklet's colour and type (quality-weighted vote)."""

    owners = [k for k, tl in enumerate(tracklets) for _ in tl.crops]
    crops = [c for tl in tracklets for c in tl.crops]
    if not crops:
        raise DataError(None, "no tracklet has a usable crop (all filtered out?)")
    feats, conf, colors, types = [], [], [], []
    for s in tqdm(range(0, len(crops), batch_size), desc="features", unit="batch", disable=not progress):
        out = pipeline.embed_arrays(crops[s:s + batch_size])
        feats.append(out["features"])
        conf.append(out["keypoints"][:, :, 2].mean(axis=1) if pipeline.needs_pose else np.ones(len(out["features"])))
        colors.append(out["color"])
        types.append(out["type"])
    f = np.asarray(normalise(np.concatenate(feats).astype(np.float32)))
    pose_q = np.clip(np.concatenate(conf), 0.05, 1.0)
    colors, types = np.concatenate(colors), np.concatenate(types)
    owners = np.asarray(owners)
    geo = np.concatenate([tl.quality for tl in tracklets])
    w = geo * pose_q
    out = np.zeros((len(tracklets), f.shape[1]), np.float32)
    np.add.at(out, owners, f * w[:, None])
    for k, tl in enumerate(tracklets):
        sel = owners == k
        tl.quality = w[sel].astype(np.float32)
        if colors[sel].max(initial=-1) >= 0:
            tl.color = int(np.bincount(colors[sel], weights=w[sel]).argmax())
        if types[sel].max(initial=-1) >= 0:
            tl.type = int(np.bincount(types[sel], weights=w[sel]).argmax())
    return np.asarray(normalise(out), np.float32)
