"""VehicleID reader and its 10-draw protocol on a tree written by hand (tests.conftest.make_vehicleid_tree)."""
from __future__ import annotations

import numpy as np
import pytest

from pamtri.common.errors import DataError
from pamtri.data.readers import available_test_sizes, detect_format, gallery_draws, read_split
from pamtri.data.records import Problems
from tests.conftest import (
    VEHICLEID_COLORS,
    VEHICLEID_MODELS,
    VEHICLEID_TEST_800,
    VEHICLEID_TEST_1600,
    VEHICLEID_TRAIN,
    replace_line,
)
from tests.data.test_readers import assert_names


def test_layout_ids_attributes_and_test_sizes(vehicleid_tree):
    assert detect_format(vehicleid_tree) == "vehicleid"
    assert available_test_sizes(vehicleid_tree) == (800, 1600)
    train = read_split(vehicleid_tree, "train", check_images=True)
    assert [(r.name, r.vehicle_id) for r in train] == [(f"{n}.jpg", v) for n, v in VEHICLEID_TRAIN]
    assert train[0].path == str(vehicleid_tree / "image" / "0000001.jpg")
    assert all(r.camera_id == -1 for r in train)
    assert [(r.color_id, r.type_id) for r in train] == [(0, 12), (0, 12), (3, 200), (3, 200)]
    test = read_split(vehicleid_tree, "test", "vehicleid")  # the smallest test list
    assert [r.vehicle_id for r in test] == [v for _, v in VEHICLEID_TEST_800]
    assert {r.vehicle_id: (r.color_id, r.type_id) for r in test} == \
           {v: (VEHICLEID_COLORS.get(v, -1), VEHICLEID_MODELS.get(v, -1)) for _, v in VEHICLEID_TEST_800}
    large = read_split(vehicleid_tree, "gallery", "vehicleid", test_size=1600)
    assert [r.vehicle_id for r in large] == [v for _, v in VEHICLEID_TEST_1600]
    assert large[-1].color_id == large[-1].type_id == -1  # vehicle 13: no attribute lines


def test_test_size_and_split_errors(vehicleid_tree):
    with pytest.raises(DataError, match=r"no test set of size 2400 \(present: 800, 1600\)"):
        read_split(vehicleid_tree, "test", "vehicleid", test_size=2400)
    with pytest.raises(DataError, match="no fixed query split"):
        read_split(vehicleid_tree, "query", "vehicleid")
    with pytest.raises(DataError, match="one test set"):
        read_split(vehicleid_tree, "train", "folder", test_size=800)


def test_missing_list_file(vehicleid_tree):
    path = vehicleid_tree / "train_test_split" / "train_list.txt"
    path.unlink()
    with pytest.raises(DataError) as exc_info:
        read_split(vehicleid_tree, "train", "vehicleid")
    assert_names(exc_info, path, None, "image list does not exist")


@pytest.mark.parametrize("text, words", [
    ("0000003", ("expected 2 fields '<image name> <vehicle id>', got 1",)),
    ("0000003 two", ("vehicle id 'two' is not an integer",)),
    ("0000001 1", ("duplicate image name '0000001' (first on line 1)",)),
])
def test_bad_list_line(vehicleid_tree, text, words):
    path = vehicleid_tree / "train_test_split" / "train_list.txt"
    replace_line(path, 3, text)
    with pytest.raises(DataError) as exc_info:
        read_split(vehicleid_tree, "train", "vehicleid")
    assert_names(exc_info, path, 3, *words)


@pytest.mark.parametrize("text, words", [
    ("10", ("expected 2 fields '<vehicle id> <color id>', got 1",)),
    ("ten 5", ("vehicle id 'ten' is not an integer",)),
    ("10 blue", ("color id 'blue' is not an integer",)),
])
def test_bad_attribute_line(vehicleid_tree, text, words):
    path = vehicleid_tree / "attribute" / "color_attr.txt"
    replace_line(path, 3, text)
    with pytest.raises(DataError) as exc_info:
        read_split(vehicleid_tree, "test", "vehicleid")
    assert_names(exc_info, path, 3, *words)


def test_listed_image_absent(vehicleid_tree):
    (vehicleid_tree / "image" / "0000007.jpg").unlink()
    assert len(read_split(vehicleid_tree, "test", "vehicleid")) == 8
    with pytest.raises(DataError) as exc_info:
        read_split(vehicleid_tree, "test", "vehicleid", check_images=True)
    assert_names(exc_info, vehicleid_tree / "train_test_split" / "test_list_800.txt", 3, "'0000007.jpg' not found")
    problems = Problems()
    assert len(read_split(vehicleid_tree, "test", "vehicleid", check_images=True, problems=problems)) == 7
    assert [e.line for e in problems.errors] == [3]


def test_draws_one_gallery_image_per_vehicle_reproducible_and_different(vehicleid_tree):
    records = read_split(vehicleid_tree, "test", "vehicleid", test_size=1600)
    draws = gallery_draws(records, 10, seed=3)
    assert len(draws) == 10
    vehicles = sorted({r.vehicle_id for r in records})
    for query, gallery in draws:
        assert sorted(records[i].vehicle_id for i in gallery) == vehicles  # exactly one image per vehicle
        assert sorted(np.concatenate([query, gallery]).tolist()) == list(range(len(records)))
    assert len({tuple(g) for _, g in draws}) > 1  # the draws differ
    again = gallery_draws(records, 10, seed=3)
    assert all(np.array_equal(a[1], b[1]) and np.array_equal(a[0], b[0]) for a, b in zip(draws, again))
    other = gallery_draws(records, 10, seed=4)
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(draws, other))
