import cv2
import numpy as np
import pytest
import torch

from pamtri.common.checkpoint import save_checkpoint
from pamtri.common.config import to_dict
from pamtri.common.errors import CheckpointError
from pamtri.data.labels import read_reid_csv, write_reid_csv
from pamtri.data.records import Record
from pamtri.pipeline.cachebuild import build_cache, export_legacy
from pamtri.pipeline.cli import main
from pamtri.pose.cache import Cache
from pamtri.pose.config import PoseConfig
from pamtri.pose.legacy import legacy_folders, read_legacy_heatmaps, read_legacy_segments, write_legacy_maps
from pamtri.pose.segments import rasterise


@pytest.fixture(scope="module")
def pose_weights(tmp_path_factory):
    from pamtri.pose.weights import build_pose_model
    torch.manual_seed(0)
    cfg = PoseConfig()
    cfg.model.name = "hrnet_w18_small"
    cfg.codec.input_size = (64, 64)
    model = build_pose_model("hrnet_w18_small")
    path = tmp_path_factory.mktemp("w") / "pose.pt"
    save_checkpoint({"model": model.state_dict(), "config": to_dict(cfg)}, path)
    return path


def make_images(folder, n, rng):
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        name = f"{i + 1:04d}_c001_{i:08d}_0.jpg"
        h, w = int(rng.integers(30, 60)), int(rng.integers(30, 60))
        cv2.imwrite(str(folder / name), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        names.append(name)
    return names


def test_build_cache_from_pose_model_and_resume(tmp_path, pose_weights):
    rng = np.random.default_rng(0)
    names = make_images(tmp_path / "img", 5, rng)
    paths = [str(tmp_path / "img" / n) for n in names]
    out = build_cache(pose_weights, paths, tmp_path / "cache", batch_size=2, chunk_size=2, precision="fp32",
                      progress=False)
    cache = Cache(out)
    assert cache.names == names
    assert cache.arrays["heatmaps"].shape == (5, 36, 64, 64)
    kp = cache.get(names[3]).keypoints
    img = cv2.imread(paths[3])
    # keypoints are in original-image pixels: inside the pose crop box (image enlarged 1.25, made square)
    from pamtri.pose.transforms import image_box
    centre, box = image_box(img.shape[1], img.shape[0], 1.0, 1.25)
    lo, hi = centre - box / 2 - 1, centre + box / 2 + 1
    assert ((kp[:, :2] >= lo) & (kp[:, :2] <= hi)).all()
    # a second run with the same inputs builds nothing and refuses other weights
    before = (tmp_path / "cache/heatmaps.npy").read_bytes()
    build_cache(pose_weights, paths, tmp_path / "cache", batch_size=2, chunk_size=2, precision="fp32",
                progress=False)
    assert (tmp_path / "cache/heatmaps.npy").read_bytes() == before
    from pamtri.common.checkpoint import file_sha256
    assert Cache(out, expect_weights_sha256=file_sha256(pose_weights)).manifest["count"] == 5
    with pytest.raises(CheckpointError, match="other pose weights"):
        Cache(out, expect_weights_sha256="0" * 64)
    state = torch.load(pose_weights, weights_only=True)
    state["model"] = {k: v + 1 if v.is_floating_point() else v for k, v in state["model"].items()}
    other = tmp_path / "other.pt"
    save_checkpoint(state, other)
    with pytest.raises(CheckpointError, match="other inputs"):
        build_cache(other, paths, tmp_path / "cache", batch_size=2, chunk_size=2, progress=False)


def test_cli_build_names_missing_weights(tmp_path, capsys):
    make_images(tmp_path, 1, np.random.default_rng(0))
    assert main(["cache", "build", "--pose-weights", str(tmp_path / "nope.pt"), "--images", str(tmp_path),
                 "--out", str(tmp_path / "c")]) == 1
    assert "nope.pt" in capsys.readouterr().err


def test_legacy_import_export_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "legacy"
    names = make_images(root / "image_test", 3, rng)
    records = []
    for name in names:
        img = cv2.imread(str(root / "image_test" / name))
        h, w = img.shape[:2]
        kps = np.concatenate([rng.uniform(0, [w - 1, h - 1], (36, 2)), rng.uniform(0.3, 1, (36, 1))], 1)
        kps = np.round(kps, 3).astype(np.float32)
        heat = np.zeros((36, 64, 64), np.float32)
        heat[:, 20:40, 10:30] = rng.uniform(0.2, 1.0, (36, 1, 1))
        heat_dir, seg_dir = legacy_folders(root, "test", name)
        write_legacy_maps(heat_dir, heat, rasterise(kps, (h, w)).astype(bool), segment_folder=seg_dir)
        records.append(Record(path=name, vehicle_id=int(name[:4]), color_id=0, type_id=0, keypoints=kps))
    write_reid_csv(records, root / "label_test.csv")
    assert main(["cache", "import-legacy", "--root", str(root), "--split", "test",
                 "--labels", str(root / "label_test.csv"), "--out", str(tmp_path / "cache")]) == 0
    cache = Cache(tmp_path / "cache")
    assert cache.names == names
    out = tmp_path / "exported"
    assert export_legacy(tmp_path / "cache", out, "test", root / "image_test") == 3
    for name in names:
        h0, s0 = legacy_folders(root, "test", name)
        h1, s1 = legacy_folders(out, "test", name)
        a, b = read_legacy_heatmaps(h0).astype(int), read_legacy_heatmaps(h1).astype(int)
        assert np.abs(a - b).max() <= 6  # two JPEG generations of the same maps
        sa, sb = read_legacy_segments(s0) > 127, read_legacy_segments(s1) > 127
        assert (sa == sb).mean() > 0.98
    back = read_reid_csv(out / "label_test.csv")
    np.testing.assert_allclose(np.stack([r.keypoints for r in back]), np.stack([r.keypoints for r in records]),
                               atol=1e-3)


def test_the_grid_comes_from_the_build_argument(tmp_path, pose_weights):
    """--grid sets the image-frame grid; the spec records sizes as (width, height): a 96 x 64 pose input."""
    state = torch.load(pose_weights, weights_only=True)
    state["config"]["codec"]["input_size"] = [96, 64]
    save_checkpoint(state, tmp_path / "wide.pt")
    names = make_images(tmp_path / "img", 2, np.random.default_rng(2))
    assert main(["cache", "build", "--pose-weights", str(tmp_path / "wide.pt"), "--images", str(tmp_path / "img"),
                 "--out", str(tmp_path / "c16"), "--grid", "16", "--precision", "fp32", "--device", "cpu"]) == 0
    cache = Cache(tmp_path / "c16")
    assert cache.names == names and cache.grid == (16, 16) and cache.arrays["heatmaps"].shape == (2, 36, 16, 16)
    assert cache.manifest["spec"]["heatmap_size"] == [16, 16] and cache.manifest["spec"]["input_size"] == [96, 64]
