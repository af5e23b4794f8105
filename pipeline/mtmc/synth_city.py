"""``pamtri synth city``: a generated multi-camera scene in the CityFlow layout.

The road network is a ring of road segments (with one chord from 5 cameras on); each camera watches one
segment, at its own angle to the road, so a vehicle's pose in a camera follows from its heading relative to that
camera: a vehicle driving one way is seen front-left in one camera and from behind in the next. Vehicles (the
synthetic generator's identities: model, paint, colour and type) drive routes of 2-4 consecutive cameras at their
own speed, waiting a random time at each junction; travel times between cameras follow from the segment length.

Each vehicle is rendered once per camera pass (``synth.render.render_view`` at the camera's elevation and the
vehicle's heading) and composited, resized along its path, onto the camera's background. Written: c001/vdo.avi
(or img1/), c00N/gt/gt.txt, c00N/mtsc/mtsc_sim.txt (a simulated single-camera tracker: box jitter, missed
frames, fragmented tracklets, identity switches, false tracklets), cam_timestamp/<scene>.txt, topology.yaml
(travel-time windows of connected cameras), vehicles.csv (identity, colour, type) and synth_city.json.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from pamtri.common.atomic import atomic_write_bytes, atomic_write_text
from pamtri.common.errors import ConfigError
from pamtri.data.attributes import VERI_COLORS, VERI_TYPES
from pamtri.pipeline.synth.dataset import identity_for
from pamtri.pipeline.synth.render import make_camera, render_view, sample_view

from .staging import staged_outputs

log = logging.getLogger(__name__)

OUTPUTS_MARKER = "synth_city.json"
VERSION = 1


@dataclass(frozen=True)
class TrackerNoise:
    """How the simulated single-camera tracker differs from the ground truth."""
    jitter: float = 0.04        # box jitter, standard deviation as a fraction of the box side
    miss: float = 0.05          # probability that a box is missing in a frame
    fragment: float = 0.15      # probability that a track breaks into two tracklets (new local id)
    switch: float = 0.05        # probability that a track swaps ids with an overlapping one
    false_rate: float = 2.0     # false tracklets per camera per minute


@dataclass
class Pass:
    vehicle: int                 # 1-based global id
    camera: int                  # 1-based camera number
    t_in: float                  # global seconds
    t_out: float
    forward: bool


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *key]))


def check_city_args(cameras: int, vehicles: int, minutes: float, fps: float, width: int, height: int) -> None:
    for flag, ok, msg in (("--cameras", cameras >= 2, "at least 2"), ("--vehicles", vehicles >= 1, "at least 1"),
                          ("--minutes", minutes > 0, "> 0"), ("--fps", 1 <= fps <= 60, "between 1 and 60"),
                          ("--width", width >= 64, ">= 64"), ("--height", height >= 48, ">= 48")):
        if not ok:
            raise ConfigError(f"synth city: {flag} must be {msg}")


def road_network(cameras: int, duration: float, rng: np.random.Generator) -> dict[tuple[int, int], float]:
    """Connected camera pairs (a < b) -> road length in metres: a ring, plus a chord from 5 cameras on; lengths
    scale with the scene's duration so that most routes complete within it."""
    pairs = [(i, i % cameras + 1) for i in range(1, cameras + 1)] if cameras > 2 else [(1, 2)]
    if cameras >= 5:
        pairs.append((1, 1 + cameras // 2))
    scale = float(np.clip(duration * 12.0, 20.0, 2000.0))
    return {tuple(sorted(p)): float(np.clip(rng.uniform(0.06, 0.16) * scale, 8.0, 400.0)) for p in pairs}


def _neighbours(links: dict) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for a, b in links:
        out.setdefault(a, []).append(b)
        out.setdefault(b, []).append(a)
    return out


SPEED = (8.0, 16.0)       # m/s
WAIT = (0.0, 3.0)         # s at each junction


def plan_routes(cameras: int, vehicles: int, duration: float, links: dict, rng: np.random.Generator
                ) -> tuple[list[Pass], dict[int, float]]:
    """Every vehicle's passes through the cameras (global seconds) and each camera's view length in seconds."""
    nb = _neighbours(links)
    view_len = float(np.clip(duration * 0.7, 2.5, 40.0))  # metres of road each camera sees
    passes: list[Pass] = []
    for v in range(1, vehicles + 1):
        speed = rng.uniform(*SPEED)
        hops = int(rng.integers(2, min(4, cameras) + 1))
        route = [int(rng.integers(1, cameras + 1))]
        while len(route) < hops:
            options = [c for c in nb[route[-1]] if c not in route]
            if not options:
                break
            route.append(int(rng.choice(options)))
        travel = sum(links[tuple(sorted((a, b)))] / speed + WAIT[1] for a, b in zip(route, route[1:]))
        total = travel + len(route) * view_len / speed
        t = rng.uniform(0.0, max(0.1, duration - 0.8 * total))
        for k, cam in enumerate(route):
            if k:
                t += links[tuple(sorted((route[k - 1], cam)))] / speed + rng.uniform(*WAIT)
            dwell = view_len / speed
            forward = bool(rng.random() < 0.5) if k == 0 else cam > route[k - 1]
            passes.append(Pass(v, cam, t, t + dwell, forward))
            t += dwell
    return passes, {c: view_len for c in range(1, cameras + 1)}


def topology_windows(links: dict, view_len: float) -> dict[tuple[int, int], tuple[float, float]]:
    """(a, b) -> (min, max) seconds from leaving one camera to entering the other, with a 20 % margin."""
    return {p: (round(0.8 * L / SPEED[1], 2), round(1.2 * (L / SPEED[0] + WAIT[1]) + 1.0, 2)) for p, L in links.items()}


@dataclass
class CameraRig:
    cid: int
    angle: float             # degrees: the render yaw of a vehicle driving 'forward'
    elevation: float
    offset: float            # seconds: global time of frame 1
    profile: object
    background: np.ndarray   # BGR (H, W, 3)


def _direction(yaw: float, width: int, height: int) -> np.ndarray:
    """Image motion (pixels per unit path) of a vehicle whose render yaw is ``yaw`` (front at the image left for
    90 degrees, towards the camera for 0)."""
    r = math.radians(yaw)
    return np.array([-math.sin(r) * width / 2, math.cos(r) * 0.35 * height])


def _path(rig: CameraRig, forward: bool, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Start and end of a vehicle's box centre in the image, off-frame at both ends where the road leaves it."""
    d = _direction(rig.angle, width, height) * (1 if forward else -1)
    c = np.array([width / 2, 0.62 * height])
    perp = np.array([-d[1], d[0]]) / (np.linalg.norm(d) + 1e-9)
    c = c + perp * 0.05 * height
    lim = min(0.62 * width / (abs(d[0]) + 1e-9), 0.34 * height / (abs(d[1]) + 1e-9))
    return c - lim * d, c + lim * d


def _box_height(y: float, height: int) -> float:
    """Perspective: lower in the image = nearer = bigger (pixels)."""
    return height * (0.13 + 0.30 * float(np.clip((y - 0.25 * height) / (0.75 * height), 0.0, 1.0)))


def _background(profile, angle: float, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    img = np.empty((height, width, 3), np.float32)
    sky = np.asarray(profile.scenery[::-1], np.float32)
    ground = np.asarray(profile.ground[::-1], np.float32)
    horizon = int(0.22 * height)
    img[:horizon] = sky
    img[horizon:] = ground
    d = _direction(angle, width, height)  # the road band, with its centre line
    a, b = np.array([width / 2, 0.62 * height]) - 3 * d, np.array([width / 2, 0.62 * height]) + 3 * d
    cv2.line(img, tuple(int(v) for v in a), tuple(int(v) for v in b), (85, 85, 88), max(3, int(0.22 * height)))
    cv2.line(img, tuple(int(v) for v in a), tuple(int(v) for v in b), (200, 200, 200), 1)
    img += rng.normal(0, 3, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _sprite(ident, rig: CameraRig, yaw: float, size: int, rng: np.random.Generator):
    view = sample_view(rng, rig.profile, "synthetic", clean=True)
    view = replace(view, yaw=float(yaw % 360.0), elevation=float(rig.elevation), margins=(0.02, 0.02, 0.02, 0.02),
                   gain=tuple(rig.profile.gain))
    img, _, meta = render_view(ident, view, size=size, camera=rig.profile, with_buffers=True)
    return img, meta["mask"]


def _boxes_of_pass(p: Pass, rig: CameraRig, fps: float, frames: int, width: int, height: int, aspect: float
                   ) -> list[tuple[int, float, float, float, float, float]]:
    """(frame, left, top, w, h, visible fraction) of pass ``p`` in its camera: unclipped boxes."""
    start, end = _path(rig, p.forward, width, height)
    f0 = max(1, int(math.ceil((p.t_in - rig.offset) * fps)) + 1)
    f1 = min(frames, int(math.floor((p.t_out - rig.offset) * fps)) + 1)
    out = []
    for f in range(f0, f1 + 1):
        t = rig.offset + (f - 1) / fps
        u = (t - p.t_in) / max(p.t_out - p.t_in, 1e-6)
        cx, cy = start + u * (end - start)
        h = _box_height(cy, height)
        w = h * aspect
        left, top = cx - w / 2, cy - h / 2
        vis_w = min(left + w, width) - max(left, 0.0)
        vis_h = min(top + h, height) - max(top, 0.0)
        frac = max(0.0, vis_w) * max(0.0, vis_h) / (w * h)
        out.append((f, left, top, w, h, frac))
    return out


def simulate_tracker(gt: np.ndarray, width: int, height: int, frames: int, noise: TrackerNoise, minutes: float,
                     rng: np.random.Generator) -> np.ndarray:
    """A single-camera tracker's output derived from ``gt`` (K, 6) [frame, id, l, t, w, h] -> (M, 7) with a
    confidence column: jittered boxes, missed frames, fragments and switches (new local ids), false tracklets."""
    rows = []
    next_id = 1
    local: dict[int, list[tuple[int, int]]] = {}   # gt id -> [(from frame, local id)]
    for vid in np.unique(gt[:, 1]).astype(int):
        fr = gt[gt[:, 1] == vid, 0]
        segs = [(int(fr.min()), next_id)]
        next_id += 1
        if len(fr) >= 6 and rng.random() < noise.fragment:
            segs.append((int(rng.integers(fr.min() + 2, fr.max() - 1)), next_id))
            next_id += 1
        local[vid] = segs
    # identity switches: two tracks overlapping in time exchange local ids from a frame on
    vids = list(local)
    switches: dict[int, tuple[int, int]] = {}
    for vid in vids:
        if rng.random() >= noise.switch or vid in switches:
            continue
        fr = gt[gt[:, 1] == vid, 0]
        others = [o for o in vids if o != vid and o not in switches
                  and np.intersect1d(fr, gt[gt[:, 1] == o, 0]).size >= 2]
        if others:
            o = int(rng.choice(others))
            common = np.intersect1d(fr, gt[gt[:, 1] == o, 0])
            at = int(common[len(common) // 2])
            switches[vid], switches[o] = (at, o), (at, vid)

    def local_id(vid: int, frame: int) -> int:
        owner = vid
        if vid in switches and frame >= switches[vid][0]:
            owner = switches[vid][1]
        return [lid for start, lid in local[owner] if frame >= start][-1]

    for f, vid, left, top, w, h in gt:
        if rng.random() < noise.miss:
            continue
        j = rng.normal(0, noise.jitter, 4) * np.array([w, h, w, h])
        l2, t2 = left + j[0], top + j[1]
        w2, h2 = max(2.0, w + j[2]), max(2.0, h + j[3])
        l2, t2 = np.clip(l2, 0, width - 2), np.clip(t2, 0, height - 2)
        w2, h2 = min(w2, width - l2), min(h2, height - t2)
        rows.append((int(f), local_id(int(vid), int(f)), l2, t2, w2, h2, round(float(rng.uniform(0.5, 1.0)), 3)))
    for _ in range(int(rng.poisson(noise.false_rate * minutes))):
        n = int(rng.integers(4, 12))
        f0 = int(rng.integers(1, max(2, frames - n)))
        h = rng.uniform(0.08, 0.2) * height
        w = h * rng.uniform(1.0, 2.0)
        left, top = rng.uniform(0, width - w), rng.uniform(0.25 * height, height - h)
        for f in range(f0, min(frames, f0 + n) + 1):
            rows.append((f, next_id, left + rng.normal(0, 1), top + rng.normal(0, 1), w, h,
                         round(float(rng.uniform(0.3, 0.6)), 3)))
        next_id += 1
    rows.sort(key=lambda r: (r[0], r[1]))
    return np.asarray(rows, np.float64).reshape(-1, 7)


def _mot_text(rows: np.ndarray, conf_col: bool) -> str:
    out = []
    for r in rows:
        conf = f"{r[6]:.3f}" if conf_col else "1"
        out.append(f"{int(r[0])},{int(r[1])},{r[2]:.2f},{r[3]:.2f},{r[4]:.2f},{r[5]:.2f},{conf},-1,-1,-1")
    return "\n".join(out) + ("\n" if out else "")


def generate_city(out: str | os.PathLike, *, cameras: int = 4, vehicles: int = 30, minutes: float = 1.0,
                  fps: float = 10.0, seed: int = 0, width: int = 480, height: int = 270, frames_only: bool = False,
                  noise: TrackerNoise = TrackerNoise(), overwrite: bool = False, progress: bool = True) -> dict:
    """Write a generated scene (module docstring) into ``out``, committed together; returns a summary dict."""


    check_city_args(cameras, vehicles, minutes, fps, width, height)
    t0 = time.perf_counter()
    out = Path(out)
    scene_name = out.resolve().name
    duration = minutes * 60.0
    rng = _rng(seed, 0)
    links = road_network(cameras, duration, rng)
    passes, view_lens = plan_routes(cameras, vehicles, duration, links, rng)
    windows = topology_windows(links, view_lens[1])
    rigs = {}
    for c in range(1, cameras + 1):
        r = _rng(seed, 2, c)
        profile = make_camera(r, c, "synthetic")
        angle = float(r.uniform(0, 360))
        rigs[c] = CameraRig(c, angle, float(r.uniform(12, 30)), round(float(r.uniform(0, 2.0)), 2), profile,
                            _background(profile, angle, width, height, r))
    idents = {v: identity_for(seed, v) for v in range(1, vehicles + 1)}
    frames = int(round(duration * fps))
    names = [f"c{c:03d}" for c in range(1, cameras + 1)]
    outputs = tuple(names) + ("cam_timestamp", "topology.yaml", "vehicles.csv", OUTPUTS_MARKER)
    counts = {}
    with staged_outputs(out, "synth city", outputs, OUTPUTS_MARKER, overwrite) as stage:
        for c, name in zip(range(1, cameras + 1), names):
            rig = rigs[c]
            r = _rng(seed, 3, c)
            # each pass: its sprite (rendered once) and its boxes
            items = []
            for p in (p for p in passes if p.camera == c):
                yaw = rig.angle if p.forward else rig.angle + 180.0
                start, end = _path(rig, p.forward, width, height)
                size = int(np.clip(1.2 * _box_height(max(start[1], end[1]), height) * 3, 48, 192))
                sprite, mask = _sprite(idents[p.vehicle], rig, yaw, size, _rng(seed, 4, c, p.vehicle))
                aspect = sprite.shape[1] / sprite.shape[0]
                for f, left, top, w, h, frac in _boxes_of_pass(p, rig, fps, frames, width, height, aspect):
                    items.append((f, p.vehicle, left, top, w, h, frac, sprite, mask))
            by_frame: dict[int, list] = {}
            for it in items:
                by_frame.setdefault(it[0], []).append(it)
            gt_rows = []
            cam_dir = stage / name
            (cam_dir / "gt").mkdir(parents=True)
            (cam_dir / "mtsc").mkdir()
            writer = None
            if frames_only:
                (cam_dir / "img1").mkdir()
            else:
                writer = cv2.VideoWriter(str(cam_dir / "vdo.avi"), cv2.VideoWriter_fourcc(*"MJPG"), float(fps),
                                         (width, height))
                if not writer.isOpened():
                    raise ConfigError("synth city: OpenCV cannot write MJPG video here; pass --frames")
            for f in tqdm(range(1, frames + 1), desc=f"synth city {name}", unit="frame", disable=not progress,
                          leave=False):
                img = rig.background.copy()
                near_last = sorted(by_frame.get(f, ()), key=lambda i: i[3] + i[5])  # painter's order
                for _, vid, left, top, w, h, frac, sprite, mask in near_last:
                    iw, ih = int(round(w)), int(round(h))
                    if iw < 2 or ih < 2:
                        continue
                    spr = cv2.resize(sprite, (iw, ih), interpolation=cv2.INTER_AREA)
                    msk = cv2.resize(mask.astype(np.uint8), (iw, ih), interpolation=cv2.INTER_NEAREST).astype(bool)
                    x0, y0 = int(round(left)), int(round(top))
                    fx0, fy0 = max(0, x0), max(0, y0)
                    fx1, fy1 = min(width, x0 + iw), min(height, y0 + ih)
                    if fx1 <= fx0 or fy1 <= fy0:
                        continue
                    sub = msk[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0]
                    img[fy0:fy1, fx0:fx1][sub] = spr[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0][sub]
                    if frac >= 0.3 and (fx1 - fx0) >= 4 and (fy1 - fy0) >= 4:
                        gt_rows.append((f, vid, fx0, fy0, fx1 - fx0, fy1 - fy0))
                if writer is not None:
                    writer.write(img)
                else:
                    atomic_write_bytes(cam_dir / "img1" / f"{f:06d}.jpg",
                                       cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
            if writer is not None:
                writer.release()
            gt = np.asarray(sorted(gt_rows), np.float64).reshape(-1, 6)
            atomic_write_text(cam_dir / "gt" / "gt.txt", _mot_text(np.c_[gt, np.ones(len(gt))], False))
            mtsc = simulate_tracker(gt, width, height, frames, noise, minutes, r)
            atomic_write_text(cam_dir / "mtsc" / "mtsc_sim.txt", _mot_text(mtsc, True))
            roi = np.full((height, width), 255, np.uint8)
            roi[: int(0.2 * height)] = 0  # the sky is no road
            atomic_write_bytes(cam_dir / "roi.jpg", cv2.imencode(".jpg", roi)[1].tobytes())
            counts[name] = {"gt_boxes": len(gt), "gt_ids": int(len(np.unique(gt[:, 1]))) if len(gt) else 0,
                            "mtsc_boxes": len(mtsc), "mtsc_ids": int(len(np.unique(mtsc[:, 1]))) if len(mtsc) else 0}
        (stage / "cam_timestamp").mkdir()
        atomic_write_text(stage / "cam_timestamp" / f"{scene_name}.txt",
                          "".join(f"{n} {rigs[c].offset:.2f}\n" for c, n in zip(range(1, cameras + 1), names)))
        topo = ["# generated by pamtri synth city: connected cameras and travel time windows (seconds)",
                "cameras:"] + [f"  {n}: {{fps: {fps:g}}}" for n in names] + ["links:"]
        topo += [f"  - {{from: c{a:03d}, to: c{b:03d}, min: {lo:g}, max: {hi:g}}}" for (a, b), (lo, hi) in
                 sorted(windows.items())]
        atomic_write_text(stage / "topology.yaml", "\n".join(topo) + "\n")
        atomic_write_text(stage / "vehicles.csv", "vehicle_id,color_id,type_id,color,type,cameras\n" + "".join(
            f"{v},{i.color_id},{i.type_id},{VERI_COLORS[i.color_id]},{VERI_TYPES[i.type_id]},"
            f"{' '.join(f'c{p.camera:03d}' for p in passes if p.vehicle == v)}\n" for v, i in idents.items()))
        summary = dict(version=VERSION, scene=scene_name, cameras=cameras, vehicles=vehicles, minutes=minutes,
                       fps=fps, seed=seed, width=width, height=height, frames=frames, video=not frames_only,
                       noise=asdict(noise), links={f"c{a:03d}-c{b:03d}": L for (a, b), L in links.items()},
                       counts=counts)
        atomic_write_text(stage / OUTPUTS_MARKER, json.dumps(summary, indent=1) + "\n")
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    summary["out"] = str(out)
    return summary
