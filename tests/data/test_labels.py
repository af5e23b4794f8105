"""The reference label CSVs: the real VeRi files, every malformed-row case, lenient mode, round trips."""
from __future__ import annotations

import math

import numpy as np
import pytest

from pamtri.common.errors import DataError
from pamtri.data.labels import read_pose_csv, read_reid_csv, write_pose_csv, write_reid_csv
from pamtri.data.records import UNLABELLED, Problems, Record
from tests.conftest import keypoint_row, write_jpeg


def raw_rows(path):
    return [line.split(",") for line in path.read_text().splitlines() if line.strip()]


# --- the real files ------------------------------------------------------------------------------------------

def test_real_pose_labels_counts_and_values(veri_labels_dir):
    read = {}
    for name, count in (("pose_label_train.csv", 9068), ("pose_label_test.csv", 1060)):
        path = veri_labels_dir / name
        recs, raw = read_pose_csv(path), raw_rows(path)
        read[name] = recs
        assert len(recs) == count == len(raw)
        for i in (0, 1, count // 2, count - 1):
            r, f = recs[i], raw[i]
            assert r.name == f[0] and (r.width, r.height) == (int(f[1]), int(f[2]))
            assert r.keypoints.shape == (36, 3) and r.keypoints.dtype == np.float32
            # keypoint k's x, y, v are columns 3 + 3k .. 5 + 3k (0-based)
            for k in (0, 17, 18, 35):
                assert r.keypoints[k].tolist() == [float(f[3 + 3 * k]), float(f[4 + 3 * k]), float(f[5 + 3 * k])]
            vid, cam = f[0].split("_")[0], f[0].split("_")[1]
            assert (r.vehicle_id, r.camera_id) == (int(vid), int(cam[1:]))
    first = read["pose_label_train.csv"][0]
    # the first row as read by eye: 0001_c001_00016450_0.jpg,126,135,121,55,0,118,95,0,117,111,1,...
    assert (first.vehicle_id, first.camera_id, first.width, first.height) == (1, 1, 126, 135)
    assert first.keypoints[:3].tolist() == [[121, 55, 0], [118, 95, 0], [117, 111, 1]]
    assert first.color_id == UNLABELLED and first.type_id == UNLABELLED


def test_real_reid_labels_are_zero_based(veri_labels_dir):
    path = veri_labels_dir / "reid_label_query.csv"
    recs, raw = read_reid_csv(path, num_colors=10, num_types=9), raw_rows(path)
    assert len(recs) == 1678 == len(raw)
    assert [r.vehicle_id for r in recs] == [int(f[1]) for f in raw]
    assert [r.color_id for r in recs] == [int(f[2]) - 1 for f in raw]
    assert [r.type_id for r in recs] == [int(f[3]) - 1 for f in raw]
    assert [r.camera_id for r in recs] == [int(f[0].split("_")[1][1:]) for f in raw]
    assert {r.color_id for r in recs} <= set(range(10)) and {r.type_id for r in recs} <= set(range(9))
    # 0002_c002_00030600_0.jpg,2,1,4,380.095,151.507,0.759,231.589,259.876,0.730,...
    r = recs[0]
    assert (r.name, r.vehicle_id, r.camera_id, r.color_id, r.type_id) == ("0002_c002_00030600_0.jpg", 2, 2, 0, 3)
    np.testing.assert_allclose(r.keypoints[:2], [[380.095, 151.507, 0.759], [231.589, 259.876, 0.730]], rtol=1e-6)
    last = raw[-1]
    np.testing.assert_allclose(recs[-1].keypoints[35], [float(v) for v in last[-3:]], rtol=1e-6)


def test_real_files_round_trip_byte_identical(veri_labels_dir, tmp_path):
    for name, read, write in (("pose_label_test.csv", read_pose_csv, write_pose_csv),
                              ("reid_label_query.csv", read_reid_csv, write_reid_csv)):
        recs = read(veri_labels_dir / name)
        write(recs, tmp_path / name)
        assert (tmp_path / name).read_bytes() == (veri_labels_dir / name).read_bytes()
        again = read(tmp_path / name)
        assert [(a.name, a.vehicle_id, a.color_id, a.type_id, a.width) for a in again] == \
               [(a.name, a.vehicle_id, a.color_id, a.type_id, a.width) for a in recs]
        assert all(np.array_equal(a.keypoints, b.keypoints) for a, b in zip(again, recs))


def test_round_trip_of_made_records(tmp_path):
    kps = np.zeros((36, 3), np.float32)
    kps[:, 0], kps[:, 1], kps[:, 2] = np.arange(36), 2 * np.arange(36), np.arange(36) % 2
    recs = [Record(path="x/0003_c004_00000001_0.jpg", vehicle_id=3, camera_id=4, color_id=9, type_id=0,
                   keypoints=kps, width=40, height=30),
            Record(path="0004_c001_00000002_0.jpg", vehicle_id=4, camera_id=1, keypoints=kps * 0.5 + 0.25,
                   width=20, height=10)]
    write_reid_csv(recs, tmp_path / "label.csv")
    back = read_reid_csv(tmp_path / "label.csv")
    assert [(b.name, b.vehicle_id, b.camera_id, b.color_id, b.type_id) for b in back] == \
           [("0003_c004_00000001_0.jpg", 3, 4, 9, 0), ("0004_c001_00000002_0.jpg", 4, 1, -1, -1)]
    np.testing.assert_allclose(back[1].keypoints, kps * 0.5 + 0.25, atol=5e-4)
    write_pose_csv(recs[:1], tmp_path / "pose.csv")
    p = read_pose_csv(tmp_path / "pose.csv")[0]
    assert (p.width, p.height) == (40, 30) and np.array_equal(p.keypoints, kps)


# --- malformed rows: each names the file and the line -----------------------------------------------------

def pose_line(name="0001_c001_00000000_0.jpg", w="24", h="16", kps=None):
    return ",".join([name, w, h] + (kps if kps is not None else keypoint_row(0, True)))


def reid_line(name="0001_c001_00000000_0.jpg", vid="1", color="2", vtype="3", kps=None):
    return ",".join([name, vid, color, vtype] + (kps if kps is not None else keypoint_row(1, False)))


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def assert_error(exc_info, path, line, *words):
    err = exc_info.value
    assert err.path == str(path) and err.line == line, str(err)
    msg = str(err)
    assert str(path) in msg and f"line {line}" in msg
    for w in words:
        assert w in msg, msg


def bad_kps(index, value):
    kps = keypoint_row(0, True)
    kps[index] = value
    return kps


@pytest.mark.parametrize("bad, line, words", [
    (pose_line(kps=keypoint_row(0, True)[:-3]), 2, ("expected 111 columns", "got 108", "35 keypoints instead of 36")),
    (pose_line(kps=keypoint_row(0, True) + ["1"]), 2, ("got 112",)),
    (pose_line(w="wide"), 2, ("column 2", "'wide' is not a number")),
    (pose_line(kps=bad_kps(4, "y")), 2, ("column 8", "'y' is not a number")),
    (pose_line(kps=bad_kps(3, "nan")), 2, ("keypoint 1 is not finite",)),
    (pose_line(kps=bad_kps(0, "inf")), 2, ("keypoint 0 is not finite",)),
    (pose_line(w="inf"), 2, ("image size infx16 is not a positive integer",)),
    (pose_line(h="0"), 2, ("not a positive integer",)),
    (pose_line(kps=bad_kps(5, "2")), 2, ("keypoint 1: visibility 2 is not 0 or 1",)),
    (pose_line(name="../outside.jpg"), 2, ("points outside the data set root",)),
    (pose_line(name="/etc/passwd"), 2, ("absolute path",)),
])
def test_pose_csv_malformed_row(tmp_path, bad, line, words):
    path = write_lines(tmp_path / "pose_label_train.csv", [pose_line(name="0009_c001_1_0.jpg"), bad])
    with pytest.raises(DataError) as exc_info:
        read_pose_csv(path)
    assert_error(exc_info, path, line, *words)


def test_pose_csv_duplicate_names_the_first_line(tmp_path):
    path = write_lines(tmp_path / "p.csv", [pose_line(), pose_line(name="0002_c001_1_0.jpg"), "", pose_line()])
    with pytest.raises(DataError) as exc_info:
        read_pose_csv(path)
    assert_error(exc_info, path, 4, "duplicate image name", "first on line 1")


def test_pose_csv_missing_image_when_checking(tmp_path):
    write_jpeg(tmp_path / "img" / "0001_c001_00000000_0.jpg")
    path = write_lines(tmp_path / "p.csv", [pose_line(), pose_line(name="0002_c001_00000000_0.jpg")])
    recs = read_pose_csv(path, tmp_path / "img")          # images not checked: both rows read
    assert [r.path for r in recs] == [str(tmp_path / "img" / f"000{i}_c001_00000000_0.jpg") for i in (1, 2)]
    with pytest.raises(DataError) as exc_info:
        read_pose_csv(path, tmp_path / "img", check_images=True)
    assert_error(exc_info, path, 2, "'0002_c001_00000000_0.jpg' not found")


@pytest.mark.parametrize("bad, words", [
    (reid_line(kps=keypoint_row(1, False)[:-6]), ("expected 112 columns", "34 keypoints instead of 36")),
    (reid_line(vid="x"), ("column 2", "'x' is not a number")),
    (reid_line(vid="1.5"), ("vehicle id '1.5' is not an integer",)),
    (reid_line(vid="nan"), ("vehicle id 'nan' is not an integer",)),
    (reid_line(color="11"), ("colour id '11' out of range", "1-10")),
    (reid_line(color="-2"), ("colour id '-2' out of range",)),
    (reid_line(vtype="10"), ("type id '10' out of range", "1-9")),
    (reid_line(kps=["1", "2", "nan"] + keypoint_row(1, False)[3:]), ("keypoint 0 is not finite",)),
])
def test_reid_csv_malformed_row(tmp_path, bad, words):
    path = write_lines(tmp_path / "label_query.csv", [reid_line(name="0001_c002_1_0.jpg"), reid_line(name="a.jpg"),
                                                      bad])
    with pytest.raises(DataError) as exc_info:
        read_reid_csv(path, num_colors=10, num_types=9)
    assert_error(exc_info, path, 3, *words)


def test_reid_csv_zero_means_unknown_and_bounds_are_optional(tmp_path):
    path = write_lines(tmp_path / "l.csv", [reid_line(color="0", vtype="0"), reid_line(name="b.jpg", color="12")])
    a, b = read_reid_csv(path)
    assert (a.color_id, a.type_id) == (-1, -1) and b.color_id == 11
    assert b.camera_id == UNLABELLED and a.camera_id == 1   # only VeRi-style names carry a camera


def test_missing_and_non_utf8_files(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_pose_csv(tmp_path / "nope.csv")
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(DataError, match="not UTF-8"):
        read_reid_csv(tmp_path / "bin.csv")


def test_lenient_mode_collects_every_problem_and_keeps_good_rows(tmp_path):
    path = write_lines(tmp_path / "p.csv", [
        pose_line(name="0001_c001_1_0.jpg"),
        pose_line(name="0002_c001_1_0.jpg", w="x"),
        pose_line(name="0003_c001_1_0.jpg"),
        pose_line(name="0001_c001_1_0.jpg"),
        pose_line(name="0004_c001_1_0.jpg", kps=keypoint_row(0, True)[:-3]),
    ])
    problems = Problems()
    recs = read_pose_csv(path, problems=problems)
    assert [r.name for r in recs] == ["0001_c001_1_0.jpg", "0003_c001_1_0.jpg"]
    assert [e.line for e in problems.errors] == [2, 4, 5]
    assert all(e.path == str(path) for e in problems.errors)


def test_bom_is_ignored(tmp_path):
    path = tmp_path / "p.csv"
    path.write_bytes(("\ufeff" + pose_line() + "\n").encode("utf-8"))
    (r,) = read_pose_csv(path)
    assert r.name == "0001_c001_00000000_0.jpg" and not math.isnan(r.keypoints.sum())
