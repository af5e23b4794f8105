"""CityFlow-ReID / AI City Challenge Track 2: ``train_label.xml``, name lists and track files.

```
image_train/ image_query/ image_test/     000001.jpg ... (each split numbered from 1)
train_label.xml                            <Item imageName="000001.jpg" vehicleID="0001" cameraID="c012"/>
name_query.txt, name_test.txt              one image name per line (name_train.txt optional)
test_track.txt (train_track.txt)           one track per line: space-separated image names
```

Query and test images carry no public identity labels: reading them gives records with vehicle id and
camera -1. Evaluation needs ground truth the user supplies (``gt=`` / ``--gt``), in either form:

- text, one image per line: ``<image name> <vehicle id> <camera id>`` (whitespace or commas; camera as
  ``12`` or ``c012``; ``#`` starts a comment);
- XML in the form of ``train_label.xml`` (``<Item imageName vehicleID cameraID/>``).

Files named ``<split>_gt.txt`` or ``<split>_label.xml`` in the data set root are picked up automatically.
"""
from __future__ import annotations

import os
from pathlib import Path

from pamtri.common.errors import DataError
from pamtri.data.records import UNLABELLED, Problems, Record, resolve_image

from ._common import check_split, image_dir, locate_image, names_of_split, parse_camera, parse_int, read_label_xml

CITYFLOW_ATTRIBUTES = ("imageName", "vehicleID", "cameraID")
GT_HELP = ("lines '<image> <vehicle id> <camera id>' (e.g. '000001.jpg 0012 c015'), or an XML with "
           "<Item imageName vehicleID cameraID/> like train_label.xml")


def ground_truth_path(root: str | os.PathLike, split: str) -> Path | None:
    """``<split>_gt.txt`` or ``<split>_label.xml`` in ``root`` when one exists."""
    for name in (f"{split}_gt.txt", f"{split}_label.xml"):
        p = Path(root) / name
        if p.is_file():
            return p
    return None


def read_ground_truth(path: str | os.PathLike, problems: Problems | None = None) -> dict[str, tuple[int, int]]:
    """image name -> (vehicle id, camera id) from a user-supplied ground-truth file (text or XML)."""
    path = Path(path)
    sink = Problems.of(problems)
    out: dict[str, tuple[int, int]] = {}
    first: dict[str, int] = {}
    if path.suffix.lower() == ".xml":
        for item in read_label_xml(path, sink, CITYFLOW_ATTRIBUTES):
            a, el = item.attrs, item.element()
            try:
                name = a["imageName"].strip()
                if name in first:
                    raise DataError(path, f"duplicate imageName {name!r} (first on line {first[name]})", item.line, el)
                first[name] = item.line
                out[name] = (parse_int(a["vehicleID"], "vehicleID", path, item.line, el),
                             parse_camera(a["cameraID"], path, item.line, el))
            except DataError as err:
                sink.error(err)
        return out
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        sink.error(DataError(path, "ground-truth file does not exist; expected " + GT_HELP))
        return out
    except UnicodeDecodeError as exc:
        sink.error(DataError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})"))
        return out
    for line, raw in enumerate(text.splitlines(), start=1):
        body = raw.split("#", 1)[0].replace(",", " ").split()
        if not body:
            continue
        try:
            if len(body) != 3:
                raise DataError(path, f"expected 3 fields '<image> <vehicle id> <camera id>', got {len(body)}", line)
            name = body[0]
            if name in first:
                raise DataError(path, f"duplicate image name {name!r} (first on line {first[name]})", line)
            first[name] = line
            out[name] = (parse_int(body[1], "vehicle id", path, line), parse_camera(body[2], path, line))
        except DataError as err:
            sink.error(err)
    if not out and not first:
        sink.error(DataError(path, "ground-truth file has no entries; expected " + GT_HELP))
    return out


def require_ground_truth(records: list[Record], split: str, root: str | os.PathLike | None = None) -> None:
    """DataError unless every record has a vehicle id: CityFlow query/test need a user-supplied ground truth."""
    if any(r.vehicle_id < 0 for r in records):
        where = f" or put {split}_gt.txt in {root}" if root is not None else ""
        raise DataError(root, f"the {split} images carry no identity labels (CityFlow-ReID publishes none for "
                              f"query and test); evaluation needs the ground truth: pass --gt FILE{where}, "
                              f"with {GT_HELP}")


def read_tracks(path: str | os.PathLike, problems: Problems | None = None) -> list[list[str]]:
    """Tracks of a ``*_track.txt`` file: one list of image names per non-blank line, in file order."""
    path = Path(path)
    sink = Problems.of(problems)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        sink.error(DataError(path, "track file does not exist"))
        return []
    except UnicodeDecodeError as exc:
        sink.error(DataError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})"))
        return []
    tracks, first = [], {}
    for line, raw in enumerate(text.splitlines(), start=1):
        names = raw.split()
        if not names:
            continue
        try:
            for name in names:
                resolve_image(path.parent, name, path, line)
                if name in first:
                    raise DataError(path, f"image {name!r} is already in the track on line {first[name]}", line)
            for name in names:
                first[name] = line
        except DataError as err:
            sink.error(err)
            continue
        tracks.append(names)
    return tracks


def _read_train(root: Path, check_images: bool, sink: Problems) -> list[Record]:
    path = root / "train_label.xml"
    folder = image_dir(root, "train")
    records, first = [], {}
    for item in read_label_xml(path, sink, CITYFLOW_ATTRIBUTES):
        a, el = item.attrs, item.element()
        try:
            name = a["imageName"].strip()
            if name in first:
                raise DataError(path, f"duplicate imageName {name!r} (first on line {first[name]})", item.line, el)
            first[name] = item.line
            vid = parse_int(a["vehicleID"], "vehicleID", path, item.line, el)
            cam = parse_camera(a["cameraID"], path, item.line, el)
            full = locate_image(folder, name, path, item.line, check_images)
        except DataError as err:
            sink.error(err)
            continue
        records.append(Record(path=full, vehicle_id=vid, camera_id=cam))
    return records


def read_cityflow_split(root: str | os.PathLike, split: str, gt: str | os.PathLike | None = None,
                        check_images: bool = False, problems: Problems | None = None) -> list[Record]:
    """Records of a CityFlow-ReID split; query/test get vehicle and camera ids only from ground truth."""
    root = Path(root)
    split = check_split(split, root)
    sink = Problems.of(problems)
    if split == "train":
        if gt is not None:
            raise DataError(gt, "the train split is labelled by train_label.xml; --gt is for query/test")
        return _read_train(root, check_images, sink)
    gt_path = Path(gt) if gt is not None else ground_truth_path(root, split)
    truth = read_ground_truth(gt_path, sink) if gt_path is not None else None
    if not truth:
        truth = None  # unreadable or empty: already reported; leave the split unlabelled
    source, names = names_of_split(root, split, sink)
    folder = image_dir(root, split)
    records = []
    for line, name in names:
        try:
            full = locate_image(folder, name, source, line, check_images)
            vid = cam = UNLABELLED
            if truth is not None:
                if name not in truth:
                    raise DataError(gt_path, f"no ground truth for image {name!r} ({source.name}"
                                             + (f" line {line})" if line else ")"))
                vid, cam = truth[name]
        except DataError as err:
            sink.error(err)
            continue
        records.append(Record(path=full, vehicle_id=vid, camera_id=cam))
    return records
