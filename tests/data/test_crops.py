"""The folder and csv formats on trees written by hand (tests.conftest.make_folder_tree / make_csv_tree)."""
from __future__ import annotations

import math

import pytest

from pamtri.common.errors import DataError
from pamtri.data.readers import available_splits, detect_format, read_split
from pamtri.data.records import Problems
from tests.conftest import CSV_HEADER, CSV_ROWS, FOLDER_TREE, replace_line, write_jpeg
from tests.data.test_readers import assert_names

# --- folder ------------------------------------------------------------------------------------------------


def test_folder_names_sub_folders_and_splits(folder_tree):
    assert detect_format(folder_tree) == "folder"
    assert available_splits(folder_tree) == ("train", "query", "test")
    for split, folder in (("train", "train"), ("query", "query"), ("gallery", "gallery")):
        recs = read_split(folder_tree, split, check_images=True)
        got = {r.path: (r.vehicle_id, r.camera_id) for r in recs}
        assert got == {str(folder_tree / folder / n): ids for n, ids in FOLDER_TREE[folder].items()}
        assert all(r.color_id == r.type_id == -1 and math.isnan(r.orientation) for r in recs)


def test_folder_name_not_following_the_pattern_is_named(folder_tree):
    bad = write_jpeg(folder_tree / "train" / "IMG_2041.jpg")
    with pytest.raises(DataError) as exc_info:
        read_split(folder_tree, "train", "folder")
    assert_names(exc_info, bad, None, "does not follow <vehicle id>_c<camera>_<anything>.jpg")
    problems = Problems()
    recs = read_split(folder_tree, "train", "folder", problems=problems)
    assert len(recs) == 4 and [e.path for e in problems.errors] == [str(bad)]


@pytest.mark.parametrize("name, words", [
    ("car7/0007_c001_a.jpg", ("sub-folder 'car7' is not a vehicle id",)),
    ("0002/0005_c001_a.jpg", ("the name says vehicle 5", "folder of vehicle 2")),
    ("0002/extra/b.jpg", ("nested below the vehicle folder 0002/",)),
])
def test_folder_bad_sub_folders(folder_tree, name, words):
    write_jpeg(folder_tree / "train" / name)
    with pytest.raises(DataError) as exc_info:
        read_split(folder_tree, "train", "folder")
    for w in words:
        assert w in str(exc_info.value)


def test_folder_missing_split_and_empty_files(folder_tree):
    (folder_tree / "query" / "0003_c001_q.jpg").unlink()
    with pytest.raises(DataError, match="no images in this split folder"):
        read_split(folder_tree, "query", "folder")
    (folder_tree / "query").rmdir()
    with pytest.raises(DataError, match="no query/ folder for the query split"):
        read_split(folder_tree, "query", "folder")
    (folder_tree / "gallery" / "0003_c002_00084280_0.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        read_split(folder_tree, "test", "folder", check_images=True)


def test_folder_repeated_file_names_warn(folder_tree):
    write_jpeg(folder_tree / "train" / "0001" / "front.jpg")
    problems = Problems()
    read_split(folder_tree, "train", "folder", problems=problems)
    assert not problems.errors
    assert "1 file name(s) appear in more than one vehicle folder (front.jpg)" in problems.warnings[0].reason


# --- csv ---------------------------------------------------------------------------------------------------

def test_csv_columns(csv_tree):
    assert detect_format(csv_tree) == "csv"
    train = read_split(csv_tree, "train", check_images=True)
    assert [r.path for r in train] == [str(csv_tree / row.split(",")[0]) for row in CSV_ROWS["train.csv"]]
    assert [(r.vehicle_id, r.camera_id, r.color_id, r.type_id, r.track_id) for r in train] == \
           [(1, 1, 4, 2, 7), (1, 2, 4, -1, -1), (2, 1, -1, 0, 8), (2, 3, 1, 0, 8)]
    assert train[0].orientation == 90.0 and math.isnan(train[1].orientation) and train[2].orientation == 359.5
    assert [r.camera_id for r in read_split(csv_tree, "gallery")] == [2, 4]


def test_csv_only_the_required_columns(csv_tree):
    (csv_tree / "query.csv").write_text("image,vehicle_id\ncrops/q.jpg,3\n")
    (rec,) = read_split(csv_tree, "query", "csv")
    assert (rec.vehicle_id, rec.camera_id, rec.color_id, rec.track_id) == (3, -1, -1, -1)


@pytest.mark.parametrize("header, words", [
    ("image,vehicle_id,colour,view", ("unknown columns 'colour', 'view'", "valid: image, vehicle_id, camera_id")),
    ("image,camera_id", ("lacks the required column vehicle_id",)),
    ("image,vehicle_id,color,color", ("column color appear",)),
])
def test_csv_bad_header(csv_tree, header, words):
    path = csv_tree / "query.csv"
    path.write_text(header + "\ncrops/q.jpg,3,1,1\n")
    with pytest.raises(DataError) as exc_info:
        read_split(csv_tree, "query", "csv")
    assert_names(exc_info, path, 1, *words)


@pytest.mark.parametrize("row, words", [
    ("crops/b.jpg,1,2,4", ("expected 7 fields (as the header), got 4",)),
    ("crops/b.jpg,one,2,4,,,", ("vehicle_id 'one' is not an integer",)),
    ("crops/b.jpg,1,cam2,4,,,", ("camera id 'cam2'",)),
    ("crops/b.jpg,1,2,red,,,", ("color 'red' is not an integer",)),
    ("crops/b.jpg,1,2,4,-1,,", ("type '-1' is negative",)),
    ("crops/b.jpg,1,2,4,,400,", ("orientation '400' is not within 0-360",)),
    ("crops/b.jpg,1,2,4,,,t1", ("track 't1' is not an integer",)),
    ("crops/a.jpg,1,2,4,,,", ("duplicate image 'crops/a.jpg' (first on line 2)",)),
    ("../b.jpg,1,2,4,,,", ("points outside the data set root",)),
])
def test_csv_bad_row(csv_tree, row, words):
    path = csv_tree / "train.csv"
    replace_line(path, 3, row)
    with pytest.raises(DataError) as exc_info:
        read_split(csv_tree, "train", "csv")
    assert_names(exc_info, path, 3, *words)


def test_csv_missing_file_and_absent_image(csv_tree):
    (csv_tree / "crops" / "g2.jpg").unlink()
    with pytest.raises(DataError) as exc_info:
        read_split(csv_tree, "test", "csv", check_images=True)
    assert_names(exc_info, csv_tree / "gallery.csv", 3, "'crops/g2.jpg' not found")
    (csv_tree / "gallery.csv").unlink()
    with pytest.raises(DataError) as exc_info:
        read_split(csv_tree, "gallery", "csv")
    assert_names(exc_info, csv_tree / "gallery.csv", None, "does not exist")
    (csv_tree / "query.csv").write_text("")
    with pytest.raises(DataError, match="empty file: expected a header with image, vehicle_id"):
        read_split(csv_tree, "query", "csv")


def test_csv_header_is_the_contract():
    assert CSV_HEADER.split(",") == ["image", "vehicle_id", "camera_id", "color", "type", "orientation", "track"]
