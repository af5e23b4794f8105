"""``pamtri data check ROOT --format F`` on VehicleID, VERI-Wild, folder and csv trees: exit 0 when good, 1 with one
line per problem when broken."""
from __future__ import annotations

import pytest

from tests.conftest import (
    make_csv_tree,
    make_folder_tree,
    make_vehicleid_tree,
    make_veriwild_tree,
    replace_line,
    write_jpeg,
)
from tests.pipeline.test_datacheck import run_cli

MAKERS = {"vehicleid": make_vehicleid_tree, "veriwild": make_veriwild_tree, "folder": make_folder_tree,
          "csv": make_csv_tree}


def break_vehicleid(root):
    """A line with too few fields in test_list_1600.txt; an image of train_list.txt absent."""
    replace_line(root / "train_test_split" / "test_list_1600.txt", 9, "0000013")
    (root / "image" / "0000002.jpg").unlink()
    return [(root / "train_test_split" / "test_list_1600.txt", "line 9", "expected 2 fields"),
            (root / "train_test_split" / "train_list.txt", "line 2", "'0000002.jpg' not found")]


def break_veriwild(root):
    """A camera that is not a number in vehicle_info.txt; a query of test set 5000 absent."""
    info = root / "train_test_split" / "vehicle_info.txt"
    replace_line(info, 2, "00001/000001;one;2018-03-11 10:08:00;Wuling Rongguang;MPV;white")
    (root / "images" / "00012" / "000017.jpg").unlink()
    return [(info, "line 2", "camera id 'one' is not an integer"),
            (root / "train_test_split" / "test_5000_query.txt", "line 3", "not found")]


def break_folder(root):
    """An image whose name does not follow the pattern; a sub-folder that is not a vehicle id."""
    write_jpeg(root / "gallery" / "IMG_0001.jpg")
    write_jpeg(root / "train" / "misc" / "x.jpg")
    return [(root / "gallery" / "IMG_0001.jpg", "", "does not follow"),
            (root / "train" / "misc", "", "is not a vehicle id")]


def break_csv(root):
    """An unknown column in query.csv; a vehicle id that is not a number in train.csv."""
    (root / "query.csv").write_text("image,vehicle_id,plate\ncrops/q.jpg,3,AB123\n")
    replace_line(root / "train.csv", 4, "crops/c.jpg,two,1,,0,359.5,8")
    return [(root / "query.csv", "line 1", "unknown column 'plate'"),
            (root / "train.csv", "line 4", "vehicle_id 'two' is not an integer")]


BREAKERS = {"vehicleid": break_vehicleid, "veriwild": break_veriwild, "folder": break_folder, "csv": break_csv}


@pytest.mark.parametrize("fmt", MAKERS)
def test_good_tree_exits_0(tmp_path, capsys, fmt):
    root = MAKERS[fmt](tmp_path / fmt)
    code, out, err = run_cli(["data", "check", str(root), "--format", fmt], capsys)
    assert code == 0, out
    assert f"format: {fmt}" in out and "0 errors" in out and out.rstrip().endswith("OK")
    code, out, err = run_cli(["data", "check", str(root)], capsys)  # detected
    assert code == 0 and f"format: {fmt}" in out


@pytest.mark.parametrize("fmt", MAKERS)
def test_broken_tree_exits_1_with_one_line_per_problem(tmp_path, capsys, fmt):
    root = MAKERS[fmt](tmp_path / fmt)
    expected = BREAKERS[fmt](root)
    code, out, err = run_cli(["data", "check", str(root), "--format", fmt], capsys)
    assert code == 1
    errors = [line for line in out.splitlines() if line.startswith("error: ")]
    assert len(errors) == len(expected), out
    for path, line, words in expected:
        where = f"error: {path}" + (f", {line}:" if line else ":")
        assert sum(e.startswith(where) and words in e for e in errors) == 1, (where, words, out)
    assert out.rstrip().endswith("FAILED: problems found")


def test_every_test_set_is_checked(tmp_path, capsys):
    root = make_vehicleid_tree(tmp_path / "vehicleid")
    code, out, err = run_cli(["data", "check", str(root)], capsys)
    rows = {line.split()[0]: line.split()[1:3] for line in out.splitlines() if line.startswith(("train", "test"))}
    assert rows == {"train": ["4", "2"], "test_800": ["8", "3"], "test_1600": ["10", "4"]}
    assert "0 warnings" in out  # VehicleID has no cameras: its protocol needs none, so no warning


def test_csv_without_cameras_warns_how_to_add_them(tmp_path, capsys):
    root = make_csv_tree(tmp_path / "csv")
    (root / "gallery.csv").write_text("image,vehicle_id\ncrops/g1.jpg,3\ncrops/g2.jpg,3\n")
    code, out, err = run_cli(["data", "check", str(root)], capsys)
    assert code == 0
    assert "warning: " + str(root) + ": split 'test' has no camera ids" in out and "a camera_id column" in out
