import pytest
import timm
import torch

from pamtri.common.errors import CheckpointError
from pamtri.pose.model import PoseHRNet
from pamtri.pose.weights import checkpoint_layout, load_weights, official_to_ours, ours_to_official


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return PoseHRNet("hrnet_w18_small").eval()


def test_output_shape_stride4(model):
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 256, 256)).shape == (1, 36, 64, 64)
        assert model(torch.zeros(2, 3, 64, 96)).shape == (2, 36, 16, 24)


def test_every_parameter_gets_a_gradient(model):
    """The unused stage-4 fusions are dropped, so DDP needs no find_unused_parameters."""
    m = PoseHRNet("hrnet_w18_small").train()
    m(torch.randn(2, 3, 64, 64)).sum().backward()
    assert all(p.grad is not None for p in m.parameters())
    assert not any(".fuse_layers.1." in k for k in m.state_dict() if k.startswith("backbone.stage4.0."))


def test_official_posestnet_layout_round_trip(model, tmp_path):
    official = ours_to_official(model.state_dict())
    for key in ("final_layer.weight", "conv1.weight", "stage4.0.branches.0.0.conv1.weight"):
        assert key in official, key
    assert not any(k.startswith(("backbone.", "head.")) for k in official)
    assert checkpoint_layout(official) == "posestnet"
    back = official_to_ours(official)
    assert back.keys() == model.state_dict().keys()
    # as the official training script writes it: wrapped, with DataParallel's 'module.' prefix
    path = tmp_path / "model_best.pth"
    torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in official.items()}}, path)
    fresh = PoseHRNet("hrnet_w18_small")
    assert load_weights(fresh, path) == "posestnet"
    for k, v in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k


def test_mismatched_key_and_shape_are_listed(model, tmp_path):
    official = ours_to_official(model.state_dict())
    official["layer1.0.conv9.weight"] = official.pop("layer1.0.conv1.weight")
    official["final_layer.weight"] = torch.zeros(17, 16, 1, 1)
    official["final_layer.bias"] = torch.zeros(17)
    path = tmp_path / "bad.pth"
    torch.save(official, path)
    with pytest.raises(CheckpointError) as info:
        load_weights(PoseHRNet("hrnet_w18_small"), path)
    msg = str(info.value)
    assert "bad.pth" in msg and "head.weight: checkpoint (17, 16, 1, 1) vs model (36, 16, 1, 1)" in msg
    assert "backbone.layer1.0.conv1.weight" in msg and "backbone.layer1.0.conv9.weight" in msg


def test_imagenet_weights_fill_the_trunk_only(tmp_path):
    torch.manual_seed(1)
    classifier = timm.create_model("hrnet_w18_small", pretrained=False)
    path = tmp_path / "hrnet_w18_small_imagenet.pth"
    torch.save(classifier.state_dict(), path)
    m = PoseHRNet("hrnet_w18_small")
    head = m.head.weight.clone()
    assert load_weights(m, path) == "imagenet"
    ref = classifier.state_dict()
    for k, v in m.backbone.state_dict().items():
        assert torch.equal(v, ref[k]), k
    assert torch.equal(m.head.weight, head)
    # safetensors files (timm's hub format) load the same way
    from safetensors.torch import save_file
    st = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in ref.items()}, str(st))
    assert load_weights(PoseHRNet("hrnet_w18_small"), st) == "imagenet"
    # a trunk of another width is refused with the shapes listed
    with pytest.raises(CheckpointError, match="shape mismatch: layer1.0.conv1.weight"):
        load_weights(PoseHRNet("hrnet_w18_small_v2"), path)
    sd = dict(ref)
    sd["stage2.0.extra.weight"] = torch.zeros(1)
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match="not in model: stage2.0.extra.weight"):
        load_weights(PoseHRNet("hrnet_w18_small"), path)


def test_unknown_architecture_is_a_clear_error():
    with pytest.raises(CheckpointError, match="not an HRNet"):
        PoseHRNet("resnet50")


def test_load_pose_model_reads_official_posestnet_with_its_conventions(model, tmp_path):
    from pamtri.pose.weights import load as load_pose
    path = tmp_path / "model_best.pth"
    torch.save(ours_to_official(model.state_dict()), path)
    with pytest.raises(CheckpointError, match="stores no pamtri config"):
        load_pose(path)
    loaded, (cfg, _) = load_pose(path, name="hrnet_w18_small")
    assert cfg.codec.cell_convention == "reference" and cfg.codec.flip_shift == 1.0
    assert torch.equal(loaded.head.weight, model.head.weight)
