"""TransReID's ViT (reid/vit.py) at a tiny size: overlapping patches, resampled position embeddings, SIE,
the keypoint token, the pose-derived viewpoint, ImageNet weight mapping, and the pose inputs (H, S, K)."""
from dataclasses import replace

import numpy as np
import pytest
import timm
import torch
from timm.layers import resample_abs_pos_embed

from pamtri.common.errors import ConfigError
from pamtri.pose.keypoints import FLIP_INDEX
from pamtri.reid.config import ModelConfig
from pamtri.reid.model import ReIDNet
from pamtri.reid.vit import VIEW_NAMES, patch_grid, pose_view
from pamtri.reid.weights import load_imagenet_weights

NAME = "vit_tiny_patch16_224"
VIT = ModelConfig(backbone=f"timm/{NAME}", input_size=(64, 64), neck="bnneck", id_fc=0, heatmaps=False,
                  segments=False, keypoints=False, color=False, type=False)
SIE = replace(VIT, sie_cameras=4, sie_views=6, orientation_bins=6)
X = torch.randn(2, 3, 64, 64)
KP = torch.rand(2, 108) - 0.5


def _model(cfg: ModelConfig, seed: int = 0) -> ReIDNet:
    cfg.validate()
    torch.manual_seed(seed)
    return ReIDNet(cfg, num_ids=3)


@pytest.mark.parametrize("inputs", ["rgb", "h", "s", "k", "h_s_k"])
def test_vit_builds_and_trains_with_each_pose_input(inputs):
    cfg = replace(SIE, heatmaps="h" in inputs, segments="s" in inputs, keypoints="k" in inputs)
    model = _model(cfg)
    x = torch.randn(2, cfg.in_channels, 64, 64)
    out = model(x, KP, torch.tensor([0, 3]), torch.tensor([5, -1]))
    assert out["embedding"].shape == (2, 192) == out["triplet_feature"].shape and out["id"].shape == (2, 3)
    out["id"].sum().backward()
    conv = model.backbone.vit.patch_embed.proj
    assert conv.in_channels == cfg.in_channels and conv.weight.grad.abs().sum() > 0
    assert model.backbone.camera_embed.grad.abs().sum() > 0
    assert (model.backbone.keypoint_token is not None) == cfg.keypoints


def test_overlapping_patches_give_the_stride_12_grid():
    model = _model(VIT)
    pe = model.backbone.vit.patch_embed
    assert pe.proj.kernel_size == (16, 16) and pe.proj.stride == (12, 12)
    assert patch_grid((64, 64), 16, 12) == (5, 5) == tuple(pe.grid_size)
    assert patch_grid((256, 256), 16, 12) == (21, 21)  # TransReID's grid at 256 x 256
    assert pe(X).shape == (2, 25, 192)
    plain = _model(replace(VIT, patch_stride=16)).backbone.vit.patch_embed
    assert tuple(plain.grid_size) == (4, 4) and plain(X).shape == (2, 16, 192)


def test_position_embedding_is_resampled_to_the_grid():
    torch.manual_seed(0)
    timm_vit = timm.create_model(NAME, pretrained=False, num_classes=0, img_size=(64, 64))  # 4 x 4 grid
    model = _model(VIT, seed=0)
    want = resample_abs_pos_embed(timm_vit.pos_embed.detach(), [5, 5], [4, 4], num_prefix_tokens=1)
    assert model.backbone.vit.pos_embed.shape == (1, 1 + 25, 192)
    assert torch.allclose(model.backbone.vit.pos_embed, want)


def test_imagenet_weights_map_onto_the_vit(tmp_path):
    """A 224-pixel timm state dict (14 x 14 grid, classifier head) loads: pos embed resampled, RGB kept."""
    torch.manual_seed(1)
    imagenet = timm.create_model(NAME, pretrained=False).state_dict()
    path = tmp_path / "vit.pth"
    torch.save(imagenet, path)
    model = _model(replace(SIE, heatmaps=True, keypoints=True))
    load_imagenet_weights(model, path)
    vit = model.backbone.vit
    want = resample_abs_pos_embed(imagenet["pos_embed"], [5, 5], [14, 14], num_prefix_tokens=1)
    assert torch.allclose(vit.pos_embed, want)
    assert torch.equal(vit.patch_embed.proj.weight[:, :3], imagenet["patch_embed.proj.weight"])
    assert vit.patch_embed.proj.weight[:, 3:].std() < 0.05
    assert torch.equal(vit.blocks[0].attn.qkv.weight, imagenet["blocks.0.attn.qkv.weight"])


def test_sie_changes_the_output_only_through_the_camera_and_view():
    model = _model(SIE).eval()
    cams = torch.tensor([1, 2])
    with torch.no_grad():
        base = model.embed(X, cameras=cams)
        assert torch.equal(model.embed(X, cameras=cams.clone()), base)
        assert not torch.allclose(model.embed(X, cameras=torch.tensor([1, 3])), base)
        changed = model.embed(X, cameras=torch.tensor([0, 2]))
        assert not torch.allclose(changed[0], base[0]) and torch.allclose(changed[1], base[1], atol=1e-6)
        assert not torch.allclose(model.embed(X, cameras=cams, views=torch.tensor([0, 0])), base)
        none = model.embed(X)
        assert torch.allclose(model.embed(X, cameras=torch.tensor([-1, -1]), views=torch.tensor([-1, -1])), none)
        off = _model(replace(SIE, sie_coefficient=0.0)).eval()
        assert torch.allclose(off.embed(X, cameras=cams, views=torch.tensor([4, 5])), off.embed(X), atol=1e-6)
        with pytest.raises(ValueError, match="model.sie_cameras"):
            model.embed(X, cameras=torch.tensor([4, 0]))


def test_the_keypoint_token_changes_the_output():
    model = _model(replace(VIT, keypoints=True)).eval()
    assert model.embedding_dim == 192  # a token, not concatenated to the CLS feature
    with torch.no_grad():
        a = model.embed(X, KP)
        assert a.shape == (2, 192)
        assert not torch.allclose(model.embed(X, KP + 0.1), a)
    with pytest.raises(ValueError, match="keypoint"):
        model.embed(X)


def _confidences(*groups) -> torch.Tensor:
    c = torch.zeros(1, 36)
    for g in groups:
        c[0, list(g)] = 1.0
    return c


FRONT, REAR, LEFT, RIGHT = (16, 17, 34, 35), (10, 11, 28, 29), range(10), range(18, 28)


@pytest.mark.parametrize("groups, view", [
    ((FRONT,), "front"), ((FRONT, LEFT), "front_left"), ((LEFT, (16, 17)), "left"), ((REAR, LEFT), "rear_left"),
    ((REAR,), "rear"), ((REAR, RIGHT), "rear_right"), ((RIGHT, (28, 29)), "right"), ((FRONT, RIGHT), "front_right"),
])
def test_pose_view_of_hand_made_keypoint_sets(groups, view):
    assert VIEW_NAMES[int(pose_view(_confidences(*groups)))] == view


def test_pose_view_without_visible_faces_and_under_a_flip():
    assert int(pose_view(torch.zeros(1, 36))) == -1
    assert int(pose_view(torch.full((1, 36), 0.4))) == -1  # nothing above the visibility threshold
    for groups in ((FRONT, LEFT), (REAR, RIGHT), (LEFT,)):
        c = _confidences(*groups)
        mirrored = VIEW_NAMES[int(pose_view(c[:, list(FLIP_INDEX)]))]
        want = VIEW_NAMES[int(pose_view(c))].replace("left", "L").replace("right", "left").replace("L", "right")
        assert mirrored == want


def test_view_from_pose_ignores_the_view_argument():
    model = _model(replace(VIT, sie_views=8, sie_view_source="pose")).eval()
    front = np.full((2, 36, 3), -0.5, np.float32)
    front[:, list(FRONT), 2] = 0.5
    kp = torch.from_numpy(front.reshape(2, 108))
    rear = torch.from_numpy(front.copy()).reshape(2, 36, 3)
    rear[:, :, 2] = -0.5
    rear[:, list(REAR), 2] = 0.5
    with torch.no_grad():
        a = model.embed(X, kp, views=torch.tensor([3, 3]))
        assert torch.equal(a, model.embed(X, kp, views=torch.tensor([1, 2])))
        assert not torch.allclose(a, model.embed(X, rear.reshape(2, 108)))


@pytest.mark.parametrize("change, match", [
    (dict(backbone="resnet50"), "ViT backbone"),
    (dict(pooling="gem"), "CLS token"),
    (dict(sie_views=6, sie_view_source="pose"), "sie_views: 8"),
    (dict(sie_views=8), "orientation_bins"),
])
def test_vit_keys_are_checked(change, match):
    with pytest.raises(ConfigError, match=match):
        replace(SIE, **change).validate()


def test_vit_needs_its_input_size():
    with pytest.raises(ConfigError, match="model.input_size"):
        ReIDNet(replace(VIT, input_size=(0, 0)), num_ids=3)


VIT_SETS = ["model.backbone=timm/vit_tiny_patch16_224", "model.neck=bnneck", "model.id_fc=0", "model.sie_cameras=3",
            "model.sie_views=8", "model.sie_view_source=pose", "eval.metric=cosine"]


def test_training_and_evaluation_feed_cameras_and_views_to_sie(tmp_path, monkeypatch):
    from pamtri.common.checkpoint import load_checkpoint
    from pamtri.pipeline.cli import main
    from pamtri.reid.vit import TransReIDViT
    from tests.conftest import write_tiny_reid_config, write_tiny_synth_tree
    root = write_tiny_synth_tree(tmp_path / "data", ids=8)
    cfg = write_tiny_reid_config(tmp_path / "tiny.yaml", root, epochs=1, batches=2)
    seen = []
    forward = TransReIDViT.forward

    def recording(self, images, keypoints=None, cameras=None, views=None):
        seen.append((self.training, cameras))
        return forward(self, images, keypoints, cameras, views)
    monkeypatch.setattr(TransReIDViT, "forward", recording)
    out = tmp_path / "run"
    assert main(["reid", "train", "--config", str(cfg), "--out", str(out),
                 *[a for s in VIT_SETS for a in ("--set", s)]]) == 0
    assert any(train for train, _ in seen) and any(not train for train, _ in seen)
    assert all(c is not None and 0 <= int(c.min()) and int(c.max()) <= 2 for _, c in seen)
    best = load_checkpoint(out / "best.pt")
    assert tuple(best["model_description"]["model"]["input_size"]) == (32, 32)  # filled from data.height/width
    assert best["model"]["backbone.camera_embed"].shape == (3, 192)
    assert best["model"]["backbone.vit.patch_embed.proj.weight"].shape[1] == 3 + 36


def test_training_refuses_more_cameras_than_the_sie_table(tmp_path):
    from pamtri.pipeline.cli import main
    from tests.conftest import write_tiny_reid_config, write_tiny_synth_tree
    root = write_tiny_synth_tree(tmp_path / "data", ids=8)
    cfg = write_tiny_reid_config(tmp_path / "tiny.yaml", root, epochs=1, batches=1)
    sets = [s.replace("sie_cameras=3", "sie_cameras=2") for s in VIT_SETS]
    with pytest.raises(ConfigError, match="model.sie_cameras = 2 but .* has camera id 2"):
        main(["--debug", "reid", "train", "--config", str(cfg), "--out", str(tmp_path / "run"),
              *[a for s in sets for a in ("--set", s)]])


def test_inference_cameras_are_unknown_unless_given():
    from pamtri.pipeline.infer import Pipeline, _NoPose
    from pamtri.reid.config import DataConfig
    model = _model(replace(SIE, input_size=(32, 32)))
    pipe = Pipeline(_NoPose("cpu", "fp32"), model, DataConfig(height=32, width=32), channels_last=False)
    images = [np.random.default_rng(i).integers(0, 255, (40, 30, 3), dtype=np.uint8) for i in range(3)]
    unknown = pipe.embed_arrays(images)["features"]
    assert np.allclose(pipe.embed_arrays(images, cameras=[-1, -1, -1])["features"], unknown, atol=1e-6)
    given = pipe.embed(images, cameras=[0, -1, 3])["features"]
    assert not np.allclose(given[0], unknown[0]) and np.allclose(given[1], unknown[1], atol=1e-6)


def test_onnx_export_of_a_sie_vit_runs_with_unknown_cameras(tmp_path):
    pytest.importorskip("onnxruntime")
    from pamtri.pipeline.export import export_reid
    from tests.conftest import write_tiny_reid_checkpoint
    write_tiny_reid_checkpoint(tmp_path / "vit.pt", True, False, True, backbone=f"timm/{NAME}", input_size=(32, 32),
                               neck="bnneck", id_fc=0, sie_cameras=3, sie_views=8, sie_view_source="pose",
                               color=False, type=False)
    report = export_reid(tmp_path / "vit.pt", tmp_path / "vit.onnx")
    assert report.inputs == {"images": ["batch", 39, 32, 32], "keypoints": ["batch", 108]}
    assert report.max_abs_diff is not None and report.max_abs_diff < report.tolerance
