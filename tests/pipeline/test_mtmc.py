"""pamtri synth city, mtmc run / eval, scene validation: tiny scenes (2-3 cameras, a few seconds, small frames)."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from pamtri.common.errors import DataError
from pamtri.pipeline.cli import main
from pamtri.pipeline.mtmc.associate import Timing, associate, feasible
from pamtri.pipeline.mtmc.config import AssociationConfig
from pamtri.pipeline.mtmc.evaluate import evaluate_mtmc, iou_distance
from pamtri.pipeline.mtmc.scene import check_scene, read_scene, read_tracks
from pamtri.pipeline.mtmc.synth_city import generate_city
from tests.conftest import write_tiny_reid_checkpoint


@pytest.fixture(scope="module")
def city(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("city") / "S90"
    generate_city(out, cameras=3, vehicles=5, minutes=0.15, fps=10, seed=3, width=160, height=96, progress=False)
    return out


@pytest.fixture(scope="module")
def reid_ckpt(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("w") / "rgb.pt"
    write_tiny_reid_checkpoint(path, heatmaps=False, segments=False, keypoints=False)
    return path


def _track1_from_gt(scene_dir: Path, out: Path) -> Path:
    scene = read_scene(scene_dir, tracks="gt")
    lines = []
    for cam in scene.cameras:
        for f, vid, x, y, w, h in read_tracks(cam.gt, cam):
            lines.append(f"{cam.id} {int(vid)} {int(f)} {x:g} {y:g} {w:g} {h:g} -1 -1\n")
    out.write_text("".join(lines))
    return out


def test_synth_city_writes_the_cityflow_layout(city):
    for cam in ("c001", "c002", "c003"):
        for rel in ("vdo.avi", "gt/gt.txt", "mtsc/mtsc_sim.txt", "roi.jpg"):
            assert (city / cam / rel).is_file(), rel
    assert (city / "cam_timestamp" / "S90.txt").read_text().splitlines()[0].startswith("c001 ")
    scene, problems = check_scene(city)
    assert not problems.errors and [c.id for c in scene.cameras] == [1, 2, 3]
    assert scene.cameras[0].frames == 90 and scene.cameras[0].fps == 10
    assert scene.links and all(ln.min_s <= ln.max_s for ln in scene.links)
    # vehicles reappear in other cameras: some gt id is in 2+ cameras
    ids = [set(read_tracks(c.gt, c)[:, 1].astype(int)) for c in scene.cameras]
    assert any(len(a & b) for i, a in enumerate(ids) for b in ids[i + 1:])
    summary = json.loads((city / "synth_city.json").read_text())
    assert summary["counts"]["c001"]["gt_boxes"] > 0


def test_synth_city_is_deterministic_and_refuses_to_overwrite(city, tmp_path):
    again = tmp_path / "S90"
    generate_city(again, cameras=3, vehicles=5, minutes=0.15, fps=10, seed=3, width=160, height=96, progress=False)
    assert (again / "c002" / "gt" / "gt.txt").read_text() == (city / "c002" / "gt" / "gt.txt").read_text()
    assert main(["synth", "city", "--out", str(again), "--cameras", "2", "--vehicles", "2", "--minutes", "0.05",
                 "--no-progress"]) == 1


def test_eval_of_the_ground_truth_is_perfect(city, tmp_path):
    m = evaluate_mtmc(city, _track1_from_gt(city, tmp_path / "track1.txt"))
    assert m["idf1"] == pytest.approx(1.0) and m["idp"] == pytest.approx(1.0) and m["idr"] == pytest.approx(1.0)
    assert all(c["mota"] == pytest.approx(1.0) for c in m["per_camera"].values())


def test_iou_distance_matches_the_definition():
    d = iou_distance(np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 10], [5, 0, 10, 10], [50, 50, 5, 5]]))
    assert d[0, 0] == 0.0 and np.isnan(d[0, 1]) and np.isnan(d[0, 2])   # IoU 1/3 -> no match at 0.5
    assert iou_distance(np.array([[0, 0, 10, 10]]), np.array([[1, 0, 10, 10]]))[0, 0] == pytest.approx(1 - 90 / 110)


def test_constraints_exclude_impossible_pairs():
    cfg = AssociationConfig()
    t = Timing(np.array([1, 1, 2, 3]), np.array([0.0, 1.0, 10.0, 100.0]), np.array([2.0, 3.0, 12.0, 102.0]),
               {(1, 2): (5.0, 20.0), (2, 1): (5.0, 20.0)})
    ok = feasible(t, np.array([0, 0, 0, 2]), np.array([1, 2, 3, 3]), cfg)
    assert ok.tolist() == [False, True, False, False]  # overlap in c1; 8 s c1->c2 ok; c3 not linked
    # identical features, but tracklets 0 and 1 overlap in one camera: never one vehicle
    f = np.tile(np.eye(4, dtype=np.float32)[:1], (4, 1))
    labels, mode = associate(f, t, cfg)
    assert mode == "dense"
    assert labels[0] == labels[2] and len({labels[0], labels[1], labels[3]}) == 3  # 1 cannot join {0, 2}


def test_dense_and_sparse_association_agree():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 30, 240)
    f = rng.standard_normal((30, 32))[ids] + 0.25 * rng.standard_normal((240, 32))
    f = (f / np.linalg.norm(f, axis=1, keepdims=True)).astype(np.float32)
    t = Timing(np.arange(240) % 6 + 1, np.arange(240) * 10.0, np.arange(240) * 10.0 + 1, {})
    cfg = AssociationConfig(constraints=False)
    dense, m1 = associate(f, t, cfg)
    sparse, m2 = associate(f, t, AssociationConfig(constraints=False, dense_max=10, knn=20))
    assert (m1, m2) == ("dense", "sparse")
    assert (dense == sparse).all()
    assert len(np.unique(dense)) == 30  # well-separated identities are recovered exactly


def test_mtmc_run_on_a_generated_scene(city, reid_ckpt, tmp_path, capsys, one_torch_thread):
    out = tmp_path / "run"
    assert main(["mtmc", "run", "--scene", str(city), "--reid-weights", str(reid_ckpt), "--out", str(out),
                 "--device", "cpu", "--no-progress", "--set", "tracklets.min_frames=2"]) == 0
    for name in ("track1.txt", "tracklets.csv", "flows.csv", "report.html", "run.json", "metrics.json"):
        assert (out / name).is_file(), name
    rows = [ln.split() for ln in (out / "track1.txt").read_text().splitlines()]
    assert rows and all(len(r) == 9 and r[0] in ("1", "2", "3") for r in rows)
    assert (out / "tracklets.csv").read_text().startswith("camera,local_id,global_id,start_s,end_s,frames")
    assert (out / "flows.csv").read_text().startswith("origin,destination,vehicles,travel_median_s")
    html = (out / "report.html").read_text()
    assert "Origin-destination matrix" in html and "Travel times" in html and "Example trips" in html
    m = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= m["idf1"] <= 1.0
    capsys.readouterr()
    assert main(["mtmc", "eval", "--gt", str(city), "--pred", str(out / "track1.txt"), "--out", str(tmp_path)]) == 0
    assert "IDF1" in capsys.readouterr().out and (tmp_path / "metrics.json").is_file()


def test_mtmc_run_sparse_path_with_ground_truth_tracks(city, reid_ckpt, tmp_path, one_torch_thread):
    out = tmp_path / "run"
    assert main(["mtmc", "run", "--scene", str(city), "--reid-weights", str(reid_ckpt), "--out", str(out),
                 "--tracks", "gt", "--device", "cpu", "--no-progress", "--set", "association.dense_max=2",
                 "--set", "association.rerank=true", "--set", "tracklets.min_frames=2"]) == 0
    assert json.loads((out / "run.json").read_text())["mode"] == "sparse"


# ---------------------------------------------------------------------------------------------------------------
# a CityFlow-layout tree written by hand from the layout's description

def _hand_tree(root: Path) -> Path:
    """root/train/S01/c00{1,2}/img1/000001.jpg.. (20 frames, 96x64), gt/gt.txt, mtsc/mtsc_tc.txt,
    root/cam_timestamp/S01.txt; vehicle 1 (red) crosses c001 then c002, vehicle 2 (blue) only c002."""
    scene = root / "train" / "S01"
    rng = np.random.default_rng(0)
    for cam, vehicles in (("c001", [(1, (0, 0, 220), 1, 8)]), ("c002", [(1, (0, 0, 220), 10, 18),
                                                                        (2, (220, 60, 0), 3, 12)])):
        (scene / cam / "img1").mkdir(parents=True)
        (scene / cam / "gt").mkdir()
        (scene / cam / "mtsc").mkdir()
        gt = []
        for f in range(1, 21):
            img = np.full((64, 96, 3), 110, np.uint8) + rng.integers(0, 8, (64, 96, 3), dtype=np.uint8)
            for vid, colour, f0, f1 in vehicles:
                if f0 <= f <= f1:
                    x, y = 4 + 5 * (f - f0), 20 + 2 * vid
                    cv2.rectangle(img, (x, y), (x + 29, y + 17), colour, -1)
                    cv2.rectangle(img, (x + 8, y + 2), (x + 20, y + 8), (40, 40, 40), -1)
                    gt.append(f"{f},{vid},{x},{y},30,18,1,-1,-1,-1\n")
            cv2.imwrite(str(scene / cam / "img1" / f"{f:06d}.jpg"), img)
        (scene / cam / "gt" / "gt.txt").write_text("".join(gt))
        (scene / cam / "mtsc" / "mtsc_tc.txt").write_text("".join(
            ln.replace(",1,-1,-1,-1", ",0.9,-1,-1,-1") for ln in gt))
    (root / "cam_timestamp").mkdir()
    (root / "cam_timestamp" / "S01.txt").write_text("c001 0\nc002 0.5\n")
    return scene


def test_hand_written_cityflow_tree(tmp_path, reid_ckpt, capsys, one_torch_thread):
    scene_dir = _hand_tree(tmp_path)
    scene = read_scene(scene_dir)
    assert [(c.name, c.id, c.frames, c.width, c.height, c.offset) for c in scene.cameras] == [
        ("c001", 1, 20, 96, 64, 0.0), ("c002", 2, 20, 96, 64, 0.5)]
    assert scene.cameras[0].tracks.name == "mtsc_tc.txt" and scene.links is None
    assert main(["data", "check", str(scene_dir)]) == 0
    out = tmp_path / "run"
    assert main(["mtmc", "run", "--scene", str(scene_dir), "--reid-weights", str(reid_ckpt), "--out", str(out),
                 "--device", "cpu", "--no-progress", "--set", "association.threshold=2.0"]) == 0
    csv_rows = (out / "tracklets.csv").read_text().splitlines()[1:]
    assert len(csv_rows) == 3
    # the red vehicle is found in both cameras; the blue one, seen by one camera, is left out as AI City does
    m = json.loads((out / "metrics.json").read_text())
    assert m["gt_ids"] == 1 and m["idf1"] == pytest.approx(1.0)
    assert {r.split()[1] for r in (out / "track1.txt").read_text().splitlines()} == {"1"}
    # predicting the single-camera vehicle too costs precision (it is not in the multi-camera ground truth)
    m = evaluate_mtmc(scene_dir, _track1_from_gt(scene_dir, tmp_path / "t1.txt"))
    assert m["idr"] == pytest.approx(1.0) and m["idp"] < 1.0


# ---------------------------------------------------------------------------------------------------------------
# bad input: one line naming the file and line; nothing half-written

def _one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pamtri: error: ")
    return err[0]


@pytest.mark.parametrize("case", ["frame_past_end", "box_outside", "no_timestamp", "unreadable_video",
                                  "unknown_camera_in_topology"])
def test_bad_scene_input_is_one_line_and_writes_nothing(tmp_path, reid_ckpt, capsys, case):
    scene_dir = _hand_tree(tmp_path)
    mtsc = scene_dir / "c002" / "mtsc" / "mtsc_tc.txt"
    lines = mtsc.read_text().splitlines(keepends=True)
    if case == "frame_past_end":
        lines[2] = "25,1,10,10,30,18,1,-1,-1,-1\n"
        mtsc.write_text("".join(lines))
        where = f"{mtsc}, line 3: frame 25 is past the end"
    elif case == "box_outside":
        lines[3] = "5,2,200,10,30,18,1,-1,-1,-1\n"
        mtsc.write_text("".join(lines))
        where = f"{mtsc}, line 4: box (left 200"
    elif case == "no_timestamp":
        (tmp_path / "cam_timestamp" / "S01.txt").write_text("c001 0\n")
        where = f"{tmp_path / 'cam_timestamp' / 'S01.txt'}: camera c002 has no timestamp line"
    elif case == "unreadable_video":
        import shutil
        shutil.rmtree(scene_dir / "c001" / "img1")
        (scene_dir / "c001" / "vdo.avi").write_bytes(b"not a video at all" * 10)
        where = f"{scene_dir / 'c001' / 'vdo.avi'}: cannot be read as a video"
    else:
        (scene_dir / "topology.yaml").write_text("links:\n  - {from: c001, to: c002, min: 1, max: 9}\n"
                                                 "  - {from: c001, to: c009, min: 1, max: 9}\n")
        where = f"{scene_dir / 'topology.yaml'}, line 3: link names unknown camera 'c009'"
    out = tmp_path / "run"
    capsys.readouterr()
    assert main(["mtmc", "run", "--scene", str(scene_dir), "--reid-weights", str(reid_ckpt), "--out", str(out),
                 "--device", "cpu", "--no-progress"]) == 1
    assert where in _one_error(capsys)
    assert not out.exists() or not [p for p in out.iterdir() if p.name != ".lock"]
    assert main(["data", "check", str(scene_dir)]) == 1
    assert where in capsys.readouterr().out


def test_generic_layout_with_cameras_yaml(tmp_path):
    scene_dir = _hand_tree(tmp_path)
    generic = tmp_path / "generic"
    for cam in ("c001", "c002"):
        (generic / f"north_{cam}").mkdir(parents=True)
        (scene_dir / cam / "img1").rename(generic / f"north_{cam}" / "frames")
        (scene_dir / cam / "mtsc" / "mtsc_tc.txt").rename(generic / f"north_{cam}" / "tracks.txt")
    (generic / "cameras.yaml").write_text(
        "cameras:\n  north_c001: {fps: 8, offset: 0}\n  north_c002: {fps: 8, offset: 1.5}\n"
        "links:\n  - {from: north_c001, to: north_c002, min: 0.5, max: 4}\n")
    scene = read_scene(generic)
    assert scene.layout == "generic" and [c.id for c in scene.cameras] == [1, 2]
    assert scene.cameras[1].fps == 8 and scene.cameras[1].time(9) == pytest.approx(2.5)
    assert scene.windows() == {(1, 2): (0.5, 4.0), (2, 1): (0.5, 4.0)}
    (generic / "cameras.yaml").write_text("cameras:\n  north_c001: {fps: 8, offset: 0}\n  north_c002: {fps: 8}\n")
    with pytest.raises(DataError, match=r"cameras.yaml, line 3: camera 'north_c002' has no time offset"):
        read_scene(generic)


def test_bench_mtmc_associate_rows(monkeypatch):
    from pamtri.pipeline.bench import ROWS
    from pamtri.pipeline.bench import mtmc as bench
    monkeypatch.setitem(bench.SHAPES, True, (600, 16))
    monkeypatch.setitem(bench.DENSE_PART, True, 200)
    rows = {r.name: r for r in bench.bench_mtmc(quick=True)}
    assert set(rows) == {"mtmc_associate", "mtmc_associate_peak"} and "mtmc" in ROWS
    assert rows["mtmc_associate"].ours > 0 and "extrapolated as N^2" in rows["mtmc_associate"].note
