import numpy as np
import torch

from pamtri.pipeline.infer import heatmaps_to_image_frame
from pamtri.pose.heatmaps import decode, encode
from pamtri.pose.transforms import apply, compose, crop_matrix, image_box, input_to_heatmap, invert
from tests.conftest import write_tiny_reid_checkpoint


def test_heatmaps_land_on_the_keypoint_in_the_image_frame():
    rng = np.random.default_rng(0)
    sizes = np.array([[100, 60], [40, 90]], dtype=np.float32)
    kp_px = np.stack([rng.uniform([10, 10], s - 10, (36, 2)) for s in sizes])  # (2, 36, 2)
    inverses, cells, cell_px = [], [], []
    for (w, h), pts in zip(sizes, kp_px):
        centre, box = image_box(int(w), int(h), 1.0, 1.25)
        cell_px.append(box[0] / 32)  # image pixels per crop heatmap cell
        to_cell = compose(input_to_heatmap(4), crop_matrix(centre, box, (128, 128)))  # 32x32 heatmap cells
        inverses.append(invert(to_cell))
        cells.append(apply(to_cell, pts))
    crop_hm, _ = encode(np.stack(cells), np.ones((2, 36)), (32, 32), sigma=1.5)
    out = heatmaps_to_image_frame(torch.from_numpy(crop_hm), np.stack(inverses), sizes, (64, 64))
    assert out.shape == (2, 36, 64, 64)
    xy, conf = decode(out.numpy(), method="dark")
    expected = (kp_px + 0.5) * (64 / sizes[:, None, :]) - 0.5
    # bilinear resampling peaks at crop-grid nodes: the error is bounded by half a crop cell, in pixels
    err_px = np.abs(xy - expected) * (sizes[:, None, :] / 64)
    assert (err_px.max(axis=(1, 2)) <= 0.5 * np.array(cell_px) + 0.1).all(), err_px.max(axis=(1, 2))
    assert np.abs((xy - expected).mean(axis=1)).max() < 0.3  # and unbiased
    assert (conf > 0.5).all()
    # swapping width and height (a classic axis bug) moves the peaks far away
    bad = heatmaps_to_image_frame(torch.from_numpy(crop_hm), np.stack(inverses), sizes[:, ::-1].copy(), (64, 64))
    assert np.abs(decode(bad.numpy(), method="dark")[0] - expected).max() > 3


def test_pipeline_inputs_match_the_training_sample_builder(tmp_path):
    """The vectorised batch preparation gives what the ReID data pipeline gives for the same pose output."""
    from pamtri.data.records import Record
    from pamtri.pipeline.infer import Pipeline, PoseBatch, _NoPose
    from pamtri.reid.pose_inputs import ArrayPose
    from pamtri.reid.transforms import make_builder
    from pamtri.reid.weights import load as load_reid
    cfg = write_tiny_reid_checkpoint(tmp_path / "r.pt", heatmaps=True, segments=True, keypoints=True)
    model, _ = load_reid(tmp_path / "r.pt")
    pipe = Pipeline(_NoPose("cpu", "fp32"), model, cfg.data, channels_last=False)
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 255, (50, 70, 3), dtype=np.uint8), rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)]
    kps = np.stack([np.concatenate([rng.uniform(0, [im.shape[1] - 1, im.shape[0] - 1], (36, 2)),
                                    rng.uniform(0, 1, (36, 1))], 1) for im in images]).astype(np.float32)
    heat = rng.uniform(0, 1, (2, 36, 64, 64)).astype(np.float32)
    pose = PoseBatch(kps, torch.from_numpy(heat))
    x, kv = pipe.reid_inputs(images, pose)
    x_last, _ = Pipeline(_NoPose("cpu", "fp32"), model, cfg.data).reid_inputs(images, pose)
    assert x.is_contiguous() and x_last.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(x_last, x)
    builder = make_builder(cfg.data, model.cfg, train=False)
    from pamtri.pose.segments import rasterise
    grid = (pipe.grid, pipe.grid)
    for i, im in enumerate(images):
        h, w = im.shape[:2]
        cells = kps[i].copy()
        cells[:, 0] = (cells[:, 0] + 0.5) * 64 / w - 0.5
        cells[:, 1] = (cells[:, 1] + 0.5) * 64 / h - 0.5
        source = ArrayPose(kps[i:i + 1], heat[i:i + 1], rasterise(cells, grid)[None])
        ref_x, ref_kv = builder(im, source(0, Record(path="x"), (w, h)))
        assert ref_x.shape == x[i].shape == (3 + 36 + 13, 32, 32)
        np.testing.assert_allclose(x[i, :3].numpy(), ref_x[:3].numpy(), atol=0.03)   # uint8 resize rounding
        np.testing.assert_allclose(x[i, 3:].numpy(), ref_x[3:].numpy(), atol=1e-4)
        np.testing.assert_allclose(kv[i].numpy(), ref_kv.numpy(), atol=1e-5)


def test_pipeline_embeds_image_files_end_to_end(tmp_path):
    import cv2

    from pamtri.common.checkpoint import save_checkpoint
    from pamtri.common.config import to_dict
    from pamtri.pipeline.cli import main
    from pamtri.pose.config import PoseConfig
    from pamtri.pose.weights import build_pose_model
    pcfg = PoseConfig()
    pcfg.model.name = "hrnet_w18_small"
    pcfg.codec.input_size = (64, 64)
    torch.manual_seed(0)
    save_checkpoint({"model": build_pose_model("hrnet_w18_small").state_dict(), "config": to_dict(pcfg)},
                    tmp_path / "p.pt")
    write_tiny_reid_checkpoint(tmp_path / "r.pt", heatmaps=True, segments=False, keypoints=True)
    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    for i in range(3):
        cv2.imwrite(str(tmp_path / "img" / f"{i:04d}_c001_0000000{i}_0.jpg"),
                    rng.integers(0, 255, (40 + 5 * i, 60, 3), dtype=np.uint8))
    assert main(["embed", "--pose-weights", str(tmp_path / "p.pt"), "--reid-weights", str(tmp_path / "r.pt"),
                 "--images", str(tmp_path / "img"), "--out", str(tmp_path / "g.npz"), "--precision", "fp32",
                 "--batch-size", "2"]) == 0
    g = np.load(tmp_path / "g.npz")
    assert g["features"].shape == (3, 1024) and g["keypoints"].shape == (3, 36, 3)
    assert np.isfinite(g["features"]).all()
    query = str(tmp_path / "img" / "0001_c001_00000001_0.jpg")
    assert main(["search", "--query", query, "--gallery", str(tmp_path / "g.npz"), "--top", "2",
                 "--precision", "fp32", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").stat().st_size > 0


def test_compile_flag_wraps_both_networks(tmp_path, monkeypatch):
    """--compile hands both networks to torch.compile with freezing, and pads a short batch to the compiled
    size (compiling for real takes minutes on 2 cores)."""
    from pamtri.pipeline.infer import Pipeline
    from pamtri.pose.codec import HeatmapCodec
    from pamtri.pose.predict import PosePredictor
    from pamtri.pose.weights import build_pose_model
    from pamtri.reid.weights import load as load_reid
    compiled, batches = [], []

    def fake_compile(module, options=None):
        compiled.append((module, options))
        module.register_forward_pre_hook(lambda m, args: batches.append((type(m).__name__, len(args[0]))))
        return module
    monkeypatch.setattr(torch, "compile", fake_compile)
    cfg = write_tiny_reid_checkpoint(tmp_path / "r.pt", heatmaps=True, segments=False, keypoints=True)
    reid, _ = load_reid(tmp_path / "r.pt")
    pose = build_pose_model("hrnet_w18_small").eval()
    codec = HeatmapCodec((64, 64), (16, 16))
    eager = Pipeline(PosePredictor(pose, codec, device="cpu", precision="fp32"), reid, cfg.data, batch_size=4)
    assert compiled == []
    images = [np.random.default_rng(i).integers(0, 255, (40, 56, 3), dtype=np.uint8) for i in range(3)]
    expected = eager.embed_arrays(images)
    pipe = Pipeline(PosePredictor(pose, codec, device="cpu", precision="fp32"), reid, cfg.data, batch_size=4,
                    compile=True)
    assert compiled == [(reid, {"freezing": True}), (pose, {"freezing": True})]
    got = pipe.embed_arrays(images)  # 3 images: padded to the compiled batch of 4, the pad's rows dropped
    assert {name for name, _ in batches} == {type(reid).__name__, type(pose).__name__}
    assert {b for _, b in batches} == {4}
    for key in expected:
        assert got[key].shape == expected[key].shape
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-4, atol=1e-4)


def test_pose_weights_other_than_the_trained_ones_are_warned_about(tmp_path, caplog):
    from pamtri.common.checkpoint import file_sha256, load_checkpoint, save_checkpoint
    from pamtri.common.config import to_dict
    from pamtri.pipeline.infer import Pipeline
    from pamtri.pose.config import PoseConfig
    from pamtri.pose.weights import build_pose_model
    cfg = PoseConfig()
    cfg.model.name = "hrnet_w18_small"
    cfg.codec.input_size = (64, 64)
    pose = tmp_path / "pose.pt"
    save_checkpoint({"model": build_pose_model("hrnet_w18_small").state_dict(), "config": to_dict(cfg)}, pose)
    write_tiny_reid_checkpoint(tmp_path / "r.pt", heatmaps=True, segments=False, keypoints=True)
    for trained_with, warned in ((file_sha256(pose), False), ("0" * 64, True)):
        ckpt = load_checkpoint(tmp_path / "r.pt")
        ckpt["pose_weights_sha256"] = trained_with
        save_checkpoint(ckpt, tmp_path / "r.pt")
        caplog.clear()
        Pipeline.from_weights(pose, tmp_path / "r.pt", device="cpu", precision="fp32")
        assert ("other pose weights" in caplog.text) == warned


def test_embed_gives_the_features_of_reid_eval_on_the_models_own_grid(tmp_path):
    """A ReID model trained with data.heatmap_size 32 on caches built with --grid 32 gets, through `pamtri embed`,
    the features its own evaluation path computes; the 64-cell grid inference used to hard-code does not."""
    import cv2

    from pamtri.common.checkpoint import save_checkpoint
    from pamtri.common.config import from_dict, to_dict
    from pamtri.pipeline.cli import main
    from pamtri.pipeline.infer import Pipeline
    from pamtri.pose.config import PoseConfig
    from pamtri.pose.weights import build_pose_model
    from pamtri.reid.config import ReIDConfig
    from pamtri.reid.evaluate import eval_loaders, extract_features, read_eval_records
    from pamtri.reid.weights import load as load_reid
    from tests.conftest import write_tiny_reid_config, write_tiny_synth_tree
    root = write_tiny_synth_tree(tmp_path / "data", ids=8)
    for path in root.glob("image_*/*.jpg"):  # the ReID input size, so that the RGB channels need no resampling
        cv2.imwrite(str(path), cv2.resize(cv2.imread(str(path)), (32, 32), interpolation=cv2.INTER_AREA))
    pcfg = PoseConfig()
    pcfg.model.name, pcfg.codec.input_size = "hrnet_w18_small", (64, 64)
    torch.manual_seed(0)
    pose = tmp_path / "pose.pt"
    save_checkpoint({"model": build_pose_model("hrnet_w18_small").state_dict(), "config": to_dict(pcfg)}, pose)
    caches = {split: tmp_path / f"cache_{split}" for split in ("train", "query", "test")}
    for split, out in caches.items():  # float16: the random pose model's heatmaps are tiny, uint8 would zero them
        assert main(["cache", "build", "--pose-weights", str(pose), "--data", str(root), "--split", split,
                     "--out", str(out), "--grid", "32", "--heatmap-dtype", "float16", "--device", "cpu",
                     "--precision", "fp32"]) == 0
    config = write_tiny_reid_config(tmp_path / "tiny.yaml", root, epochs=1, batches=2)
    assert main(["reid", "train", "--config", str(config), "--out", str(tmp_path / "run"),
                 "--set", "data.pose_source=cache", "--set", "data.heatmap_size=32", "--set", "model.segments=true",
                 "--set", "data.segment_threshold=0",  # the random pose model's confidences are near 0
                 "--set", f"data.train=[{{root: '{root}', split: train, pose_cache: '{caches['train']}'}}]",
                 "--set", f"data.query_cache={caches['query']}", "--set", f"data.gallery_cache={caches['test']}",
                 "--set", "device=cpu", "--set", "precision=fp32"]) == 0
    weights = tmp_path / "run" / "best.pt"
    model, ckpt = load_reid(weights)
    cfg = from_dict(ReIDConfig, ckpt["config"])
    query, gallery = read_eval_records(cfg.data)
    ql, _ = eval_loaders(query, gallery, cfg.data, model.cfg, batch_size=16, workers=0)
    expected = extract_features(model, ql, torch.device("cpu"))
    assert main(["embed", "--pose-weights", str(pose), "--reid-weights", str(weights), "--images",
                 str(root / "image_query"), "--out", str(tmp_path / "q.npz"), "--device", "cpu",
                 "--precision", "fp32"]) == 0
    got = np.load(tmp_path / "q.npz")
    order = [list(got["names"]).index(name) for name in expected.names]
    np.testing.assert_allclose(got["features"][order], expected.features.numpy(), atol=1e-4)
    pipe = Pipeline.from_weights(pose, weights, device="cpu", precision="fp32")
    assert pipe.grid == 32
    pipe.grid = 64
    old = pipe.embed([str(root / "image_query" / name) for name in expected.names])["features"]
    assert np.abs(old - expected.features.numpy()).max() > 1e-2
