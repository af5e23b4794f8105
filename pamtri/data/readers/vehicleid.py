"""VehicleID (Liu et al., CVPR 2016): ``image/``, ``train_test_split/`` lists, optional ``attribute/`` files.

```
image/<name>.jpg
train_test_split/train_list.txt                  <image name> <vehicle id>   (the name without .jpg)
train_test_split/test_list_{800,1600,2400}.txt   the same (and 3200, 6000, 13164 when present)
attribute/color_attr.txt, attribute/model_attr.txt   <vehicle id> <attribute id>
```

The data set has no cameras (records have camera -1). Colour and model ids are used as they are in the files
(0-based) as colour and type labels; a vehicle without a line has none (-1). The splits are ``train`` and
``test``: every image of ``test_list_<size>.txt``. The protocol draws query and gallery from the test split
(``gallery_draws``): one image per vehicle, chosen at random, is the gallery and the rest are queries,
repeated 10 times from a recorded seed; there is no fixed query split.
"""
from __future__ import annotations

import os
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from pamtri.common.errors import DataError
from pamtri.data.images import IMAGE_SUFFIXES
from pamtri.data.records import UNLABELLED, Problems, Record

from ._common import check_split, locate_image, pick_test_size, read_id_pairs

TEST_LIST = "test_list_{size}.txt"
ATTRIBUTE_FILES = {"color": "color_attr.txt", "type": "model_attr.txt"}
_TEST_LIST = re.compile(r"^test_list_(\d+)\.txt$")


def vehicleid_test_sizes(root: str | os.PathLike) -> tuple[int, ...]:
    """The sizes (vehicles) of the ``test_list_<size>.txt`` files present, smallest first."""
    folder = Path(root) / "train_test_split"
    if not folder.is_dir():
        return ()
    return tuple(sorted(int(m.group(1)) for p in folder.iterdir() if (m := _TEST_LIST.match(p.name))))


def vehicleid_splits(root: str | os.PathLike) -> tuple[str, ...]:
    """The splits present: ``train`` (train_list.txt) and ``test`` (any test list)."""
    train = (Path(root) / "train_test_split" / "train_list.txt").is_file()
    return (("train",) if train else ()) + (("test",) if vehicleid_test_sizes(root) else ())


def read_attribute_file(path: Path, what: str, problems: Problems) -> dict[int, int]:
    """vehicle id -> attribute id of an ``attribute/*_attr.txt`` file ({} when the file is absent)."""
    if not path.is_file():
        return {}
    out = {}
    for line, vid, value in read_id_pairs(path, problems, f"{what} attribute file", "vehicle id", f"{what} id"):
        try:
            out[int(vid)] = value
        except ValueError:
            problems.error(DataError(path, f"vehicle id {vid!r} is not an integer", line))
    return out


def _image_name(name: str) -> str:
    """The file name of a list entry: ``<name>.jpg`` unless the entry already has an image suffix."""
    return name if os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES else f"{name}.jpg"


def read_vehicleid_split(root: str | os.PathLike, split: str, test_size: int | None = None,
                         check_images: bool = False, problems: Problems | None = None) -> list[Record]:
    """Records of the VehicleID train split or of the test split of ``test_size`` vehicles (None: smallest)."""
    root = Path(root)
    split = check_split(split, root)
    if split == "query":
        raise DataError(root, "VehicleID has no fixed query split: its protocol draws the gallery (one image per "
                              "vehicle) from the test split and queries the rest; read the test split "
                              "(reid eval --format vehicleid draws them)")
    sink = Problems.of(problems)
    folder = root / "train_test_split"
    if split == "train":
        if test_size is not None:
            raise DataError(root, "--test-size selects a VehicleID test list; the train split has one list")
        path = folder / "train_list.txt"
    else:
        path = folder / TEST_LIST.format(size=pick_test_size(vehicleid_test_sizes(root), test_size, folder,
                                                             TEST_LIST))
    attrs = {k: read_attribute_file(root / "attribute" / f, k, sink) for k, f in ATTRIBUTE_FILES.items()}
    records = []
    for line, name, vid in read_id_pairs(path, sink, "image list", "image name", "vehicle id"):
        try:
            full = locate_image(root / "image", _image_name(name), path, line, check_images)
        except DataError as err:
            sink.error(err)
            continue
        records.append(Record(path=full, vehicle_id=vid, color_id=attrs["color"].get(vid, UNLABELLED),
                              type_id=attrs["type"].get(vid, UNLABELLED)))
    return records


def gallery_draws(records: list[Record], draws: int = 10, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """VehicleID's protocol: ``draws`` times (query indices, gallery indices) into ``records``, sorted.

    Each draw puts one image per vehicle, chosen at random, in the gallery and every other image in the
    queries; the draws are a pure function of ``seed``.
    """
    by_vehicle: dict[int, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        by_vehicle[r.vehicle_id].append(i)
    groups = [np.asarray(by_vehicle[v]) for v in sorted(by_vehicle)]
    sizes = np.array([len(g) for g in groups])
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(draws):
        picks = (rng.random(len(groups)) * sizes).astype(np.int64)
        gallery = np.sort(np.array([g[k] for g, k in zip(groups, picks)], dtype=np.int64))
        out.append((np.setdiff1d(np.arange(len(records)), gallery), gallery))
    return out
