"""The ReID network: widened first conv, keypoint concat, heads, reversal layer, weight loading."""
import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
import torchvision

from pamtri.common.errors import CheckpointError
from pamtri.reid.config import ModelConfig
from pamtri.reid.model import KEYPOINT_DIM, ReIDNet, grad_reverse, grl_ramp
from pamtri.reid.weights import build_model, load_pamtri_checkpoint, pamtri_layout
from pamtri.reid.weights import load as load_reid

RGB = ModelConfig(heatmaps=False, segments=False, keypoints=False, color=False, type=False)


@pytest.fixture(scope="module")
def imagenet_densenet(tmp_path_factory):
    """A torchvision-format DenseNet121 state dict file (random values, old-style 'norm.1' key names)."""
    torch.manual_seed(0)
    state = torchvision.models.densenet121(weights=None).state_dict()
    old = {}
    for k, v in state.items():  # the published file predates torchvision's renaming of these keys
        k = k.replace("norm1.", "norm.1.").replace("conv1.", "conv.1.").replace("norm2.", "norm.2.").replace(
            "conv2.", "conv.2.") if "denselayer" in k else k
        old[k] = v
    path = tmp_path_factory.mktemp("weights") / "densenet121.pth"
    torch.save(old, path)
    return path, state


@pytest.mark.parametrize("heat,seg,channels",
                         [(False, False, 3), (True, False, 39), (False, True, 16), (True, True, 52)])
def test_widened_first_conv_keeps_rgb_weights(imagenet_densenet, heat, seg, channels):
    path, state = imagenet_densenet
    cfg = replace(RGB, heatmaps=heat, segments=seg, pretrained=str(path))
    model = build_model(cfg, num_ids=5)
    conv = model.backbone.conv0
    assert conv.in_channels == channels == cfg.in_channels
    assert torch.equal(conv.weight[:, :3], state["features.conv0.weight"])
    assert torch.equal(model.backbone.denseblock1.denselayer1.conv1.weight,
                       state["features.denseblock1.denselayer1.conv1.weight"])
    if channels > 3:
        extra = conv.weight[:, 3:].detach()
        assert abs(extra.mean().item()) < 0.002
        assert abs(extra.std().item() - 0.02) < 0.002
    x = torch.randn(2, channels, 64, 64)
    assert model(x)["embedding"].shape == (2, 1024)


def test_keypoint_vector_is_concatenated():
    torch.manual_seed(0)
    cfg = replace(RGB, keypoints=True, color=True, type=True)
    model = ReIDNet(cfg, num_ids=4).eval()
    assert model.id_fc.in_features == 1024 + KEYPOINT_DIM == 1132
    assert model.color_fc.in_features == model.type_fc.in_features == 1132
    x = torch.randn(2, 3, 64, 64)
    kp = torch.rand(2, KEYPOINT_DIM) - 0.5
    with torch.no_grad():
        pooled = model.pooled(x)
        want = F.leaky_relu(model.id_fc(torch.cat([pooled, kp], 1)))
        assert torch.allclose(model.embed(x, kp), want, atol=1e-6)
        assert not torch.allclose(model.embed(x, kp), model.embed(x, kp + 0.1))
    with pytest.raises(ValueError, match="keypoint"):
        model.embed(x)
    plain = ReIDNet(RGB, num_ids=4).eval()
    assert plain.id_fc.in_features == 1024
    with torch.no_grad():
        assert torch.equal(plain.embed(x, kp), plain.embed(x, kp + 0.1))


@pytest.mark.parametrize("heads", [(), ("color",), ("type",), ("color", "type"), ("orientation",),
                                   ("domain",), ("color", "type", "orientation", "domain")])
def test_each_head_on_off(heads):
    cfg = replace(RGB, **{h: True for h in heads}, orientation_bins=8)
    model = ReIDNet(cfg, num_ids=7, num_colors=12, num_types=11).eval()
    with torch.no_grad():
        out = model(torch.randn(3, 3, 32, 32))
    assert set(out) == {"embedding", "id"} | set(heads)
    sizes = {"id": 7, "color": 12, "type": 11, "orientation": 8, "domain": 2}
    for name, logits in out.items():
        if name != "embedding":
            assert logits.shape == (3, sizes[name])
    for h in ("color", "type", "orientation", "domain"):
        assert (getattr(model, f"{h}_classifier") is not None) == (h in heads)
    no_id = ReIDNet(replace(cfg, id_head=False), num_ids=7)
    assert no_id.id_classifier is None and "id" not in no_id(torch.randn(2, 3, 32, 32))


def test_embed_skips_classifiers():
    model = ReIDNet(replace(RGB, color=True, type=True), num_ids=3).eval()
    x = torch.randn(2, 3, 32, 32)

    def boom(*_):
        raise AssertionError("a classifier ran")
    with torch.no_grad():
        full = model(x)["embedding"]
        for name in ("id_classifier", "color_classifier", "type_classifier", "color_fc", "type_fc"):
            getattr(model, name).register_forward_hook(boom)
        assert torch.allclose(model.embed(x), full)
        assert model.embed(x).shape == (2, 1024)


def test_gradient_reversal_sign_and_scale():
    x = torch.randn(4, 5, requires_grad=True)
    w = torch.randn(4, 5)
    (grad_reverse(x, 0.7) * w).sum().backward()
    assert torch.allclose(x.grad, -0.7 * w)
    assert grad_reverse(x, 0.7).detach().equal(x.detach())
    assert grl_ramp(0.0) == 0.0
    assert grl_ramp(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    assert grl_ramp(0.5) == pytest.approx(2 / (1 + math.exp(-5)) - 1)


def test_domain_head_reverses_gradient_into_backbone():
    torch.manual_seed(0)
    cfg = replace(RGB, domain=True, grl="constant", grl_coefficient=0.5)
    model = ReIDNet(cfg, num_ids=3)
    x = torch.randn(2, 3, 32, 32)
    pooled = model.pooled(x).detach().requires_grad_(True)
    f = model._head_input(pooled, None)
    # domain loss through the head: gradient at the feature is -0.5 x the plain gradient
    logits = model.domain_classifier(F.leaky_relu(model.domain_fc(grad_reverse(f, model.grl_coefficient))))
    g_rev, = torch.autograd.grad(logits[:, 0].sum(), pooled)
    logits = model.domain_classifier(F.leaky_relu(model.domain_fc(f)))
    g_plain, = torch.autograd.grad(logits[:, 0].sum(), pooled)
    assert torch.allclose(g_rev, -0.5 * g_plain, atol=1e-7)
    ramp = ReIDNet(replace(cfg, grl="ramp", grl_coefficient=1.0), num_ids=3)
    assert ramp.grl_coefficient == 0.0
    assert ramp.set_progress(1.0) == pytest.approx(grl_ramp(1.0))


def test_resnet50_strdan_feature_is_pooled_2048():
    cfg = ModelConfig(backbone="resnet50", heatmaps=True, segments=False, keypoints=False, id_fc=0, attr_fc=0,
                      embedding="pool", color=True, type=True, orientation=True, domain=True)
    model = ReIDNet(cfg, num_ids=6, num_colors=12, num_types=11).eval()
    assert model.backbone.conv1.in_channels == 39
    with torch.no_grad():
        x = torch.randn(2, 39, 64, 32)
        out = model(x)
        assert out["embedding"].shape == (2, 2048) and model.embed(x).shape == (2, 2048)
        assert torch.allclose(model.embed(x), out["embedding"])
    assert model.id_classifier.in_features == 2048 and model.color_classifier.in_features == 2048


def _official_state(channels: int, keypoints: bool, multitask: bool, num_ids: int = 9) -> dict:
    """A state dict in the official PAMTRI MultiTaskNet layout (names as its DenseNet121 class)."""
    torch.manual_seed(1)
    base = torchvision.models.densenet121(weights=None).features
    base.conv0 = torch.nn.Conv2d(channels, 64, 7, 2, 3, bias=False)
    state = {f"base.{k}": v for k, v in base.state_dict().items()}
    d = 1024 + (108 if keypoints else 0)

    def lin(name, i, o):
        layer = torch.nn.Linear(i, o)
        state[f"{name}.weight"], state[f"{name}.bias"] = layer.weight.detach(), layer.bias.detach()
    if multitask:
        lin("fc_vid", d, 1024), lin("fc_vcolor", d, 512), lin("fc_vtype", d, 512)
        lin("classifier_vid", 1024, num_ids), lin("classifier_vcolor", 512, 10), lin("classifier_vtype", 512, 9)
    elif keypoints:
        lin("fc", d, 1024), lin("classifier_vid", 1024, num_ids)
    else:
        lin("classifier_vid", 1024, num_ids)
    return state


def _official_forward(state: dict, x, p, keypoints: bool):
    """The official forward pass written with the official names: base -> avg pool -> cat -> Leaky ReLU FC."""
    base = torchvision.models.densenet121(weights=None).features
    base.conv0 = torch.nn.Conv2d(x.shape[1], 64, 7, 2, 3, bias=False)
    base.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("base.")})
    base.eval()
    f = F.avg_pool2d(base(x), base(x).shape[2:]).flatten(1)
    if keypoints:
        f = torch.cat([f, p], 1)
    fc = "fc_vid" if "fc_vid.weight" in state else "fc"
    if f"{fc}.weight" not in state:
        return f
    return F.leaky_relu(F.linear(f, state[f"{fc}.weight"], state[f"{fc}.bias"]))


@pytest.mark.parametrize("channels,keypoints,multitask", [(52, True, True), (39, True, False), (3, False, False),
                                                          (16, False, True)])
def test_official_pamtri_checkpoint_layout(tmp_path, channels, keypoints, multitask):
    state = _official_state(channels, keypoints, multitask)
    path = tmp_path / "model_best.pth.tar"
    # torchreid's save_checkpoint: {'state_dict', 'rank1', 'epoch'}, DataParallel 'module.' prefix
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "rank1": 0.9, "epoch": 60}, path)
    cfg, num_ids, num_colors, num_types = pamtri_layout(torch.load(path, weights_only=True))
    assert cfg.in_channels == channels and cfg.keypoints == keypoints and cfg.color == cfg.type == multitask
    assert num_ids == 9
    model = load_pamtri_checkpoint(path).eval()
    x = torch.randn(2, channels, 64, 64)
    p = torch.rand(2, 108) - 0.5
    with torch.no_grad():
        want = _official_forward(state, x, p, keypoints)
        assert torch.allclose(model.embed(x, p), want, atol=1e-5)
        out = model(x, p)
        assert torch.allclose(out["id"], F.linear(want, state["classifier_vid.weight"], state["classifier_vid.bias"]),
                              atol=1e-5)
    same, _ = load_reid(path)
    assert same.cfg == model.cfg


def test_wrong_weights_are_refused(tmp_path):
    path = tmp_path / "bad.pth"
    torch.save({"conv.weight": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError):
        load_reid(path)
    with pytest.raises(CheckpointError, match="ImageNet"):
        build_model(replace(RGB, pretrained=str(path)), num_ids=2)


@pytest.mark.parametrize("heat,seg,groups", [(True, False, [3, 36]), (True, True, [3, 36, 13]), (False, True, [3, 13])])
def test_split_first_conv_gives_the_same_embedding(heat, seg, groups):
    """The INT8 export's stem: one convolution per input group, summed, equals the widened convolution."""
    from pamtri.reid.model import SplitInputConv, split_first_conv
    torch.manual_seed(0)
    cfg = ModelConfig(heatmaps=heat, segments=seg, keypoints=True)
    model = build_model(cfg, num_ids=5).eval()
    x, kv = torch.randn(2, cfg.in_channels, 32, 32), torch.rand(2, KEYPOINT_DIM) - 0.5
    with torch.no_grad():
        want = model.embed(x, kv)
        split = split_first_conv(model)
        got = split.embed(x, kv)
    stem = split.backbone.get_submodule(split.first_conv)
    assert isinstance(stem, SplitInputConv) and stem.groups == groups
    assert [c.in_channels for c in stem.convs] == groups and stem.convs[0].bias is None  # DenseNet's conv0: no bias
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_split_input_conv_keeps_one_bias_and_refuses_a_wrong_split():
    from pamtri.reid.model import SplitInputConv
    conv = torch.nn.Conv2d(5, 4, 3, padding=1, bias=True)
    split = SplitInputConv(conv, [2, 3])
    assert split.convs[0].bias is not None and split.convs[1].bias is None
    x = torch.randn(1, 5, 6, 6)
    torch.testing.assert_close(split(x), conv(x), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="do not split"):
        SplitInputConv(conv, [2, 2])


def test_split_first_conv_leaves_an_rgb_model_alone():
    from pamtri.reid.model import split_first_conv
    model = build_model(RGB, num_ids=5)
    conv = model.backbone.get_submodule(model.first_conv)
    assert split_first_conv(model).backbone.get_submodule(model.first_conv) is conv
