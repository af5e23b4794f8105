"""A multi-camera scene on disk, in either layout, read and validated.

CityFlow / AI City layout (read as it is)::

    <scene>/<camera>/vdo.avi            (or img1/000001.jpg ...)
    <scene>/<camera>/gt/gt.txt          MOT: frame,id,left,top,width,height,...
    <scene>/<camera>/mtsc/mtsc_<tracker>.txt
    <scene>/<camera>/roi.jpg            optional: white = road
    cam_timestamp/<scene>.txt           "<camera> <offset seconds>", in <scene>/, its parent or grandparent
    <scene>/topology.yaml               optional: links (and fps for frame folders), as in cameras.yaml

Generic layout (a user's own cameras)::

    <scene>/cameras.yaml                cameras: {<name>: {fps: F, offset: S}}, links: [{from, to, min, max}]
    <scene>/<camera>/<video>            (*.mp4, *.avi, *.mkv, *.mov) or frames/ (or img1/) of images
    <scene>/<camera>/tracks.txt         MOT-format output of any tracker; gt.txt or gt/gt.txt optional

A link says that vehicles travel between two cameras (either direction) in ``min``..``max`` seconds, measured
from leaving one camera to entering the other. Without links every camera pair may connect.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import yaml

from pamtri.common.errors import DataError
from pamtri.data.images import image_header, list_images
from pamtri.data.records import Problems

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".avi", ".mp4", ".mkv", ".mov", ".m4v")
FRAME_DIRS = ("img1", "frames")
DEFAULT_FPS = 10.0


@dataclass
class Camera:
    """One camera: where its frames are, their rate, size and count, its clock offset and its track files."""
    name: str
    id: int
    folder: Path
    source: Path                 # a video file or a folder of frames
    fps: float
    offset: float                # seconds: global time of frame 1
    width: int
    height: int
    frames: int
    tracks: Path | None = None   # the single-camera tracker output
    gt: Path | None = None
    roi: Path | None = None
    frame_files: list[str] = field(default_factory=list, repr=False)

    def time(self, frame):
        """Global time in seconds of 1-based ``frame`` (scalar or array)."""
        return self.offset + (np.asarray(frame, np.float64) - 1.0) / self.fps

    @property
    def is_video(self) -> bool:
        return self.source.is_file()


@dataclass(frozen=True)
class Link:
    """Two cameras vehicles drive between, and the travel time window in seconds (either direction)."""
    a: str
    b: str
    min_s: float
    max_s: float


@dataclass
class Scene:
    root: Path
    layout: str                  # 'cityflow' | 'generic'
    cameras: list[Camera]
    links: list[Link] | None     # None: no topology (every pair may connect)
    topology_path: Path | None = None

    def camera(self, name_or_id) -> Camera:
        for c in self.cameras:
            if name_or_id in (c.name, c.id):
                return c
        raise KeyError(name_or_id)

    def windows(self) -> dict[tuple[int, int], tuple[float, float]]:
        """(camera id a, camera id b) -> (min, max) seconds, both orders; empty without a topology."""
        out: dict[tuple[int, int], tuple[float, float]] = {}
        for ln in self.links or ():
            a, b = self.camera(ln.a).id, self.camera(ln.b).id
            out[(a, b)] = out[(b, a)] = (ln.min_s, ln.max_s)
        return out


# ---------------------------------------------------------------------------------------------------------------
# YAML with line numbers (so a bad link is named by its line)

def _line_loader():

    class LineLoader(yaml.SafeLoader):
        pass

    def mapping(loader, node, deep=False):
        loader.flatten_mapping(node)
        m = {loader.construct_object(k, deep=True): loader.construct_object(v, deep=True) for k, v in node.value}
        m["__line__"] = node.start_mark.line + 1
        return m

    LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return LineLoader


def read_topology_yaml(path: Path) -> dict:
    """The parsed cameras.yaml / topology.yaml (every mapping carries its '__line__'); DataError when unreadable."""
    try:
        loader = _line_loader()(path.read_text(encoding="utf-8"))  # a SafeLoader that also records line numbers
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(path, f"cannot be read: {exc}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise DataError(path, f"is not valid YAML: {getattr(exc, 'problem', exc)}",
                        line=None if mark is None else mark.line + 1) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DataError(path, "must be a mapping with 'cameras' and/or 'links'", line=1)
    unknown = [k for k in data if k not in ("cameras", "links", "__line__")]
    if unknown:
        raise DataError(path, f"unknown key {unknown[0]!r} (known: cameras, links)", line=data["__line__"])
    return data


def _camera_settings(data: dict, path: Path, problems: Problems) -> dict[str, dict]:
    cams = data.get("cameras") or {}
    if not isinstance(cams, dict):
        problems.error(DataError(path, "'cameras' must map camera names to {fps, offset}", line=data["__line__"]))
        return {}
    out = {}
    for name, spec in cams.items():
        if name == "__line__":
            continue
        spec = spec if isinstance(spec, dict) else {}
        line = spec.get("__line__", cams["__line__"])
        bad = [k for k in spec if k not in ("fps", "offset", "__line__")]
        if bad:
            problems.error(DataError(path, f"camera {name}: unknown key {bad[0]!r} (known: fps, offset)", line=line))
            continue
        try:
            fps = None if spec.get("fps") is None else float(spec["fps"])
            offset = None if spec.get("offset") is None else float(spec["offset"])
        except (TypeError, ValueError):
            problems.error(DataError(path, f"camera {name}: fps and offset must be numbers", line=line))
            continue
        if fps is not None and not fps > 0:
            problems.error(DataError(path, f"camera {name}: fps must be > 0, got {fps}", line=line))
            continue
        out[str(name)] = {"fps": fps, "offset": offset, "line": line}
    return out


def _links(data: dict, path: Path, names: set[str], problems: Problems) -> list[Link] | None:
    if "links" not in data or data["links"] is None:
        return None
    raw = data["links"]
    if not isinstance(raw, list):
        problems.error(DataError(path, "'links' must be a list of {from, to, min, max}", line=data["__line__"]))
        return None
    links = []
    for item in raw:
        line = item.get("__line__") if isinstance(item, dict) else None
        if not isinstance(item, dict) or not {"from", "to"} <= set(item):
            problems.error(DataError(path, "a link needs 'from' and 'to' (and optional 'min', 'max' seconds)",
                                     line=line))
            continue
        a, b = str(item["from"]), str(item["to"])
        unknown = [c for c in (a, b) if c not in names]
        if unknown:
            problems.error(DataError(path, f"link names unknown camera {unknown[0]!r} (cameras: "
                                           f"{', '.join(sorted(names))})", line=line))
            continue
        try:
            lo, hi = float(item.get("min", 0.0)), float(item.get("max", float("inf")))
        except (TypeError, ValueError):
            problems.error(DataError(path, f"link {a}-{b}: min and max must be numbers of seconds", line=line))
            continue
        if a == b or lo < 0 or hi < lo:
            problems.error(DataError(path, f"link {a}-{b}: needs two cameras and 0 <= min <= max, got "
                                           f"min {lo}, max {hi}", line=line))
            continue
        links.append(Link(a, b, lo, hi))
    return links


# ---------------------------------------------------------------------------------------------------------------
# frames

def probe_video(path: Path) -> tuple[int, int, int, float]:
    """(width, height, frame count, fps) of a video; DataError when OpenCV cannot decode it."""
    cap = cv2.VideoCapture(str(path))
    try:
        ok, frame = cap.read() if cap.isOpened() else (False, None)
        if not ok or frame is None:
            raise DataError(path, "cannot be read as a video (OpenCV decodes no frame; is it truncated or in an "
                                  "unsupported codec?)")
        n = int(round(cap.get(cv2.CAP_PROP_FRAME_COUNT)))
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if n <= 0:  # containers without a frame count: count by decoding
            n = 1
            while cap.grab():
                n += 1
        return frame.shape[1], frame.shape[0], n, fps
    finally:
        cap.release()


def _frame_folder(folder: Path) -> tuple[int, int, list[str]]:
    files = [str(folder / name) for name in list_images(folder)]
    if not files:
        raise DataError(folder, "holds no images (expected 000001.jpg ...)")
    try:
        w, h, _ = image_header(files[0])
    except OSError as exc:
        raise DataError(files[0], f"cannot be read: {exc.strerror or exc}") from exc
    return w, h, files


def _find_source(folder: Path, layout: str) -> Path | None:
    if layout == "cityflow":
        for cand in (folder / "vdo.avi", folder / "img1"):
            if cand.exists():
                return cand
        return None
    videos = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    if videos:
        return videos[0]
    for d in FRAME_DIRS:
        if (folder / d).is_dir():
            return folder / d
    return None


def camera_number(name: str) -> int | None:
    """The number in a camera name: 'c001' -> 1, 'cam12' -> 12; None without digits."""
    m = re.search(r"(\d+)$", name)
    return int(m.group(1)) if m else None


# ---------------------------------------------------------------------------------------------------------------

def detect_layout(root: Path) -> str | None:
    """'generic' (cameras.yaml), 'cityflow' (camera folders with vdo.avi or img1/) or None."""
    root = Path(root)
    if (root / "cameras.yaml").is_file():
        return "generic"
    if root.is_dir() and any((d / "vdo.avi").exists() or (d / "img1").is_dir() for d in root.iterdir() if d.is_dir()):
        return "cityflow"
    return None


def _timestamps(root: Path, problems: Problems) -> tuple[Path | None, dict[str, tuple[float, int]]]:
    name = root.resolve().name
    for base in (root, root.parent, root.parent.parent):
        path = base / "cam_timestamp" / f"{name}.txt"
        if path.is_file():
            break
    else:
        return None, {}
    out: dict[str, tuple[float, int]] = {}
    for no, raw in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        parts = raw.replace(",", " ").split()
        if not parts:
            continue
        try:
            if len(parts) != 2:
                raise ValueError
            out[parts[0]] = (float(parts[1]), no)
        except ValueError:
            problems.error(DataError(path, f"expected '<camera> <offset seconds>', got {raw.strip()!r}", line=no))
    return path, out


def read_scene(root: str | os.PathLike, tracks: str = "mtsc", tracker: str | None = None,
               problems: Problems | None = None) -> Scene:
    """Read and validate the cameras of the scene at ``root`` (either layout). ``tracks``: 'mtsc' (the
    single-camera tracker's output; CityFlow: mtsc_<tracker>.txt, the only or first one when ``tracker`` is None)
    'gt', or 'any' (mtsc, else gt: for checking). Raises the first DataError (``problems`` None) or collects
    them all."""
    sink = Problems.of(problems)
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "is not a folder" if root.exists() else "no such folder")
    layout = detect_layout(root)
    if layout is None:
        raise DataError(root, "is not a scene: no cameras.yaml (generic layout) and no camera folder with vdo.avi "
                              "or img1/ (CityFlow layout)")
    if tracks not in ("mtsc", "gt", "any"):
        raise DataError(None, f"--tracks must be mtsc or gt, got {tracks!r}")
    settings: dict[str, dict] = {}
    topo_path: Path | None = None
    topo: dict = {}
    if layout == "generic":
        topo_path = root / "cameras.yaml"
    elif (root / "topology.yaml").is_file():
        topo_path = root / "topology.yaml"
    if topo_path is not None:
        topo = read_topology_yaml(topo_path)
        settings = _camera_settings(topo, topo_path, sink)
    ts_path, stamps = (None, {}) if layout == "generic" else _timestamps(root, sink)
    if layout == "cityflow" and ts_path is None:
        sink.error(DataError(root / "cam_timestamp" / f"{root.resolve().name}.txt",
                             "no cam_timestamp file (looked in the scene folder, its parent and grandparent)"))
    if layout == "generic":
        folders = sorted(d for d in root.iterdir()
                         if d.is_dir() and (d.name in settings or (d / "tracks.txt").exists()))
        for name, s in settings.items():
            if not (root / name).is_dir():
                sink.error(DataError(topo_path, f"camera {name!r} has no folder {root / name}", line=s["line"]))
    else:
        folders = sorted(d for d in root.iterdir() if d.is_dir() and _find_source(d, layout) is not None)
    cameras: list[Camera] = []
    used_ids: dict[int, str] = {}
    for i, folder in enumerate(folders):
        name = folder.name
        source = _find_source(folder, layout)
        if source is None:
            sink.error(DataError(folder, "holds no video (" + ", ".join(VIDEO_SUFFIXES) + ") and no frames/ or img1/"))
            continue
        try:
            if source.is_file():
                w, h, n, vfps = probe_video(source)
                files: list[str] = []
            else:
                w, h, files = _frame_folder(source)
                n, vfps = len(files), 0.0
        except DataError as err:
            sink.error(err)
            continue
        s = settings.get(name, {})
        fps = s.get("fps") or vfps or None
        if fps is None:
            fps = DEFAULT_FPS
            log.info("%s: no frame rate known (frame folder, none in %s); assuming %g fps", folder,
                        topo_path or "a topology.yaml", DEFAULT_FPS)
        if layout == "generic":
            offset = s.get("offset")
            if offset is None:
                sink.error(DataError(topo_path, f"camera {name!r} has no time offset ('offset: SECONDS')",
                                     line=s.get("line")))
                continue
        else:
            if name not in stamps:
                if ts_path is not None:
                    sink.error(DataError(ts_path, f"camera {name} has no timestamp line"))
                continue
            offset = stamps[name][0]
        cid = camera_number(name) if layout == "cityflow" else (camera_number(name) or i + 1)
        if cid is None:
            sink.error(DataError(folder, "a CityFlow camera folder is named c<number>, e.g. c001"))
            continue
        if cid in used_ids:
            sink.error(DataError(folder, f"camera number {cid} is also the number of {used_ids[cid]}"))
            continue
        used_ids[cid] = name
        gt = next((p for p in (folder / "gt" / "gt.txt", folder / "gt.txt") if p.is_file()), None)
        if layout == "generic":
            mtsc = folder / "tracks.txt" if (folder / "tracks.txt").is_file() else None
        else:
            found = sorted((folder / "mtsc").glob("mtsc_*.txt")) if (folder / "mtsc").is_dir() else []
            if tracker is not None:
                found = [p for p in found if p.stem == f"mtsc_{tracker}"]
            mtsc = found[0] if found else None
        chosen = gt if tracks == "gt" else mtsc if tracks == "mtsc" else (mtsc or gt)
        if chosen is None:
            want = ("gt/gt.txt" if tracks == "gt" else
                    "tracks.txt" if layout == "generic" else f"mtsc/mtsc_{tracker or '<tracker>'}.txt")
            sink.error(DataError(folder, f"has no {want} (--tracks {tracks})"))
            continue
        roi = folder / "roi.jpg" if (folder / "roi.jpg").is_file() else None
        cameras.append(Camera(name, cid, folder, source, float(fps), float(offset), int(w), int(h), int(n),
                              chosen, gt, roi, files))
    for name, (_, no) in stamps.items():
        if not (root / name).is_dir():
            sink.warn(DataError(ts_path, f"camera {name} has no folder in {root}", line=no))
    if not cameras and not sink.errors:
        sink.error(DataError(root, "holds no camera"))
    links = _links(topo, topo_path, {c.name for c in cameras} | set(settings), sink) if topo_path else None
    if links is not None:
        have = {c.name for c in cameras}
        links = [ln for ln in links if ln.a in have and ln.b in have]
    return Scene(root, layout, cameras, links, topo_path)


# ---------------------------------------------------------------------------------------------------------------
# tracks

TRACK_COLUMNS = ("frame", "id", "left", "top", "width", "height")


def read_tracks(path: Path, camera: Camera, problems: Problems | None = None) -> np.ndarray:
    """MOT-format rows of ``path`` checked against ``camera`` -> (K, 6) float64 [frame, id, left, top, width,
    height]; every bad line a DataError naming the file and the line (raised, or collected by ``problems``)."""
    sink = Problems.of(problems)
    rows = []
    seen: set[tuple[int, int]] = set()
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise DataError(path, f"cannot be read: {exc.strerror or exc}") from exc
    W, H = camera.width, camera.height
    for no, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        parts = line.replace(",", " ").split()
        if len(parts) < 6:
            sink.error(DataError(path, f"expected at least 6 values (frame,id,left,top,width,height), got "
                                       f"{len(parts)}", line=no))
            continue
        try:
            frame_f, id_f, left, top, w, h = (float(p) for p in parts[:6])
        except ValueError:
            sink.error(DataError(path, f"non-numeric value in {line[:60]!r}", line=no))
            continue
        frame, tid = int(frame_f), int(id_f)
        if frame != frame_f or tid != id_f:
            sink.error(DataError(path, "frame and id must be integers", line=no))
            continue
        if frame < 1:
            sink.error(DataError(path, f"frame {frame}: frames are numbered from 1", line=no))
            continue
        if frame > camera.frames:
            sink.error(DataError(path, f"frame {frame} is past the end of {camera.source.name} "
                                       f"({camera.frames} frames)", line=no))
            continue
        if not (w > 0 and h > 0):
            sink.error(DataError(path, f"box width and height must be > 0, got {w:g} x {h:g}", line=no))
            continue
        if left >= W or top >= H or left + w <= 0 or top + h <= 0:
            sink.error(DataError(path, f"box (left {left:g}, top {top:g}, {w:g} x {h:g}) lies outside the "
                                       f"{W} x {H} frame", line=no))
            continue
        if (frame, tid) in seen:
            sink.error(DataError(path, f"id {tid} appears twice in frame {frame}", line=no))
            continue
        seen.add((frame, tid))
        rows.append((frame, tid, left, top, w, h))
    return np.asarray(rows, np.float64).reshape(-1, 6)


def check_scene(root: str | os.PathLike, tracks: str = "any") -> tuple[Scene | None, Problems]:
    """Every problem of a scene (cameras, timestamps, topology, every line of every track and gt file)."""
    sink = Problems()
    try:
        scene = read_scene(root, tracks=tracks, problems=sink)
    except DataError as err:
        sink.errors.append(err)
        return None, sink
    for cam in scene.cameras:
        for path in dict.fromkeys(p for p in (cam.tracks, cam.gt) if p is not None):
            try:
                read_tracks(path, cam, sink)
            except DataError as err:
                sink.errors.append(err)
    return scene, sink


def scene_report(root: str | os.PathLike) -> dict:
    """``pamtri data check`` for a scene: the cameras and every problem (as ``datacheck.check_dataset``'s dict)."""
    scene, sink = check_scene(root)
    problems = [dict(severity=sev, split=None, file=e.path, line=e.line, element=e.element, message=e.reason,
                     text=str(e)) for sev, errs in (("error", sink.errors), ("warning", sink.warnings)) for e in errs]
    cams = [] if scene is None else [dict(name=c.name, id=c.id, fps=c.fps, offset=c.offset, frames=c.frames,
                                          size=f"{c.width}x{c.height}", source=c.source.name,
                                          tracks=None if c.tracks is None else c.tracks.name,
                                          gt=c.gt is not None, roi=c.roi is not None) for c in scene.cameras]
    n_err = len(sink.errors)
    return {"root": str(Path(root).resolve()), "format": "scene",
            "layout": None if scene is None else scene.layout, "ok": n_err == 0, "splits": {}, "cameras": cams,
            "links": None if scene is None or scene.links is None else len(scene.links),
            "errors": n_err, "warnings": len(sink.warnings), "problems": problems}


def format_scene_report(report: dict) -> str:
    """The human-readable text of :func:`scene_report`."""
    lines = [f"scene {report['root']} (layout: {report['layout']})", "",
             f"{'camera':<8} {'id':>4} {'fps':>6} {'offset':>8} {'frames':>7} {'size':>10}  tracks"]
    for c in report["cameras"]:
        lines.append(f"{c['name']:<8} {c['id']:>4} {c['fps']:>6g} {c['offset']:>8.2f} {c['frames']:>7} "
                     f"{c['size']:>10}  {c['tracks']}{' + gt' if c['gt'] else ''}{' + roi' if c['roi'] else ''}")
    links = report["links"]
    lines += ["", "topology: " + ("none (every camera pair may connect)" if links is None else f"{links} links")]
    e, w = report["errors"], report["warnings"]
    lines.append(f"{e} error{'s' * (e != 1)}, {w} warning{'s' * (w != 1)}" + (":" if e or w else ""))
    lines += [f"{p['severity']}: {p['text']}" for p in report["problems"]]
    lines.append("OK" if report["ok"] else "FAILED: problems found")
    return "\n".join(lines)
