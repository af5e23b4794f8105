"""VERI-Wild reader on a tree written by hand (tests.conftest.make_veriwild_tree)."""
from __future__ import annotations

import json

import pytest

from pamtri.common.errors import DataError
from pamtri.data.readers import (
    attribute_names,
    available_splits,
    available_test_sizes,
    detect_format,
    read_split,
    resolve_test_size,
    write_attribute_names,
)
from pamtri.data.records import Problems
from tests.conftest import VERIWILD_INFO, VERIWILD_LISTS, replace_line
from tests.data.test_readers import assert_names

COLORS, TYPES = ["black", "red", "white"], ["MPV", "SUV", "sedan"]  # sorted names of VERIWILD_INFO


def expected(keys):
    """(vehicle id, camera, colour id, type id) of VERIWILD_INFO rows, ids by sorted name."""
    info = {k: (cam, COLORS.index(color), TYPES.index(vtype)) for k, cam, _, vtype, color in VERIWILD_INFO}
    return [(int(k.split("/")[0]), *info[k]) for k in keys]


def values(records):
    return [(r.vehicle_id, r.camera_id, r.color_id, r.type_id) for r in records]


def test_layout_splits_and_test_sets(veriwild_tree):
    assert detect_format(veriwild_tree) == "veriwild"
    assert available_splits(veriwild_tree) == ("train", "query", "test")
    assert available_test_sizes(veriwild_tree) == (3000, 5000) and resolve_test_size(veriwild_tree) == 3000
    train = read_split(veriwild_tree, "train", check_images=True)
    assert values(train) == expected(VERIWILD_LISTS["train_list.txt"])
    assert train[0].path == str(veriwild_tree / "images" / "00001" / "000001.jpg")
    assert values(read_split(veriwild_tree, "query")) == expected(VERIWILD_LISTS["test_3000_query.txt"])
    assert values(read_split(veriwild_tree, "test")) == expected(VERIWILD_LISTS["test_3000.txt"])
    assert values(read_split(veriwild_tree, "query", test_size=5000)) == expected(VERIWILD_LISTS["test_5000_query.txt"])
    assert values(read_split(veriwild_tree, "gallery", test_size=5000)) == expected(VERIWILD_LISTS["test_5000.txt"])
    with pytest.raises(DataError, match=r"no test set of size 10000 \(present: 3000, 5000\)"):
        read_split(veriwild_tree, "query", test_size=10000)


def test_names_to_ids_mapping_is_written(veriwild_tree, tmp_path):
    assert attribute_names(veriwild_tree) == {"color": COLORS, "type": TYPES}
    assert write_attribute_names(tmp_path / "attributes.json", [(str(veriwild_tree), "auto")])
    written = json.loads((tmp_path / "attributes.json").read_text())
    assert written == {"sources": [{"root": str(veriwild_tree), "format": "veriwild", "color": COLORS,
                                    "type": TYPES}]}
    assert not write_attribute_names(tmp_path / "none.json", [])
    assert not (tmp_path / "none.json").exists()


def test_missing_vehicle_info(veriwild_tree):
    path = veriwild_tree / "train_test_split" / "vehicle_info.txt"
    path.unlink()
    with pytest.raises(DataError) as exc_info:
        read_split(veriwild_tree, "train", "veriwild")
    assert_names(exc_info, path, None, "vehicle info file does not exist")


@pytest.mark.parametrize("text, words", [
    ("00001/000002;2;2018-03-11 10:08:01;Wuling Rongguang;MPV", ("expected 6 ';'-separated fields", "got 5")),
    ("00001/000002;two;2018-03-11 10:08:01;Wuling Rongguang;MPV;white", ("camera id 'two' is not an integer",)),
    ("00001/000001;2;2018-03-11 10:08:01;Wuling Rongguang;MPV;white", ("duplicate image '00001/000001'",
                                                                      "first on line 2")),
])
def test_bad_vehicle_info_line(veriwild_tree, text, words):
    path = veriwild_tree / "train_test_split" / "vehicle_info.txt"
    replace_line(path, 3, text)
    with pytest.raises(DataError) as exc_info:
        read_split(veriwild_tree, "train", "veriwild")
    assert_names(exc_info, path, 3, *words)


@pytest.mark.parametrize("text, words", [
    ("000002", ("expected '<vid>/<imgid>', got '000002'",)),
    ("car1/000002", ("vehicle id 'car1' is not an integer",)),
    ("00001/000099", ("image '00001/000099' has no line in vehicle_info.txt",)),
])
def test_bad_list_line(veriwild_tree, text, words):
    path = veriwild_tree / "train_test_split" / "train_list.txt"
    replace_line(path, 2, text)
    with pytest.raises(DataError) as exc_info:
        read_split(veriwild_tree, "train", "veriwild")
    assert_names(exc_info, path, 2, *words)


def test_listed_image_absent(veriwild_tree):
    (veriwild_tree / "images" / "00011" / "000015.jpg").unlink()
    with pytest.raises(DataError) as exc_info:
        read_split(veriwild_tree, "query", "veriwild", check_images=True)
    assert_names(exc_info, veriwild_tree / "train_test_split" / "test_3000_query.txt", 2, "not found")
    problems = Problems()
    assert len(read_split(veriwild_tree, "query", "veriwild", check_images=True, problems=problems)) == 1
    assert [e.line for e in problems.errors] == [2]
