"""VeRi-776: ``image_{train,query,test}/``, ``name_{split}.txt``, ``train_label.xml`` / ``test_label.xml``.

Label XML items: ``<Item imageName="0001_c001_00016450_0.jpg" vehicleID="0001" cameraID="c001" colorID="1"
typeID="4"/>``, colour 1-10 and type 1-9 (records are 0-based). The files declare gb2312. Vehicle and camera
come from the image name and are checked against the XML. Some test items carry ``typeID="0"`` (a known
errata): the type is then unlabelled (-1) with a warning. Query images also appear in ``image_test/``;
``test_label.xml`` labels both. When the reference ReID label CSV ``label_<split>.csv`` is present, its
keypoints (x, y, confidence in pixels) are attached.

View labels: the orientation annotations of VehicleReIDKeyPointData (Wang et al., ICCV 2017, the labels TransReID's
VeRi SIE views come from), read when ``keypoint_train.txt`` (train split) / ``keypoint_test.txt`` (query and test)
sit in the VeRi root or in ``VehicleReIDKeyPointData/`` beside it. Each line, as the data set's README describes it:
``<image path> x1 y1 ... x20 y20 <orientation>``, 20 keypoints in pixels (-1 when invisible) and an orientation
class 0-7 (front, rear, left, left front, left rear, right, right front, right rear). Records carry class c as the
orientation (c + 0.5) x 45 degrees, so ``orientation_bin(..., 8)`` (model.orientation_bins: 8) gives back c.
"""
from __future__ import annotations

import os
from pathlib import Path

from pamtri.common.errors import DataError
from pamtri.data.attributes import VERI_COLORS, VERI_TYPES
from pamtri.data.labels import read_reid_csv
from pamtri.data.records import UNLABELLED, Problems, Record, parse_veri_name

from ._common import (
    XmlItem,
    check_split,
    image_dir,
    locate_image,
    names_of_split,
    parse_camera,
    parse_class,
    parse_int,
    read_label_xml,
)

VERI_ATTRIBUTES = ("imageName", "vehicleID", "cameraID", "colorID", "typeID")


def _parse_item(item: XmlItem, path: Path, problems: Problems) -> tuple[int, int, int, int]:
    """(vehicle id, camera id, colour, type) of one VeRi ``<Item>``, checked against its image name."""
    a, el = item.attrs, item.element()
    name = a["imageName"].strip()
    parsed = parse_veri_name(name)
    if parsed is None:
        raise DataError(path, f"imageName {name!r} is not a VeRi name <id>_c<camera>_<frame>_<n>.jpg", item.line, el)
    vid = parse_int(a["vehicleID"], "vehicleID", path, item.line, el)
    cam = parse_camera(a["cameraID"], path, item.line, el)
    if (vid, cam) != parsed:
        raise DataError(path, f"vehicleID {a['vehicleID']!r} / cameraID {a['cameraID']!r} disagree with the image "
                              f"name (vehicle {parsed[0]}, camera {parsed[1]})", item.line, el)
    color = parse_class(a["colorID"], "colorID", 1, len(VERI_COLORS), path, item.line, el)
    if a["typeID"].strip() == "0":
        problems.warn(DataError(path, 'typeID="0" (known VeRi errata): type left unlabelled', item.line, el))
        vtype = UNLABELLED
    else:
        vtype = parse_class(a["typeID"], "typeID", 1, len(VERI_TYPES), path, item.line, el)
    return vid, cam, color, vtype


def read_veri_labels(path: str | os.PathLike, problems: Problems | None = None) -> dict[str, tuple]:
    """image name -> (vehicle id, camera id, colour, type) from a VeRi label XML (0-based colour/type)."""
    path = Path(path)
    sink = Problems.of(problems)
    out: dict[str, tuple] = {}
    first: dict[str, int] = {}
    for item in read_label_xml(path, sink, VERI_ATTRIBUTES):
        name = item.attrs["imageName"].strip()
        try:
            if name in first:
                raise DataError(path, f"duplicate imageName {name!r} (first on line {first[name]})",
                                item.line, item.element())
            first[name] = item.line
            out[name] = _parse_item(item, path, sink)
        except DataError as err:
            sink.error(err)
    return out


def attach_reid_keypoints(records: list[Record], csv_path: Path, problems: Problems) -> None:
    """Copy keypoints (x, y, confidence) from a reference ReID label CSV onto records with the same name."""
    kps = {r.name: r.keypoints for r in read_reid_csv(csv_path, problems=problems)}
    _attach(records, kps, "keypoints", csv_path, "keypoint row", problems)


def _attach(records: list[Record], values: dict, field: str, path: Path, what: str, problems: Problems) -> None:
    """Set ``field`` of each record to its value by image name; one warning counting the records without one."""
    missing = 0
    for r in records:
        if r.name in values:
            setattr(r, field, values[r.name])
        else:
            missing += 1
    if missing:
        problems.warn(DataError(path, f"{missing} of {len(records)} images have no {what}"))


VIEW_FILES = {"train": "keypoint_train.txt", "query": "keypoint_test.txt", "test": "keypoint_test.txt"}
VIEW_CLASSES = 8


def read_veri_views(path: str | os.PathLike, problems: Problems | None = None) -> dict[str, int]:
    """{image file name: orientation class 0-7} of a VehicleReIDKeyPointData ``keypoint_*.txt`` file."""
    path, sink, out = Path(path), Problems.of(problems), {}
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            try:
                if len(fields) != 42:
                    raise DataError(path, f"expected an image path, 40 coordinates and an orientation (42 fields), "
                                          f"got {len(fields)}", line_no)
                view = parse_int(fields[-1], "orientation", path, line_no)
                if not 0 <= view < VIEW_CLASSES:
                    raise DataError(path, f"orientation {view} is not a class 0-{VIEW_CLASSES - 1}", line_no)
            except DataError as err:
                sink.error(err)
                continue
            out[Path(fields[0].replace("\\", "/")).name] = view
    return out


def view_file(root: Path, split: str) -> Path | None:
    """The VehicleReIDKeyPointData file with the view labels of ``split`` beside VeRi at ``root``, or None."""
    for folder in (root, root / "VehicleReIDKeyPointData", root.parent / "VehicleReIDKeyPointData"):
        if (folder / VIEW_FILES.get(split, "")).is_file() and split in VIEW_FILES:
            return folder / VIEW_FILES[split]
    return None


def attach_views(records: list[Record], path: Path, problems: Problems) -> None:
    """Set each record's orientation to its view class c as (c + 0.5) x 45 degrees (8 bins give back c)."""
    views = read_veri_views(path, problems)
    degrees = {name: (c + 0.5) * 360.0 / VIEW_CLASSES for name, c in views.items()}
    _attach(records, degrees, "orientation", path, "view label", problems)


def read_veri_split(root: str | os.PathLike, split: str, check_images: bool = False,
                    problems: Problems | None = None) -> list[Record]:
    """Records of a VeRi-776 split (0-based colour/type; keypoints from ``label_<split>.csv`` and view labels from
    VehicleReIDKeyPointData's ``keypoint_<train|test>.txt`` when present)."""
    root = Path(root)
    split = check_split(split, root)
    sink = Problems.of(problems)
    xml_path = root / ("train_label.xml" if split == "train" else "test_label.xml")
    labels = read_veri_labels(xml_path, sink)
    source, names = names_of_split(root, split, sink)
    folder = image_dir(root, split)
    records = []
    for line, name in names:
        try:
            full = locate_image(folder, name, source, line, check_images)
            if parse_veri_name(name) is None:
                raise DataError(source, f"{name!r} is not a VeRi name <id>_c<camera>_<frame>_<n>.jpg", line)
            label = labels.get(name)
            if label is None:
                if not labels:
                    continue  # the XML itself is broken or empty; already reported
                raise DataError(source, f"image {name!r} has no <Item> in {xml_path.name}", line)
        except DataError as err:
            sink.error(err)
            continue
        vid, cam, color, vtype = label
        records.append(Record(path=full, vehicle_id=vid, camera_id=cam, color_id=color, type_id=vtype))
    csv_path = root / f"label_{split}.csv"
    if csv_path.is_file():
        attach_reid_keypoints(records, csv_path, sink)
    views = view_file(root, split)
    if views is not None:
        attach_views(records, views, sink)
    return records
