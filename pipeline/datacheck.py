"""``pamtri data check``: validate a data set tree in any supported format and collect every problem.

Each split is read by its format's reader in lenient mode (every malformed row, item or name is recorded
and skipped, so one pass lists all problems), then checked further; VehicleID and VERI-Wild test splits are
read once per test set present (``test_800``, ``query_3000``, ...):

- images: every listed image must exist and be non-empty; its header (JPEG frame header, PNG IHDR, BMP)
  is parsed for all images (cheap: a few small reads per file), giving size and channels; a full decode
  (``pamtri.data.images.read_image``) runs on at most ``max_decodes`` images spread evenly over each split
  (0 = headers only, -1 = decode all). A file whose header does not parse is reported with the decoder's
  message and an image under 4 pixels a side as an error, so every image error reads as the training commands
  word it. A size that disagrees with the pose labels is an error; grayscale, CMYK / alpha images and very
  small or very elongated images are warnings.
- across splits: an image name (VeRi-style names only; CityFlow numbers each split from 1) in train and in
  query/test is an error; identities in both train and test are a warning; a labelled query identity
  absent from the gallery is an error (a gallery match only from the same camera: warning); train
  identities with a single image, splits without camera ids, unlabelled query/test (CityFlow without
  ground truth) and images in an image folder that no label lists are warnings (the first two are errors
  for training with the triplet loss and for evaluation with the same-camera rule, with these words:
  ``pamtri.data.readers.single_image_identities`` / ``missing_cameras``); CityFlow track files must be
  well-formed and name only images of their split.

Errors make the check fail (exit 1); warnings are reported but do not.
"""
from __future__ import annotations

import math
import os
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from pamtri.common.errors import DataError
from pamtri.data.images import IMAGE_SUFFIXES, image_header, read_image, too_small
from pamtri.data.readers import (
    SIZED_SPLITS,
    available_splits,
    available_test_sizes,
    check_format,
    missing_cameras,
    queries_without_gallery,
    read_split,
    read_tracks,
    single_image_identities,
)
from pamtri.data.readers._common import image_dir
from pamtri.data.records import DOMAIN_NAMES, Problems, Record, parse_veri_name

DEFAULT_MAX_DECODES = 200
MIN_SIDE_WARN = 16          # pixels; smaller crops carry little identity information
MAX_ASPECT_WARN = 6.0       # longer side / shorter side
def _problem(err: DataError, severity: str, split: str | None) -> dict:
    return {"severity": severity, "split": split, "file": err.path, "line": err.line, "element": err.element,
            "message": err.reason, "text": str(err)}


def _coverage(n: int, total: int) -> float:
    return round(n / total, 4) if total else 0.0


def split_summary(records: list[Record]) -> dict:
    """Counts and label coverage (fractions 0-1) of one split's records."""
    n = len(records)
    ids = {r.vehicle_id for r in records if r.vehicle_id >= 0}
    cams = {r.camera_id for r in records if r.camera_id >= 0}
    domains = Counter(DOMAIN_NAMES.get(r.domain, str(r.domain)) for r in records)
    return {
        "images": n,
        "identities": len(ids),
        "cameras": len(cams),
        "labelled_ids": _coverage(sum(r.vehicle_id >= 0 for r in records), n),
        "color": _coverage(sum(r.color_id >= 0 for r in records), n),
        "type": _coverage(sum(r.type_id >= 0 for r in records), n),
        "orientation": _coverage(sum(math.isfinite(r.orientation) for r in records), n),
        "keypoints": _coverage(sum(r.keypoints is not None for r in records), n),
        "domains": dict(sorted(domains.items())),
    }


def _decode_indices(n: int, max_decodes: int) -> set[int]:
    if max_decodes < 0 or n <= max_decodes:
        return set(range(n))
    if max_decodes == 0:
        return set()
    return {int(i) for i in np.linspace(0, n - 1, max_decodes).round()}


def _decode_error(path: str) -> DataError | None:
    """The DataError ``pamtri.data.images.read_image`` (what training reads images with) raises for ``path``, or
    None."""
    try:
        read_image(path)
    except DataError as err:
        return err
    return None


def _check_images(records: list[Record], sink: Problems, max_decodes: int, seen: dict) -> tuple[int, int]:
    """Header for every record, full decode for a spread-out sample; returns (headers read, decoded)."""
    headers = decoded = 0
    decode = _decode_indices(len(records), max_decodes)
    for i, r in enumerate(records):
        path = r.path
        if not os.path.isfile(path):
            continue  # the reader reported it (check_images=True), naming the label file and line
        if path not in seen:
            try:
                seen[path] = image_header(path)
            except DataError as err:
                seen[path] = None
                # the decoder's message is the one training gives; the header's when OpenCV reads the file
                sink.error(_decode_error(path) or err)
            except OSError as exc:
                seen[path] = None
                sink.error(DataError(path, f"cannot read ({exc.strerror})"))
            headers += 1
            info = seen[path]
            if info is not None:
                w, h, c = info
                if c == 1:
                    sink.warn(DataError(path, "grayscale image (1 channel); it will be read as 3 equal channels"))
                elif c in (2, 4):
                    sink.warn(DataError(path, f"{c}-channel image (alpha or CMYK); it will be converted to RGB"))
                if too_small(w, h) is not None:
                    sink.error(DataError(path, too_small(w, h)))  # what decoding it says, without decoding
                    seen[path] = info = None
                elif min(w, h) < MIN_SIDE_WARN:
                    sink.warn(DataError(path, f"very small image ({w}x{h} pixels)"))
                elif max(w, h) > MAX_ASPECT_WARN * min(w, h):
                    sink.warn(DataError(path, f"very elongated image ({w}x{h} pixels)"))
            if i in decode and info is not None:
                decoded += 1
                if (err := _decode_error(path)) is not None:
                    sink.error(err)
        info = seen.get(path)
        if info is not None and r.width > 0 and r.height > 0 and (r.width, r.height) != info[:2]:
            sink.error(DataError(path, f"image is {info[0]}x{info[1]} pixels but its labels say "
                                       f"{r.width}x{r.height}"))
    return headers, decoded


def _unlisted(root: Path, split: str, records: list[Record], sink: Problems) -> None:
    folder = image_dir(root, split)
    if not folder.is_dir():
        return
    listed = {os.path.normcase(os.path.abspath(r.path)) for r in records}
    extra = sorted(p.name for p in folder.iterdir()
                   if p.suffix.lower() in IMAGE_SUFFIXES and os.path.normcase(os.path.abspath(p)) not in listed)
    if extra:
        shown = ", ".join(extra[:5]) + (", ..." if len(extra) > 5 else "")
        sink.warn(DataError(folder, f"{len(extra)} image(s) not listed by the {split} labels: {shown}"))


def _ids_text(ids) -> str:
    ids = sorted(ids)
    return ", ".join(str(i) for i in ids[:10]) + (", ..." if len(ids) > 10 else "")


def _cross_split(root: Path, splits: dict[str, list[Record]], sink: Problems, cameras: bool = True) -> None:
    """Checks across the splits of one test set; ``cameras``: the format has camera ids (VehicleID has none)."""
    train = splits.get("train", [])
    train_names = {r.name for r in train if parse_veri_name(r.name)}
    for split in ("query", "test"):
        for r in splits.get(split, []):
            if r.name in train_names:
                sink.error(DataError(r.path, f"image name {r.name!r} is in both train and {split}"))
    train_ids = {r.vehicle_id for r in train if r.vehicle_id >= 0}
    test_ids = {r.vehicle_id for r in splits.get("test", []) if r.vehicle_id >= 0}
    shared = train_ids & test_ids
    if shared:
        sink.warn(DataError(root, f"{len(shared)} identities appear in both train and test "
                                  f"(ReID protocols keep them disjoint): {_ids_text(shared)}"))
    if (single := single_image_identities(train, root)) is not None:
        sink.warn(single)  # an error for training with the triplet loss on (reid.train)
    query, gallery = splits.get("query"), splits.get("test")
    if query and gallery is not None:
        for err in queries_without_gallery(query, gallery):
            sink.error(err)
        cams_of = defaultdict(set)
        for r in gallery:
            if r.vehicle_id >= 0:
                cams_of[r.vehicle_id].add(r.camera_id)
        for r in query if cameras else ():
            cams = cams_of.get(r.vehicle_id)
            if r.vehicle_id >= 0 and cams and r.camera_id >= 0 and cams == {r.camera_id}:
                sink.warn(DataError(r.path, f"query identity {r.vehicle_id} appears in the gallery only in its own "
                                            f"camera {r.camera_id}, so evaluation finds no valid match"))
    for split, records in splits.items():
        if cameras and split == "train" and records and all(r.camera_id < 0 for r in records):
            sink.warn(DataError(root, "split 'train' has no camera ids"))
        elif cameras and split != "train" and (cams := missing_cameras(records, split, root)) is not None:
            sink.warn(cams)  # an error for evaluation unless eval.ignore_cameras
        if split != "train" and records and all(r.vehicle_id < 0 for r in records):
            sink.warn(DataError(root, f"split {split!r} has no identity labels; evaluation needs a ground-truth "
                                      f"file (--gt)"))


def _check_tracks(root: Path, splits: dict[str, list[Record]], sink: Problems) -> None:
    """CityFlow ``<split>_track.txt``: well-formed, and every name one of the split's images."""
    for split, records in splits.items():
        path = root / f"{split}_track.txt"
        if not path.is_file():
            continue
        read_tracks(path, sink)
        names = {r.name for r in records}
        for line, raw in enumerate(path.read_text(encoding="utf-8-sig", errors="replace").splitlines(), start=1):
            for name in raw.split():
                if name not in names:
                    sink.error(DataError(path, f"image {name!r} is not in the {split} split", line))


def check_dataset(root: str | os.PathLike, fmt: str = "auto", max_decodes: int = DEFAULT_MAX_DECODES) -> dict:
    """Validate the tree at ``root``: per-split summary and every problem found (see module docstring).

    Returns a JSON-serialisable dict: ``root``, ``format``, ``ok``, ``splits`` (name -> summary),
    ``problems`` (dicts with severity, split, file, line, element, message, text), ``errors``,
    ``warnings`` (counts) and ``images`` (headers read, images decoded). Raises DataError only when there is
    no tree to check: ``root`` is not a folder, or its format is unknown / undetectable.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "is not a folder" if root.exists() else "no such folder")
    from pamtri.pipeline.mtmc.scene import detect_layout, scene_report
    if fmt == "scene" or (fmt == "auto" and detect_layout(root) is not None):  # a multi-camera scene (mtmc)
        return scene_report(root)
    fmt = check_format(fmt, root)
    problems: list[dict] = []
    splits: dict[str, list[Record]] = {}
    seen: dict = {}
    headers = decoded = 0
    names = available_splits(root, fmt)
    if not names:
        problems.append(_problem(DataError(root, f"no split found (expected image_<split>/ and its labels for "
                                                 f"{fmt})"), "error", None))
    sizes = available_test_sizes(root, fmt) or (None,)  # VehicleID, VERI-Wild: every test set is checked
    parts = [(split, size) for split in names for size in (sizes if split in SIZED_SPLITS.get(fmt, ()) else (None,))]
    for split, size in parts:
        name = split if size is None else f"{split}_{size}"
        sink = Problems()
        try:
            records = read_split(root, split, fmt, check_images=True, problems=sink, test_size=size)
        except DataError as err:  # a split the format does not have
            sink.errors.append(err)
            records = []
        h, d = _check_images(records, sink, max_decodes, seen)
        headers, decoded = headers + h, decoded + d
        _unlisted(root, split, records, sink)
        splits[name] = records
        problems += [_problem(e, "error", name) for e in sink.errors]
        problems += [_problem(w, "warning", name) for w in sink.warnings]
    sink = Problems()
    for size in sizes:
        group = {split: splits[split if sz is None else f"{split}_{sz}"] for split, sz in parts if sz in (None, size)}
        _cross_split(root, group, sink, cameras=fmt != "vehicleid")
    if fmt == "cityflow":
        _check_tracks(root, splits, sink)
    problems += [_problem(e, "error", None) for e in sink.errors]
    problems += [_problem(w, "warning", None) for w in sink.warnings]
    unique, seen_text = [], set()
    for p in problems:  # query and test share test_label.xml (VeRi): report its problems once
        if (p["severity"], p["text"]) not in seen_text:
            seen_text.add((p["severity"], p["text"]))
            unique.append(p)
    problems = sorted(unique, key=lambda p: p["severity"] != "error")  # stable: errors first, in reading order
    n_err = sum(p["severity"] == "error" for p in problems)
    return {
        "root": str(root.resolve()),
        "format": fmt,
        "ok": n_err == 0,
        "splits": {s: split_summary(r) for s, r in splits.items()},
        "errors": n_err,
        "warnings": len(problems) - n_err,
        "images": {"headers": headers, "decoded": decoded, "max_decodes": max_decodes},
        "problems": problems,
    }


def format_report(report: dict) -> str:
    """The human-readable text of a ``check_dataset`` report: a table per split, then one line per problem."""
    if report["format"] == "scene":
        from pamtri.pipeline.mtmc.scene import format_scene_report
        return format_scene_report(report)
    lines = [f"data set {report['root']} (format: {report['format']})", ""]
    w = max([7] + [len(name) for name in report["splits"]])  # test sets of several sizes: "query_10000"
    head = f"{'split':<{w}} {'images':>8} {'ids':>6} {'cameras':>7} {'colour':>7} {'type':>7} {'orient':>7} " \
           f"{'keypts':>7}  domains"
    lines.append(head)
    for name, s in report["splits"].items():
        pct = [f"{100 * s[k]:6.1f}%" for k in ("color", "type", "orientation", "keypoints")]
        doms = ", ".join(f"{k} {v}" for k, v in s["domains"].items()) or "-"
        lines.append(f"{name:<{w}} {s['images']:>8} {s['identities']:>6} {s['cameras']:>7} {pct[0]:>7} {pct[1]:>7} "
                     f"{pct[2]:>7} {pct[3]:>7}  {doms}")
    im = report["images"]
    lines += ["", f"images: {im['headers']} headers read, {im['decoded']} fully decoded "
                  f"(--max-decodes {im['max_decodes']})"]
    e, w = report["errors"], report["warnings"]
    lines.append(f"{e} error{'s' * (e != 1)}, {w} warning{'s' * (w != 1)}" + (":" if e or w else ""))
    for p in report["problems"]:
        lines.append(f"{p['severity']}: {p['text']}")
    lines.append("OK" if report["ok"] else "FAILED: problems found")
    return "\n".join(lines)
