"""Today's baseline parts of the ReID network: BNNeck, GeM / max pooling, last stride, IBN-a, timm backbones,
and the pose inputs (H, S, K) on every CNN backbone."""
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pamtri.common.errors import CheckpointError, ConfigError
from pamtri.reid.config import LossConfig, ModelConfig
from pamtri.reid.losses import reid_losses, triplet_batch_hard
from pamtri.reid.model import IBN, GeM, ReIDNet
from pamtri.reid.weights import build_model

RGB = ModelConfig(heatmaps=False, segments=False, keypoints=False, color=False, type=False)
BOT = replace(RGB, backbone="timm/resnet18", neck="bnneck", id_fc=0)
X = torch.randn(4, 3, 32, 32)


def test_gem_matches_a_hand_computation():
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    gem = GeM()
    assert gem.p.item() == 3.0
    want = ((1 + 8 + 27 + 64) / 4) ** (1 / 3)
    assert torch.allclose(gem(x), torch.tensor([[want]]))
    gem.p.data.fill_(1.0)
    assert torch.allclose(gem(x), torch.tensor([[2.5]]))
    assert gem.p.requires_grad


@pytest.mark.parametrize("pooling", ["avg", "max", "gem"])
def test_pooling_of_the_feature_map(pooling):
    model = ReIDNet(replace(BOT, pooling=pooling), num_ids=3).eval()
    with torch.no_grad():
        fmap = model.feature_map(X)
        want = {"avg": fmap.mean((2, 3)), "max": fmap.amax((2, 3)),
                "gem": fmap.clamp_min(1e-6).pow(3).mean((2, 3)).pow(1 / 3)}[pooling]
        assert torch.allclose(model.pooled(X), want, atol=1e-5)
    assert (model.gem is not None) == (pooling == "gem")


def test_bnneck_wiring():
    """Triplet sees the BN's input, the bias-free ID classifier its output; the test feature is after the BN."""
    model = ReIDNet(BOT, num_ids=5)
    assert isinstance(model.bnneck, nn.BatchNorm1d) and not model.bnneck.bias.requires_grad
    assert model.id_classifier.bias is None and model.id_fc is None
    out = model(X)
    pooled = model.pooled(X)
    assert torch.allclose(out["triplet_feature"], pooled, atol=1e-5)
    after = model.bnneck(pooled)
    assert torch.allclose(out["id"], after @ model.id_classifier.weight.t(), atol=1e-5)
    assert torch.allclose(out["embedding"], after, atol=1e-5)
    model.eval()
    with torch.no_grad():
        bn_eval = F.batch_norm(model.pooled(X), model.bnneck.running_mean, model.bnneck.running_var,
                               model.bnneck.weight, model.bnneck.bias)
        assert torch.allclose(model.embed(X), bn_eval, atol=1e-5)
        assert torch.allclose(model(X)["embedding"], bn_eval, atol=1e-5)
        before = ReIDNet(replace(BOT, embedding="before_bn"), num_ids=5).eval()
        assert torch.allclose(before.embed(X), before.pooled(X), atol=1e-6)
    assert model.embedding_dim == 512 == model.embed(X).shape[1]


def test_the_triplet_loss_takes_the_pre_bn_feature():
    model = ReIDNet(BOT, num_ids=2)
    out = model(X)
    batch = {k: torch.full((4,), -1) for k in ("color", "type", "orientation")}
    batch.update(pid=torch.tensor([0, 0, 1, 1]), domain=torch.zeros(4, dtype=torch.long))
    losses = reid_losses(out, batch, LossConfig(id=0.0))
    assert torch.allclose(losses["triplet"], triplet_batch_hard(model.pooled(X), batch["pid"]), atol=1e-5)
    losses["total"].backward()
    assert model.bnneck.weight.grad is None or not model.bnneck.weight.grad.any()  # nothing trains the BN here
    assert model.backbone.conv1.weight.grad.abs().sum() > 0


def test_bnneck_with_keypoints_normalises_the_joint_vector():
    cfg = replace(BOT, keypoints=True)
    model = ReIDNet(cfg, num_ids=3)
    kp = torch.rand(4, 108) - 0.5
    out = model(X, kp)
    assert model.bnneck.num_features == 512 + 108
    assert torch.allclose(out["triplet_feature"][:, 512:], kp)


@pytest.mark.parametrize("key,value,message", [
    ("id_fc", 1024, "set model.id_fc: 0"),
    ("embedding", "fc", "with bnneck use after_bn"),
])
def test_bnneck_config_errors(key, value, message):
    with pytest.raises(ConfigError, match=message):
        replace(BOT, **{key: value}).validate()
    with pytest.raises(ConfigError, match="needs model.neck: bnneck"):
        replace(RGB, embedding="after_bn").validate()


def test_ibn_a_layer_structure():
    model = ReIDNet(replace(RGB, backbone="resnet50_ibn_a"), num_ids=2)
    b = model.backbone
    assert isinstance(b.bn1, nn.BatchNorm2d)
    for name in ("layer1", "layer2", "layer3"):
        for block in getattr(b, name):
            ibn = block.bn1
            assert isinstance(ibn, IBN) and ibn.IN.num_features == ibn.BN.num_features == block.conv1.out_channels // 2
            assert ibn.IN.affine and isinstance(block.bn2, nn.BatchNorm2d) and isinstance(block.bn3, nn.BatchNorm2d)
    assert not any(isinstance(m, (IBN, nn.InstanceNorm2d)) for m in b.layer4.modules())
    assert "layer1.0.bn1.IN.weight" in b.state_dict() and "layer3.5.bn1.BN.running_mean" in b.state_dict()
    x = torch.randn(2, 64, 4, 4)
    ibn = b.layer1[0].bn1.eval()
    assert torch.allclose(ibn(x)[:, :32], F.instance_norm(x[:, :32], weight=ibn.IN.weight, bias=ibn.IN.bias))


@pytest.mark.parametrize("backbone", ["resnet50", "resnet50_ibn_a", "timm/resnet18"])
def test_last_stride_one_doubles_the_final_map(backbone):
    cfg = replace(RGB, backbone=backbone)
    with torch.no_grad():
        two = ReIDNet(cfg, num_ids=2).eval().feature_map(X)
        one = ReIDNet(replace(cfg, last_stride=1), num_ids=2).eval().feature_map(X)
    assert two.shape[-1] == 1 and one.shape[-1] == 2


def test_last_stride_needs_a_resnet():
    with pytest.raises(ConfigError, match="last_stride"):
        replace(RGB, last_stride=1).validate()
    with pytest.raises(ConfigError, match="layer4"):
        ReIDNet(replace(RGB, backbone="timm/mobilenetv3_small_050", last_stride=1), num_ids=2)


def test_unknown_backbones_are_config_errors():
    with pytest.raises(ConfigError, match="model.backbone"):
        replace(RGB, backbone="resnet51").validate()
    with pytest.raises(ConfigError, match="timm/not_a_model"):
        ReIDNet(replace(RGB, backbone="timm/not_a_model"), num_ids=2)


@pytest.mark.parametrize("backbone", ["densenet121", "resnet50", "resnet50_ibn_a", "timm/resnet18",
                                      "timm/mobilenetv3_small_050"])
@pytest.mark.parametrize("inputs", ["rgb", "h", "s", "k"])
@pytest.mark.parametrize("neck", ["fc", "bnneck"])
def test_every_backbone_with_every_pose_input_trains(backbone, inputs, neck):
    cfg = replace(RGB, backbone=backbone, heatmaps=inputs == "h", segments=inputs == "s", keypoints=inputs == "k",
                  neck=neck, id_fc=64 if neck == "fc" else 0)
    cfg.validate()
    torch.manual_seed(0)
    model = ReIDNet(cfg, num_ids=3)
    conv = model.backbone.get_submodule(model.first_conv)
    assert conv.in_channels == cfg.in_channels
    x = torch.randn(2, cfg.in_channels, 32, 32)
    kp = torch.rand(2, 108) - 0.5
    out = model(x, kp)
    assert out["embedding"].shape == (2, model.embedding_dim)
    (out["embedding"].square().mean() + out["id"].logsumexp(1).mean()).backward()
    assert conv.weight.grad[:, :3].abs().sum() > 0
    if inputs in ("h", "s"):
        assert conv.weight.grad[:, 3:].abs().sum() > 0


def test_widened_timm_conv_keeps_imagenet_rgb_weights(tmp_path):
    import timm
    torch.manual_seed(1)
    state = timm.create_model("resnet18", pretrained=False).state_dict()
    torch.save(state, tmp_path / "resnet18.pth")
    cfg = replace(RGB, backbone="timm/resnet18", heatmaps=True, pretrained=str(tmp_path / "resnet18.pth"))
    model = build_model(cfg, num_ids=2)
    assert torch.equal(model.backbone.conv1.weight[:, :3], state["conv1.weight"])
    assert torch.equal(model.backbone.layer4[1].bn2.weight, state["layer4.1.bn2.weight"])
    assert 0.01 < model.backbone.conv1.weight[:, 3:].std() < 0.03


def _offline(monkeypatch, hub):
    def no_network(url, dst, hash_prefix=None, progress=True):
        raise OSError(f"no network for {url}")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)


def test_pretrained_imagenet_loads_from_a_seeded_hub_cache_without_network(tmp_path, monkeypatch):
    import timm
    _offline(monkeypatch, tmp_path / "hub")
    torch.manual_seed(2)
    state = timm.create_model("resnet18", pretrained=False).state_dict()
    url = timm.create_model("resnet18", pretrained=False).pretrained_cfg["url"]
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(state, tmp_path / "hub" / "checkpoints" / url.rsplit("/", 1)[1])
    model = build_model(replace(RGB, backbone="timm/resnet18", heatmaps=True, pretrained="imagenet"), num_ids=2)
    assert torch.equal(model.backbone.conv1.weight[:, :3], state["conv1.weight"])
    assert torch.equal(model.backbone.layer3[0].bn1.running_mean, state["layer3.0.bn1.running_mean"])


def test_pretrained_imagenet_offline_without_the_file_names_it(tmp_path, monkeypatch):
    _offline(monkeypatch, tmp_path / "hub")
    with pytest.raises(CheckpointError) as err:
        build_model(replace(RGB, backbone="resnet50", pretrained="imagenet"), num_ids=2)
    message = str(err.value)
    assert str(tmp_path / "hub" / "checkpoints" / "resnet50-0676ba61.pth") in message and "\n" not in message
    assert "https://download.pytorch.org/models/resnet50-0676ba61.pth" in message
    with pytest.raises(ConfigError, match="r50_ibn_a.pth"):
        build_model(replace(RGB, backbone="resnet50_ibn_a", pretrained="imagenet"), num_ids=2)


@pytest.mark.parametrize("neck", [dict(neck="bnneck", id_fc=0), dict(id_fc=16, keypoints=True)])
def test_center_loss_runs_on_the_feature_it_sees(neck):
    """The centres have the size of the feature the center loss sees: BNNeck's input, else the test (FC) feature."""
    model = ReIDNet(replace(RGB, backbone="timm/resnet18", centers=True, **neck), num_ids=3)
    kp = torch.rand(4, 108) if neck.get("keypoints") else None
    out = model(X, kp)
    seen = out.get("triplet_feature", out["embedding"])
    assert out["centers"].shape == (3, seen.shape[1])
    batch = {k: torch.full((4,), -1) for k in ("color", "type", "orientation")}
    batch.update(pid=torch.tensor([0, 0, 1, 2]), domain=torch.zeros(4, dtype=torch.long))
    reid_losses(out, batch, LossConfig(center=5e-4))["total"].backward()
    assert model.centers.grad is not None and model.centers.grad.abs().sum() > 0


def test_random_resnet50_starts_each_residual_branch_at_zero():
    """The last BN of every bottleneck starts at 0, so each block starts as the identity (zero_init_residual)."""
    model = ReIDNet(replace(RGB, backbone="resnet50"), num_ids=2)
    last_bns = [m.bn3 for m in model.backbone.modules() if hasattr(m, "bn3")]
    assert len(last_bns) == 16 and all(not bn.weight.any() for bn in last_bns)
