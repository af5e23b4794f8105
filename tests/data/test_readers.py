"""Data set readers on small trees the tests write: VeRi, CityFlow, VehicleX, reference CSVs, pamtri synth."""
from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from pamtri.common.errors import DataError
from pamtri.data.readers import FORMATS, detect_format, read_split, read_tracks, require_ground_truth
from pamtri.data.readers.cityflow import read_ground_truth
from pamtri.data.records import REAL, SYNTHETIC, Problems
from tests.conftest import (
    CITYFLOW_TRAIN,
    SYNTH_HEADER,
    SYNTH_META,
    VEHICLEX_TRAIN,
    VERI_QUERY,
    VERI_TEST,
    VERI_TRAIN,
    keypoint_row,
    replace_line,
    write_jpeg,
    write_xml,
)


def assert_names(exc_info, path, line=None, *words, element=None):
    err = exc_info.value
    msg = str(err)
    assert err.path == str(path) and str(path) in msg, msg
    if line is not None:
        assert err.line == line and f"line {line}" in msg, msg
    if element is not None:
        assert err.element == element and element in msg, msg
    for w in words:
        assert w in msg, msg


# --- common ------------------------------------------------------------------------------------------------

def test_detect_format(veri_tree, cityflow_tree, vehiclex_tree, synth_tree, tmp_path):
    assert [detect_format(t) for t in (veri_tree, cityflow_tree, vehiclex_tree, synth_tree)] == \
           ["veri", "cityflow", "vehiclex", "synth"]
    (tmp_path / "ref").mkdir()
    (tmp_path / "ref" / "label_train.csv").write_text("")
    assert detect_format(tmp_path / "ref") == "pamtri-csv"
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="cannot tell the data set format"):
        detect_format(tmp_path / "empty")
    with pytest.raises(DataError, match="no such data set folder"):
        detect_format(tmp_path / "missing")
    assert set(FORMATS) == {"veri", "cityflow", "vehiclex", "pamtri-csv", "synth", "vehicleid", "veriwild", "folder",
                            "csv"}


@pytest.mark.parametrize("fmt", FORMATS)
def test_unknown_split_names_the_valid_ones(veri_tree, fmt):
    with pytest.raises(DataError) as exc_info:
        read_split(veri_tree, "validation", fmt)
    assert "unknown split 'validation'" in str(exc_info.value)
    assert "train, query, test" in str(exc_info.value)


def test_unknown_format(veri_tree):
    with pytest.raises(DataError, match="unknown data set format 'market'"):
        read_split(veri_tree, "train", "market")


# --- VeRi ----------------------------------------------------------------------------------------------------

def test_veri_train_values(veri_tree):
    recs = read_split(veri_tree, "train")
    assert [r.name for r in recs] == [t[0] for t in VERI_TRAIN]
    assert [(r.vehicle_id, r.camera_id, r.color_id, r.type_id) for r in recs] == \
           [(1, 1, 0, 3), (1, 2, 0, 3), (5, 3, 9, 8), (5, 13, 9, 8)]
    assert recs[0].path == str(veri_tree / "image_train" / VERI_TRAIN[0][0])
    assert all(r.domain == REAL and r.keypoints is None and math.isnan(r.orientation) for r in recs)


def test_veri_test_has_type_errata_as_warning(veri_tree, caplog):
    with caplog.at_level(logging.WARNING):
        recs = read_split(veri_tree, "gallery", "veri")
    assert [r.name for r in recs] == [t[0] for t in VERI_TEST]
    assert [(r.vehicle_id, r.camera_id, r.color_id, r.type_id) for r in recs] == \
           [(2, 2, 3, 1), (2, 3, 3, -1), (7, 11, 6, 0), (7, 12, 6, 0)]
    assert 'typeID="0"' in caplog.text and "line 5" in caplog.text
    problems = Problems()
    read_split(veri_tree, "test", problems=problems)
    assert not problems.errors and [w.line for w in problems.warnings] == [5]


def test_veri_query_uses_test_labels_and_its_own_folder(veri_tree):
    recs = read_split(veri_tree, "query", check_images=True)
    assert [r.name for r in recs] == VERI_QUERY
    assert [(r.vehicle_id, r.camera_id, r.type_id) for r in recs] == [(2, 3, -1), (7, 11, 0)]
    assert recs[0].path == str(veri_tree / "image_query" / VERI_QUERY[0])


def test_veri_attaches_reference_keypoints(veri_tree):
    rows = [",".join([n, n[:4].lstrip("0"), "1", "1"] + keypoint_row(i, False)) for i, n in enumerate(VERI_QUERY)]
    (veri_tree / "label_query.csv").write_text("\n".join(rows) + "\n")
    recs = read_split(veri_tree, "query")
    for i, r in enumerate(recs):
        expected = np.array(keypoint_row(i, False), dtype=np.float32).reshape(36, 3)
        assert np.array_equal(r.keypoints, expected)
    assert read_split(veri_tree, "test")[0].keypoints is None


def test_veri_xml_that_does_not_parse_names_the_line(veri_tree):
    path = veri_tree / "train_label.xml"
    text = path.read_bytes().decode("gb2312").splitlines()
    text[5] = '<Item imageName="0001_c002_00016460_0.jpg" vehicleID="0001" cameraID="c002 />'
    path.write_bytes("\n".join(text).encode("gb2312"))
    with pytest.raises(DataError) as exc_info:
        read_split(veri_tree, "train")
    assert_names(exc_info, path, None, "XML does not parse")
    assert exc_info.value.line in (6, 7)


@pytest.mark.parametrize("index, change, words, element", [
    (1, {"colorID": None}, ("missing attribute colorID",), "<Item imageName='0001_c002_00016460_0.jpg'>"),
    (2, {"colorID": "11"}, ("colorID id '11' out of range 1-10",), "<Item imageName='0005_c003_00010000_1.jpg'>"),
    (2, {"typeID": "10"}, ("typeID id '10' out of range 1-9",), "<Item imageName='0005_c003_00010000_1.jpg'>"),
    (0, {"vehicleID": "0002"}, ("disagree with the image name",), "<Item imageName='0001_c001_00016450_0.jpg'>"),
    (0, {"cameraID": "c009"}, ("disagree with the image name",), "<Item imageName='0001_c001_00016450_0.jpg'>"),
    (3, {"vehicleID": "five"}, ("vehicleID 'five' is not an integer",), "<Item imageName='0005_c013_00010010_1.jpg'>"),
    (3, {"imageName": "0001_c001_00016450_0.jpg"}, ("duplicate imageName", "first on line 4"),
     "<Item imageName='0001_c001_00016450_0.jpg'>"),
])
def test_veri_bad_item_names_line_and_element(veri_tree, index, change, words, element):
    keys = ("imageName", "vehicleID", "cameraID", "colorID", "typeID")
    items = [dict(zip(keys, t)) for t in VERI_TRAIN]
    for k, v in change.items():
        if v is None:
            del items[index][k]
        else:
            items[index][k] = v
    path = write_xml(veri_tree / "train_label.xml", "TrainingImages", items)
    with pytest.raises(DataError) as exc_info:
        read_split(veri_tree, "train")
    assert_names(exc_info, path, index + 4, *words, element=element)


def test_veri_name_list_problems(veri_tree):
    names = veri_tree / "name_test.txt"
    replace_line(names, 3, "0009_c001_00000001_0.jpg")
    with pytest.raises(DataError) as exc_info:
        read_split(veri_tree, "test")
    assert_names(exc_info, names, 3, "has no <Item> in test_label.xml")
    replace_line(names, 3, "../image_train/0001_c001_00016450_0.jpg")
    with pytest.raises(DataError) as exc_info:
        read_split(veri_tree, "test")
    assert_names(exc_info, names, 3, "points outside the data set root")
    replace_line(names, 3, VERI_TEST[0][0])
    with pytest.raises(DataError) as exc_info:
        read_split(veri_tree, "test")
    assert_names(exc_info, names, 3, "duplicate image name", "first on line 1")


def test_veri_missing_image_is_found_when_checking(veri_tree):
    (veri_tree / "image_train" / VERI_TRAIN[2][0]).unlink()
    assert len(read_split(veri_tree, "train")) == 4
    with pytest.raises(DataError) as exc_info:
        read_split(veri_tree, "train", check_images=True)
    assert_names(exc_info, veri_tree / "name_train.txt", 3, "not found")
    (veri_tree / "image_train" / VERI_TRAIN[2][0]).write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        read_split(veri_tree, "train", check_images=True)


def test_veri_lenient_mode_collects_all(veri_tree):
    replace_line(veri_tree / "name_train.txt", 1, "/abs/0001_c001_00016450_0.jpg")
    (veri_tree / "image_train" / VERI_TRAIN[3][0]).unlink()
    problems = Problems()
    recs = read_split(veri_tree, "train", check_images=True, problems=problems)
    assert [r.name for r in recs] == [VERI_TRAIN[1][0], VERI_TRAIN[2][0]]
    assert [(e.line, "absolute" in e.reason or "not found" in e.reason) for e in problems.errors] == \
           [(1, True), (4, True)]


# --- CityFlow ------------------------------------------------------------------------------------------------

def test_cityflow_train_and_unlabelled_query(cityflow_tree):
    train = read_split(cityflow_tree, "train")
    want = [(n, int(v), int(c[1:])) for n, v, c in CITYFLOW_TRAIN]
    assert [(r.name, r.vehicle_id, r.camera_id) for r in train] == want
    assert all(r.color_id == -1 and r.type_id == -1 for r in train)
    query = read_split(cityflow_tree, "query", check_images=True)
    assert [r.name for r in query] == ["000001.jpg", "000002.jpg"]
    assert all(r.vehicle_id == -1 and r.camera_id == -1 for r in query)
    assert query[0].path == str(cityflow_tree / "image_query" / "000001.jpg")
    with pytest.raises(DataError) as exc_info:
        require_ground_truth(query, "query", cityflow_tree)
    msg = str(exc_info.value)
    assert "no identity labels" in msg and "--gt FILE" in msg and "query_gt.txt" in msg
    assert "<image> <vehicle id> <camera id>" in msg
    require_ground_truth(train, "train", cityflow_tree)  # labelled: no error


def test_cityflow_ground_truth_text_and_xml(cityflow_tree, tmp_path):
    (cityflow_tree / "query_gt.txt").write_text("# image vehicle camera\n000001.jpg 0012 c015\n\n000002.jpg,13,16\n")
    query = read_split(cityflow_tree, "query")
    assert [(r.vehicle_id, r.camera_id) for r in query] == [(12, 15), (13, 16)]
    gt = write_xml(tmp_path / "test_gt.xml", "TestImages", [
        dict(imageName=n, vehicleID=str(20 + i), cameraID=f"c0{30 + i}") for i, n in enumerate(["000001.jpg",
                                                                                                  "000002.jpg",
                                                                                                  "000003.jpg"])])
    test = read_split(cityflow_tree, "test", gt=gt)
    assert [(r.vehicle_id, r.camera_id) for r in test] == [(20, 30), (21, 31), (22, 32)]
    require_ground_truth(test, "test")


def test_cityflow_ground_truth_problems(cityflow_tree, tmp_path):
    gt = tmp_path / "gt.txt"
    gt.write_text("000001.jpg 1 c001\n000002.jpg 2\n")
    with pytest.raises(DataError) as exc_info:
        read_ground_truth(gt)
    assert_names(exc_info, gt, 2, "expected 3 fields")
    gt.write_text("000001.jpg 1 c001\n")
    with pytest.raises(DataError) as exc_info:
        read_split(cityflow_tree, "query", gt=gt)
    assert_names(exc_info, gt, None, "no ground truth for image '000002.jpg'", "name_query.txt line 2")
    with pytest.raises(DataError, match="does not exist"):
        read_split(cityflow_tree, "query", gt=tmp_path / "none.txt")
    gt.write_text("000001.jpg 1 camera-one\n")
    with pytest.raises(DataError, match="camera id 'camera-one'"):
        read_ground_truth(gt)


def test_cityflow_tracks(cityflow_tree):
    path = cityflow_tree / "test_track.txt"
    assert read_tracks(path) == [["000001.jpg", "000003.jpg"], ["000002.jpg"]]
    path.write_text("000001.jpg 000003.jpg\n000002.jpg\n000004.jpg 000003.jpg\n")
    with pytest.raises(DataError) as exc_info:
        read_tracks(path)
    assert_names(exc_info, path, 3, "'000003.jpg' is already in the track on line 1")
    path.write_text("000001.jpg\n../000002.jpg\n")
    with pytest.raises(DataError) as exc_info:
        read_tracks(path)
    assert_names(exc_info, path, 2, "outside")


def test_cityflow_bad_camera_in_train_xml(cityflow_tree):
    items = [dict(imageName=n, vehicleID=v, cameraID=c) for n, v, c in CITYFLOW_TRAIN]
    items[1]["cameraID"] = "cam12"
    path = write_xml(cityflow_tree / "train_label.xml", "TrainingImages", items)
    with pytest.raises(DataError) as exc_info:
        read_split(cityflow_tree, "train")
    assert_names(exc_info, path, 5, "camera id 'cam12'", element="<Item imageName='000002.jpg'>")


# --- VehicleX ------------------------------------------------------------------------------------------------

def test_vehiclex_values(vehiclex_tree):
    recs = read_split(vehiclex_tree, "train", check_images=True)
    assert [(r.name, r.vehicle_id, r.camera_id, r.color_id, r.type_id, r.orientation) for r in recs] == \
           [("000001.jpg", 1, 4, 0, 10, 25.5), ("000002.jpg", 1, 5, 0, 10, 300.0), ("000003.jpg", 2, 4, 11, 0, 0.0)]
    assert all(r.domain == SYNTHETIC for r in recs)
    with pytest.raises(DataError, match="only a train split"):
        read_split(vehiclex_tree, "query")


@pytest.mark.parametrize("key, value, words", [
    ("colorID", "12", ("colorID id '12' out of range 0-11",)),
    ("typeID", "11", ("typeID id '11' out of range 0-10",)),
    ("typeID", "-1", ("out of range 0-10",)),
    ("orientation", "north", ("orientation 'north' is not a number",)),
    ("orientation", "400", ("not within 0-360",)),
    ("orientation", "nan", ("not within 0-360",)),
])
def test_vehiclex_bad_values(vehiclex_tree, key, value, words):
    keys = ("imageName", "vehicleID", "cameraID", "colorID", "typeID", "orientation")
    items = [dict(zip(keys, t)) for t in VEHICLEX_TRAIN]
    items[2][key] = value
    path = write_xml(vehiclex_tree / "train_label.xml", "TrainingImages", items)
    with pytest.raises(DataError) as exc_info:
        read_split(vehiclex_tree, "train")
    assert_names(exc_info, path, 6, *words, element="<Item imageName='000003.jpg'>")


def test_vehiclex_without_camera(vehiclex_tree):
    keys = ("imageName", "vehicleID", "colorID", "typeID", "orientation")
    items = [dict(zip(keys, (t[0], t[1], t[3], t[4], t[5]))) for t in VEHICLEX_TRAIN]
    write_xml(vehiclex_tree / "train_label.xml", "TrainingImages", items)
    assert [r.camera_id for r in read_split(vehiclex_tree, "train")] == [-1, -1, -1]


# --- pamtri synth ------------------------------------------------------------------------------------------

def test_synth_values(synth_tree):
    for split, rows in SYNTH_META.items():
        recs = read_split(synth_tree, split, "synth", check_images=True)
        assert [r.name for r in recs] == [row[0] for row in rows]
        for i, (r, (name, vid, cam, col, typ, ori, dom)) in enumerate(zip(recs, rows)):
            assert (r.vehicle_id, r.camera_id, r.color_id, r.type_id) == (vid, cam, col, typ)
            assert (math.isnan(r.orientation) if ori == "" else r.orientation == float(ori))
            assert r.domain == (REAL if dom == "real" else SYNTHETIC)
            assert (r.width, r.height) == (24, 16)
            expected = np.array(keypoint_row(i, True), dtype=np.float32).reshape(36, 3)
            assert np.array_equal(r.keypoints, expected)  # the pose CSV's keypoints, visibility 0/1
            assert r.path == str(synth_tree / f"image_{split}" / name)


@pytest.mark.parametrize("line, text, words", [
    (1, "image,vehicle_id,camera_id,color_id,type_id,domain", ("lacks column(s) orientation_deg",)),
    (3, "0001_c002_00000001_0.jpg,1,two,0,8,200.0,synthetic", ("camera_id 'two' is not an integer",)),
    (3, "0001_c002_00000001_0.jpg,1,2,10,8,200.0,synthetic", ("color_id 10 out of range",)),
    (3, "0001_c002_00000001_0.jpg,1,2,0,9,200.0,synthetic", ("type_id 9 out of range",)),
    (3, "0001_c002_00000001_0.jpg,1,2,0,8,-5,synthetic", ("not within 0-360",)),
    (3, "0001_c002_00000001_0.jpg,1,2,0,8,200.0,cartoon", ("domain 'cartoon'",)),
    (3, "0001_c002_00000001_0.jpg,1,2,0,8,200.0", ("expected 7 columns",)),
    (3, "0001_c001_00000000_0.jpg,1,1,0,8,12.5,synthetic", ("duplicate image name", "first on line 2")),
])
def test_synth_bad_meta(synth_tree, line, text, words):
    path = synth_tree / "meta_train.csv"
    replace_line(path, line, text)
    with pytest.raises(DataError) as exc_info:
        read_split(synth_tree, "train")
    assert_names(exc_info, path, line, *words)


def test_synth_cross_checks(synth_tree):
    reid = synth_tree / "label_train.csv"
    fields = reid.read_text().splitlines()[1].split(",")
    fields[2] = "5"  # colour 5 (1-based) but meta says 0 (0-based) -> file should hold 1
    replace_line(reid, 2, ",".join(fields))
    with pytest.raises(DataError) as exc_info:
        read_split(synth_tree, "train")
    assert_names(exc_info, reid, 2, "colour of '0001_c002_00000001_0.jpg' (0-based 4) disagrees",
                 "meta_train.csv line 3 (0)")
    pose = synth_tree / "pose_label_test.csv"
    pose.write_text(pose.read_text().splitlines()[0] + "\n")
    with pytest.raises(DataError) as exc_info:
        read_split(synth_tree, "test")
    assert_names(exc_info, synth_tree / "meta_test.csv", 3, "no row in pose_label_test.csv")


def test_synth_missing_image(synth_tree):
    (synth_tree / "image_query" / SYNTH_META["query"][0][0]).unlink()
    with pytest.raises(DataError) as exc_info:
        read_split(synth_tree, "query", check_images=True)
    assert_names(exc_info, synth_tree / "meta_query.csv", 2, "not found")


def test_synth_header_is_the_contract():
    assert SYNTH_HEADER.split(",") == ["image", "vehicle_id", "camera_id", "color_id", "type_id",
                                       "orientation_deg", "domain"]


# --- reference PAMTRI CSV layout -----------------------------------------------------------------------------

def test_pamtri_csv_tree(tmp_path, veri_labels_dir):
    root = tmp_path / "ref"
    lines = (veri_labels_dir / "reid_label_query.csv").read_text().splitlines()[:3]
    (root / "image_query").mkdir(parents=True)
    (root / "label_query.csv").write_text("\n".join(lines) + "\n")
    names = [ln.split(",")[0] for ln in lines]
    for i, n in enumerate(names):
        write_jpeg(root / "image_query" / n, seed=i)
    pose = [",".join([n, str(30 + i), str(20 + i)] + keypoint_row(i, True)) for i, n in enumerate(names[:2])]
    (root / "pose_label_query.csv").write_text("\n".join(pose) + "\n")
    assert detect_format(root) == "pamtri-csv"
    recs = read_split(root, "query", check_images=True)
    assert [r.name for r in recs] == names
    f0 = lines[0].split(",")
    assert (recs[0].vehicle_id, recs[0].color_id, recs[0].type_id) == (int(f0[1]), int(f0[2]) - 1, int(f0[3]) - 1)
    assert recs[0].keypoints[0, 0] == pytest.approx(float(f0[4]))   # ReID CSV keypoints, not the pose CSV's
    assert [(r.width, r.height) for r in recs] == [(30, 20), (31, 21), (0, 0)]
    (root / "label_query.csv").unlink()
    only_pose = read_split(root, "query", "pamtri-csv")
    assert [r.name for r in only_pose] == names[:2] and only_pose[1].keypoints[0, 2] in (0.0, 1.0)
    with pytest.raises(DataError, match="neither label_train.csv nor pose_label_train.csv"):
        read_split(root, "train", "pamtri-csv")
