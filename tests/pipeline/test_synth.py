"""The synthetic vehicle generator: geometry, visibility, mirror symmetry, determinism, splits, labels, CLI."""
import csv
import math
import os
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from pamtri.common.errors import ConfigError
from pamtri.data.attributes import VERI_COLORS, VERI_TYPES
from pamtri.data.labels import read_pose_csv, read_reid_csv
from pamtri.data.records import parse_veri_name
from pamtri.pipeline.synth import META_HEADER, build_body, generate, make_identity, render_sample
from pamtri.pose.keypoints import FLIP_INDEX, NUM_KEYPOINTS, NUM_SIDE, flip_keypoints

VERI_RE = re.compile(r"^\d{4}_c\d{3}_\d{8}_0\.jpg$")
LEFT = np.arange(NUM_SIDE)
RIGHT = LEFT + NUM_SIDE


def ident(type_name="sedan", seed=0, color="red"):
    return make_identity(np.random.default_rng(seed), type_id=VERI_TYPES.index(type_name),
                         color_id=VERI_COLORS.index(color))


# ---------------------------------------------------------------------------------------------- body

@pytest.mark.parametrize("type_name", VERI_TYPES)
def test_body_keypoints_lie_on_their_polygons_and_mirror(type_name):
    body = build_body(ident(type_name, seed=VERI_TYPES.index(type_name)))
    kps = body.keypoints
    np.testing.assert_allclose(kps[RIGHT], kps[LEFT] * [1, -1, 1])
    assert (kps[LEFT, 1] > 0).all()                          # left side is +y
    for p in range(len(body.counts)):
        verts = body.verts[body.starts[p]:body.starts[p] + body.counts[p]]
        for k in np.flatnonzero(body.member[p]):
            # on the polygon's plane (the greenhouse is only nearly planar) and within its extent
            if not body.hull[p]:                             # a tyre is a cylinder: only the extent applies
                assert abs(np.dot(kps[k] - body.ref[p], body.normals[p])) < 0.06, (body.names[p], k)
            # (rims and hubs sit 1-2 mm proud of the tyre face the wheel-centre keypoint is on)
            assert (kps[k] >= verts.min(0) - 5e-3).all() and (kps[k] <= verts.max(0) + 5e-3).all(), (body.names[p], k)
    assert body.member[:, LEFT].any(axis=0).all() and body.member[:, RIGHT].any(axis=0).all()


@pytest.mark.parametrize("type_name", VERI_TYPES)
def test_body_profile_order_matches_spec(type_name):
    k = build_body(ident(type_name, seed=3)).keypoints
    x, z = k[:, 0], k[:, 2]
    # back -> front along the profile; front arch ahead of the rear arch; wheel centres inside their arches
    assert x[10] <= x[11] < x[12] < x[13] < x[14] < x[15] < x[16] < x[17]
    assert z[13] > z[12] and z[14] > z[15] and z[16] > z[17] and z[11] > z[10]
    for (fb, fu, ru, rb), centre in (((2, 3, 4, 5), 1), ((6, 7, 8, 9), 0)):
        assert x[fb] > x[fu] > x[ru] > x[rb]                  # front-bottom, front-upper, rear-upper, rear-bottom
        assert min(z[fu], z[ru]) > max(z[fb], z[rb]) and z[fu] > z[centre]
        assert x[rb] < x[centre] < x[fb]
    assert x[5] > x[6] and x[1] > x[0]


# -------------------------------------------------------------------------------------------- render

def test_render_sample_api():
    img, kps, meta = render_sample(5, size=80, style="realistic")
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and max(img.shape[:2]) == 80
    assert kps.dtype == np.float32 and kps.shape == (NUM_KEYPOINTS, 3)
    assert set(np.unique(kps[:, 2])) <= {0.0, 1.0}
    assert (meta["height"], meta["width"]) == img.shape[:2]
    assert 0 <= meta["orientation_deg"] < 360 and meta["type_id"] in range(9) and meta["color_id"] in range(10)
    again, kps2, _ = render_sample(5, size=80, style="realistic")
    assert np.array_equal(img, again) and np.array_equal(kps, kps2)


@pytest.mark.parametrize("style", ["synthetic", "realistic"])
def test_visible_keypoints_are_inside_and_on_the_vehicle(style):
    n_vis = n_exact = 0
    for seed in range(30):
        img, kps, meta = render_sample(seed, size=96, style=style, with_buffers=True)
        h, w = img.shape[:2]
        vis = kps[:, 2] > 0
        assert (kps[vis, 0] >= 0).all() and (kps[vis, 0] <= w - 1).all()
        assert (kps[vis, 1] >= 0).all() and (kps[vis, 1] <= h - 1).all()
        # the vehicle mask (occluders excluded) under each visible keypoint, within the renderer's pixel
        r = int(math.ceil(1.0 / meta["native"]))
        mask = cv2.dilate(meta["mask"].astype(np.uint8), np.ones((2 * r + 1, 2 * r + 1), np.uint8)) > 0
        xi = np.round(kps[vis, 0]).astype(int)
        yi = np.round(kps[vis, 1]).astype(int)
        assert mask[yi, xi].all(), (seed, np.flatnonzero(vis)[~mask[yi, xi]])
        n_vis += vis.sum()
        n_exact += meta["mask"][yi, xi].sum()
    assert n_vis > 30 * 12                                    # not vacuous: ~half the keypoints are visible
    assert n_exact >= 0.85 * n_vis


def test_keypoints_outside_the_crop_are_invisible():
    near_edge = outside_total = 0
    for seed in range(12):
        for m in (-0.01, -0.03, -0.1):
            img, kps, _ = render_sample(seed, size=96, margins=(m, 0.05, m, 0.05), occluders=0)
            w = img.shape[1]
            x = kps[:, 0]
            outside = (x < 0) | (x > w - 1)
            assert not kps[outside, 2].any()
            assert kps[~outside, 2].any()
            outside_total += outside.sum()
            near_edge += (((x > w - 1) & (x < w + 2)) | ((x < 0) & (x > -3))).sum()
    assert outside_total > 30 and near_edge > 3             # the boundary itself is exercised


def _side(seed, yaw, type_name="sedan", **kw):
    return render_sample(seed, size=160, identity=ident(type_name, seed), clean=True, yaw=yaw, elevation=1.0,
                         distance=20.0, with_buffers=True, **kw)


@pytest.mark.parametrize("type_name", ["sedan", "suv", "bus", "truck"])
def test_side_view_hides_the_far_side(type_name):
    _, kps, _ = _side(1, 90.0, type_name)                  # left side faces the camera
    assert kps[LEFT, 2].sum() >= 16 and kps[RIGHT, 2].sum() <= 2
    _, kps, _ = _side(1, 270.0, type_name)                 # right side faces the camera
    assert kps[RIGHT, 2].sum() >= 16 and kps[LEFT, 2].sum() <= 2


def test_side_view_layout_and_wheels():
    img, kps, meta = _side(2, 90.0)
    x, y = kps[:, 0], kps[:, 1]
    # yaw 90: the front points to the image left; roof above the belt above the wheel centres
    assert x[17] < x[16] < x[1] < x[0] < x[10]
    assert max(y[13], y[14]) < min(y[12], y[15]) < min(y[0], y[1])
    parts, names = meta["parts"], meta["part_names"]
    for k in (0, 1):
        assert kps[k, 2] == 1
        part = names[parts[int(round(y[k])), int(round(x[k]))] - 1]
        assert part in ("hub", "rim", "tyre"), part


def test_front_and_rear_views():
    _, kps, _ = render_sample(3, size=128, identity=ident("suv", 3), clean=True, yaw=0.0, elevation=15.0)
    front, back = [16, 17, 34, 35], [10, 11, 28, 29]
    assert kps[front, 2].all() and not kps[back, 2].any()
    assert kps[17, 0] > kps[35, 0]                           # facing us, the vehicle's left is on the image right
    _, kps, _ = render_sample(3, size=128, identity=ident("suv", 3), clean=True, yaw=180.0, elevation=15.0)
    assert kps[back, 2].all() and not kps[front, 2].any()
    assert kps[10, 0] < kps[28, 0]                           # from behind, its left is on the image left


@pytest.mark.parametrize("yaw", [25.0, 70.0, 135.0, 200.0, 310.0])
def test_flip_matches_the_mirrored_render(yaw):
    seed = int(yaw)
    img_a, kps_a, meta_a = render_sample(seed, size=128, clean=True, yaw=yaw, with_buffers=True)
    img_b, kps_b, meta_b = render_sample(seed, size=128, clean=True, yaw=360.0 - yaw, with_buffers=True)
    assert img_a.shape == img_b.shape
    flipped = flip_keypoints(kps_a, img_a.shape[1])
    np.testing.assert_allclose(flipped[:, :2], kps_b[:, :2], atol=0.05)
    assert (flipped[:, 2] == kps_b[:, 2]).sum() >= 34
    mask_a = meta_a["mask"][:, ::-1]
    inter = (mask_a & meta_b["mask"]).sum()
    union = (mask_a | meta_b["mask"]).sum()
    assert inter / union > 0.97
    diff = np.abs(img_a[:, ::-1].astype(int) - img_b.astype(int)).mean()
    assert diff < 4.0
    # and a wrong flip (no left/right swap) must not match
    wrong = kps_a.copy()
    wrong[:, 0] = img_a.shape[1] - 1 - wrong[:, 0]
    assert np.abs(wrong[:, :2] - kps_b[:, :2]).max() > 3
    assert FLIP_INDEX[0] == NUM_SIDE


def test_occluders_hide_keypoints():
    hidden = 0
    for seed in range(40):
        img, kps, meta = render_sample(seed, size=96, style="realistic", with_buffers=True, occluders=2)
        occ = meta["parts"] == 255
        xi = np.clip(np.round(kps[:, 0]).astype(int), 0, img.shape[1] - 1)
        yi = np.clip(np.round(kps[:, 1]).astype(int), 0, img.shape[0] - 1)
        # a keypoint whose whole 3x3 neighbourhood is occluder is invisible
        covered = cv2.erode(occ.astype(np.uint8), np.ones((3 * math.ceil(1 / meta["native"]),) * 2, np.uint8)) > 0
        under = covered[yi, xi]
        assert not kps[under, 2].any()
        hidden += under.sum()
    assert hidden > 10


# -------------------------------------------------------------------------------------------- data set

def _tree_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_whatever_workers(tmp_path):
    kw = dict(ids=4, images_per_id=3, size=48, cameras=2, preview=True, progress=False)
    generate(tmp_path / "a", seed=7, workers=1, **kw)
    generate(tmp_path / "b", seed=7, workers=2, **kw)
    generate(tmp_path / "c", seed=8, workers=1, **kw)
    a, b, c = (_tree_files(tmp_path / n) for n in "abc")
    n_query = len((tmp_path / "a" / "name_query.txt").read_text().split())
    assert len(a) == 12 + n_query + 3 + 9 + 2             # images (+ query copies), lists, CSVs, json, preview
    assert a == b
    images = [k for k in a if k.endswith(".jpg")]
    assert sum(a[k] != c.get(k) for k in images) > len(images) // 2


def _read_meta(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    assert tuple(rows[0]) == META_HEADER
    return [dict(zip(rows[0], r)) for r in rows[1:]]


def test_splits_names_and_labels(tmp_path):
    out = tmp_path / "ds"
    s = generate(out, seed=1, ids=6, images_per_id=5, size=64, cameras=3, test_fraction=0.5, progress=False)
    assert s["images"] == 30 and s["splits"]["train"]["ids"] == 3 and s["splits"]["test"]["ids"] == 3
    names = {}
    for split in ("train", "query", "test"):
        listed = (out / f"name_{split}.txt").read_text().split("\n")[:-1]
        assert listed == sorted(listed) == sorted(os.listdir(out / f"image_{split}"))
        assert all(VERI_RE.match(n) for n in listed)
        names[split] = listed
    ids = {sp: {parse_veri_name(n)[0] for n in names[sp]} for sp in names}
    assert ids["train"].isdisjoint(ids["test"]) and ids["train"] | ids["test"] == set(range(1, 7))
    assert set(names["query"]) <= set(names["test"]) and ids["query"] == ids["test"]
    pairs = [parse_veri_name(n) for n in names["query"]]
    assert len(pairs) == len(set(pairs)) == len({parse_veri_name(n) for n in names["test"]})
    for n in names["query"]:
        assert (out / "image_query" / n).read_bytes() == (out / "image_test" / n).read_bytes()
    frames = [(parse_veri_name(n)[1], n.split("_")[2]) for n in names["train"] + names["test"]]
    assert len(frames) == len(set(frames)) == 30               # frame numbers unique per camera
    assert all(1 <= parse_veri_name(n)[1] <= 3 for n in names["test"])

    for split in ("train", "query", "test"):
        pose = read_pose_csv(out / f"pose_label_{split}.csv", image_root=out / f"image_{split}", check_images=True)
        reid = read_reid_csv(out / f"label_{split}.csv", image_root=out / f"image_{split}", check_images=True)
        meta = _read_meta(out / f"meta_{split}.csv")
        assert [Path(r.path).name for r in pose] == [Path(r.path).name for r in reid] == [m["image"] for m in meta] \
            == names[split]
        for p, r, m in zip(pose, reid, meta):
            h, w = cv2.imread(p.path).shape[:2]
            assert (p.width, p.height) == (w, h)
            assert r.vehicle_id == int(m["vehicle_id"]) == p.vehicle_id
            assert r.color_id == int(m["color_id"]) and r.type_id == int(m["type_id"])
            assert int(m["camera_id"]) == p.camera_id
            assert 0 <= float(m["orientation_deg"]) < 360 and re.match(r"^\d+\.\d\d$", m["orientation_deg"])
            assert m["domain"] == "synthetic"
            np.testing.assert_allclose(p.keypoints[:, :2], np.round(r.keypoints[:, :2]), atol=1)
            assert np.array_equal(p.keypoints[:, 2], r.keypoints[:, 2])
    # file colour/type ids are 1-based
    first = next(csv.reader(open(out / "label_train.csv")))
    m0 = _read_meta(out / "meta_train.csv")[0]
    assert int(first[2]) == int(m0["color_id"]) + 1 and int(first[3]) == int(m0["type_id"]) + 1


def test_realistic_style_is_the_real_domain(tmp_path):
    generate(tmp_path / "r", ids=2, images_per_id=2, size=40, style="realistic", cameras=1, progress=False)
    assert {m["domain"] for m in _read_meta(tmp_path / "r" / "meta_test.csv")} == {"real"}


def test_interrupted_run_leaves_nothing(tmp_path, monkeypatch):
    import pamtri.pipeline.synth.dataset as ds
    real, calls = ds._render_task, []

    def flaky(job):
        calls.append(job)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(job)

    monkeypatch.setattr(ds, "_render_task", flaky)
    with pytest.raises(KeyboardInterrupt):
        generate(tmp_path / "x", ids=3, images_per_id=3, size=40, progress=False)
    assert os.listdir(tmp_path / "x") == []


@pytest.mark.parametrize("kw, flag", [(dict(ids=1), "--ids"), (dict(test_fraction=1.0), "--test-fraction"),
                                      (dict(test_fraction=0.0), "--test-fraction"), (dict(size=31), "--size"),
                                      (dict(images_per_id=0), "--images-per-id"), (dict(cameras=0), "--cameras"),
                                      (dict(workers=0), "--workers"), (dict(style="cartoon"), "--style")])
def test_bad_arguments_raise_config_error(tmp_path, kw, flag):
    with pytest.raises(ConfigError, match=re.escape(flag)):
        generate(tmp_path / "bad", progress=False, **kw)
    assert not (tmp_path / "bad").exists()


def test_cli_smoke(tmp_path, capsys):
    from pamtri.pipeline.cli import main
    out = tmp_path / "cli"
    argv = ["synth", "--out", str(out), "--ids", "4", "--images-per-id", "2", "--size", "40", "--cameras", "2",
            "--no-progress", "--preview"]
    assert main(argv) == 0
    assert "images" in capsys.readouterr().out
    for name in ("image_train", "image_query", "image_test", "name_test.txt", "label_query.csv",
                 "pose_label_train.csv", "meta_test.csv", "synth.json", "preview.png"):
        assert (out / name).exists(), name
    assert main(argv) != 0                                    # refuses to overwrite silently
    assert "--overwrite" in capsys.readouterr().err
    assert main(argv + ["--overwrite"]) == 0
    assert main(["synth", "--out", str(tmp_path / "bad"), "--ids", "1"]) != 0
    err = capsys.readouterr().err
    assert "--ids" in err and "at least 2" in err and "Traceback" not in err
