"""VERI-Wild (Lou et al., CVPR 2019): ``images/<vid>/<imgid>.jpg`` and ``train_test_split/`` lists.

```
images/<vid>/<imgid>.jpg
train_test_split/train_list.txt                 <vid>/<imgid>, one per line
train_test_split/test_{3000,5000,10000}.txt     the gallery of the small, medium and large test sets
train_test_split/test_{3000,5000,10000}_query.txt   their queries
train_test_split/vehicle_info.txt               a header, then <vid>/<imgid>;<camera>;<time>;<model>;<type>;<colour>
```

Vehicle ids come from ``<vid>``, cameras from ``vehicle_info.txt``. Type and colour are names there: their ids
are the names' places in sorted order over the whole file (``VehicleInfo.types`` / ``colors``), the same for
every split and every run; ``reid train`` / ``reid eval`` write them to ``attributes.json`` beside their
results. The model name is not a label here. Splits: ``train``, and ``query`` / ``test`` of one test size.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from pamtri.common.errors import DataError
from pamtri.data.records import UNLABELLED, Problems, Record

from ._common import check_split, locate_image, parse_int, pick_test_size, read_name_list, read_text_lines

INFO_FIELDS = ("<vid>/<imgid>", "<camera>", "<time>", "<model>", "<type>", "<colour>")
TEST_LIST = "test_{size}.txt"
_TEST_LIST = re.compile(r"^test_(\d+)\.txt$")


@dataclass
class VehicleInfo:
    """``vehicle_info.txt``: image key -> (camera, colour id, type id), the names of the ids, and the keys of the
    lines reported as bad (lenient mode: not reported again where a list names them)."""
    images: dict[str, tuple[int, int, int]]
    colors: tuple[str, ...]
    types: tuple[str, ...]
    rejected: set[str]


def veriwild_test_sizes(root: str | os.PathLike) -> tuple[int, ...]:
    """The sizes of the test sets whose gallery list ``test_<size>.txt`` is present, smallest first."""
    folder = Path(root) / "train_test_split"
    if not folder.is_dir():
        return ()
    return tuple(sorted(int(m.group(1)) for p in folder.iterdir() if (m := _TEST_LIST.match(p.name))))


def veriwild_splits(root: str | os.PathLike) -> tuple[str, ...]:
    """The splits present: ``train`` (train_list.txt), ``query`` and ``test`` (any test set)."""
    train = (Path(root) / "train_test_split" / "train_list.txt").is_file()
    return (("train",) if train else ()) + (("query", "test") if veriwild_test_sizes(root) else ())


def read_vehicle_info(path: str | os.PathLike, problems: Problems | None = None) -> VehicleInfo:
    """Every line of ``vehicle_info.txt`` after its header; colour and type names numbered in sorted order."""
    path = Path(path)
    sink = Problems.of(problems)
    rows, first, rejected = {}, {}, set()
    for line, text in read_text_lines(path, sink, "vehicle info file")[1:]:  # the first line is the header
        fields = [f.strip() for f in text.split(";")]
        try:
            if len(fields) != len(INFO_FIELDS):
                raise DataError(path, f"expected {len(INFO_FIELDS)} ';'-separated fields {';'.join(INFO_FIELDS)}, "
                                      f"got {len(fields)}", line)
            key = fields[0]
            if key in first:
                raise DataError(path, f"duplicate image {key!r} (first on line {first[key]})", line)
            camera = parse_int(fields[1], "camera id", path, line)
        except DataError as err:
            sink.error(err)
            rejected.add(fields[0])
            continue
        first[key] = line
        rows[key] = (camera, fields[5], fields[4])
    colors = tuple(sorted({c for _, c, _ in rows.values() if c}))
    types = tuple(sorted({t for _, _, t in rows.values() if t}))
    color_id, type_id = {c: i for i, c in enumerate(colors)}, {t: i for i, t in enumerate(types)}
    images = {k: (cam, color_id.get(c, UNLABELLED), type_id.get(t, UNLABELLED)) for k, (cam, c, t) in rows.items()}
    return VehicleInfo(images, colors, types, rejected)


def _list_path(root: Path, split: str, test_size: int | None) -> Path:
    folder = root / "train_test_split"
    if split == "train":
        if test_size is not None:
            raise DataError(root, "--test-size selects a VERI-Wild test set; the train split has one list")
        return folder / "train_list.txt"
    size = pick_test_size(veriwild_test_sizes(root), test_size, folder, TEST_LIST)
    return folder / (f"test_{size}_query.txt" if split == "query" else TEST_LIST.format(size=size))


def read_veriwild_split(root: str | os.PathLike, split: str, test_size: int | None = None,
                        check_images: bool = False, problems: Problems | None = None) -> list[Record]:
    """Records of a VERI-Wild split (query / test of the test set of ``test_size`` queries; None: smallest)."""
    root = Path(root)
    split = check_split(split, root)
    sink = Problems.of(problems)
    path = _list_path(root, split, test_size)
    info_path = root / "train_test_split" / "vehicle_info.txt"
    info = read_vehicle_info(info_path, sink)
    records = []
    for line, key in read_name_list(path, sink):
        try:
            vid_text, sep, imgid = key.partition("/")
            if not sep or not imgid or "/" in imgid:
                raise DataError(path, f"expected '<vid>/<imgid>', got {key!r}", line)
            vid = parse_int(vid_text, "vehicle id", path, line)
            full = locate_image(root / "images", f"{key}.jpg", path, line, check_images)
            if key not in info.images:
                if not info.images or key in info.rejected:
                    continue  # vehicle_info.txt is missing or empty, or its line is bad: already reported
                raise DataError(path, f"image {key!r} has no line in {info_path.name}", line)
        except DataError as err:
            sink.error(err)
            continue
        camera, color, vtype = info.images[key]
        records.append(Record(path=full, vehicle_id=vid, camera_id=camera, color_id=color, type_id=vtype))
    return records
