"""AI City Challenge 2020 synthetic data (VehicleX): ``image_train/`` + ``train_label.xml``.

Items: ``<Item imageName vehicleID cameraID colorID typeID orientation/>``; colour (12 classes) and type
(11 classes) are 0-based in the file (``pamtri.data.attributes.VEHICLEX_COLORS`` / ``VEHICLEX_TYPES``); orientation
in degrees 0-360. ``cameraID`` may be absent (camera -1). The file declares gb2312. All records are
SYNTHETIC. The data set has only a train split.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

from pamtri.common.errors import DataError
from pamtri.data.attributes import VEHICLEX_COLORS, VEHICLEX_TYPES
from pamtri.data.records import SYNTHETIC, UNLABELLED, Problems, Record

from ._common import check_split, image_dir, locate_image, parse_camera, parse_class, parse_int, read_label_xml

VEHICLEX_ATTRIBUTES = ("imageName", "vehicleID", "colorID", "typeID", "orientation")


def _orientation(text: str, path, line, element) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DataError(path, f"orientation {text!r} is not a number", line, element) from None
    if not math.isfinite(value) or not 0.0 <= value <= 360.0:
        raise DataError(path, f"orientation {text!r} is not within 0-360 degrees", line, element)
    return value


def read_vehiclex_split(root: str | os.PathLike, split: str = "train", check_images: bool = False,
                        problems: Problems | None = None) -> list[Record]:
    """Records of the VehicleX train split: ids, camera, 0-based colour/type, orientation (degrees), SYNTHETIC."""
    root = Path(root)
    split = check_split(split, root)
    if split != "train":
        raise DataError(root, f"split {split!r}: the AI City 2020 synthetic (VehicleX) data has only a train split")
    sink = Problems.of(problems)
    path = root / "train_label.xml"
    folder = image_dir(root, "train")
    records, first = [], {}
    for item in read_label_xml(path, sink, VEHICLEX_ATTRIBUTES):
        a, el, line = item.attrs, item.element(), item.line
        try:
            name = a["imageName"].strip()
            if name in first:
                raise DataError(path, f"duplicate imageName {name!r} (first on line {first[name]})", line, el)
            first[name] = line
            vid = parse_int(a["vehicleID"], "vehicleID", path, line, el)
            cam = parse_camera(a["cameraID"], path, line, el) if a.get("cameraID", "").strip() else UNLABELLED
            color = parse_class(a["colorID"], "colorID", 0, len(VEHICLEX_COLORS), path, line, el)
            vtype = parse_class(a["typeID"], "typeID", 0, len(VEHICLEX_TYPES), path, line, el)
            orient = _orientation(a["orientation"], path, line, el)
            full = locate_image(folder, name, path, line, check_images)
        except DataError as err:
            sink.error(err)
            continue
        records.append(Record(path=full, vehicle_id=vid, camera_id=cam, color_id=color, type_id=vtype,
                              orientation=orient, domain=SYNTHETIC))
    return records
