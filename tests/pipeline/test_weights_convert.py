"""``pamtri weights convert``: official PoseEstNet / MultiTaskNet files -> checkpoints our loaders read as-is."""
import numpy as np
import pytest
import torch

from pamtri.common.checkpoint import load_checkpoint
from pamtri.common.errors import CheckpointError
from pamtri.pipeline.cli import main
from pamtri.pose.model import PoseHRNet
from pamtri.pose.weights import ours_to_official
from tests.reid.test_model import _official_forward, _official_state


@pytest.fixture(scope="module")
def official_pose(tmp_path_factory):
    """hrnet_w18_small weights saved as the official training script does: pose_hrnet names, wrapped, 'module.'."""
    torch.manual_seed(0)
    model = PoseHRNet("hrnet_w18_small").eval()
    path = tmp_path_factory.mktemp("official") / "final_state.pth"
    torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in ours_to_official(model.state_dict()).items()}},
               path)
    return path, model


def test_posestnet_converts_to_a_self_describing_pose_checkpoint(official_pose, tmp_path, capsys):
    from pamtri.pose.weights import load as load_pose
    src, model = official_pose
    out = tmp_path / "pose.pt"
    assert main(["weights", "convert", "--from", "official-posestnet", "--in", str(src), "--out", str(out)]) == 0
    assert "hrnet_w18_small" in capsys.readouterr().out  # architecture found from the tensor shapes
    ckpt = load_checkpoint(out)
    assert ckpt["format"] == "pamtri-weights-1" and ckpt["config"]["model"]["name"] == "hrnet_w18_small"
    loaded, (cfg, _) = load_pose(out)  # no --model needed any more
    assert cfg.codec.cell_convention == "reference" and cfg.codec.flip_shift == 1.0
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_converted_pose_weights_work_with_pose_predict(official_pose, tmp_path):
    import cv2
    src, _ = official_pose
    out = tmp_path / "pose.pt"
    assert main(["weights", "convert", "--from", "official-posestnet", "--in", str(src), "--out", str(out),
                 "--model", "hrnet_w18_small"]) == 0
    (tmp_path / "img").mkdir()
    cv2.imwrite(str(tmp_path / "img" / "0001_c001_00000001_0.jpg"),
                np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8))
    assert main(["pose", "predict", "--weights", str(out), "--images", str(tmp_path / "img"), "--out",
                 str(tmp_path / "pred"), "--device", "cpu", "--precision", "fp32", "--workers", "0",
                 "--no-heatmaps"]) == 0
    assert np.load(tmp_path / "pred" / "poses.npz")["keypoints"].shape == (1, 36, 3)


@pytest.mark.parametrize("channels,keypoints,multitask", [(52, True, True), (3, False, False)])
def test_pamtri_reid_converts_with_a_description_from_the_shapes(official_pose, tmp_path, channels, keypoints,
                                                                  multitask):
    from pamtri.pipeline.infer import Pipeline
    from pamtri.reid.weights import load as load_reid
    state = _official_state(channels, keypoints, multitask)
    src = tmp_path / "model_best.pth.tar"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "rank1": 0.9, "epoch": 60}, src)
    out = tmp_path / "reid.pt"
    assert main(["weights", "convert", "--from", "official-pamtri-reid", "--in", str(src), "--out", str(out)]) == 0
    ckpt = load_checkpoint(out)
    assert ckpt["format"] == "pamtri-reid-weights-1"
    m = ckpt["model_description"]["model"]
    assert (m["heatmaps"], m["segments"], m["keypoints"], m["color"], m["type"]) == (
        channels in (39, 52), channels in (16, 52), keypoints, multitask, multitask)
    assert ckpt["config"]["data"]["height"] == 256 and ckpt["model_description"]["num_ids"] == 9
    model, _ = load_reid(out)
    x, p = torch.randn(2, channels, 64, 64), torch.rand(2, 108) - 0.5
    with torch.no_grad():
        assert torch.allclose(model.embed(x, p if keypoints else None), _official_forward(state, x, p, keypoints),
                              atol=1e-5)
    # both converted files load into the two-stage pipeline (pose weights only when the model uses pose input)
    pose = None
    if channels > 3:
        pose = tmp_path / "pose.pt"
        assert main(["weights", "convert", "--from", "official-posestnet", "--in", str(official_pose[0]), "--out",
                     str(pose)]) == 0
    pipe = Pipeline.from_weights(pose, out, device="cpu", precision="fp32")
    assert pipe.model.cfg == model.cfg and (pipe.height, pipe.width) == (256, 256)


def test_wrong_layouts_are_refused_with_the_file_named(official_pose, tmp_path, capsys):
    from pamtri.pipeline.weights import convert
    src, _ = official_pose
    with pytest.raises(CheckpointError, match="not an official PAMTRI MultiTaskNet"):
        convert("official-pamtri-reid", src, tmp_path / "x.pt")
    reid = tmp_path / "reid.pth"
    torch.save(_official_state(3, False, False), reid)
    assert main(["weights", "convert", "--from", "official-posestnet", "--in", str(reid), "--out",
                 str(tmp_path / "x.pt")]) == 1
    assert f"{reid}: not an official PoseEstNet checkpoint" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match="does not fit"):
        convert("official-posestnet", src, tmp_path / "x.pt", name="hrnet_w32")
    assert not (tmp_path / "x.pt").exists()
