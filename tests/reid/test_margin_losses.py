"""Center loss, CosFace / ArcFace / Circle softmax against their formulas, cosine schedule, backbone freeze."""
import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from pamtri.common.errors import ConfigError
from pamtri.common.schedule import OptimConfig, lr_factor
from pamtri.reid.config import LossConfig, ModelConfig, ReIDConfig
from pamtri.reid.losses import center_loss, margin_logits, reid_losses
from pamtri.reid.model import CosineClassifier, ReIDNet

COS = torch.tensor([[0.8, 0.1, -0.3], [0.2, 0.5, 0.4]])
LABELS = torch.tensor([0, 2])
S, M = 30.0, 0.25


def _by_hand(kind: str) -> torch.Tensor:
    out = torch.empty_like(COS)
    for i in range(2):
        for j in range(3):
            c = float(COS[i, j])
            if j == int(LABELS[i]):
                value = {"cosface": c - M, "arcface": math.cos(math.acos(c) + M),
                         "circle": max(1 + M - c, 0) * (c - (1 - M))}[kind]
            else:
                value = max(c + M, 0) * (c - M) if kind == "circle" else c
            out[i, j] = S * value
    return out


@pytest.mark.parametrize("kind", ["cosface", "arcface", "circle"])
def test_margin_logits_match_their_formulas(kind):
    assert torch.allclose(margin_logits(COS, LABELS, kind, S, M), _by_hand(kind), atol=1e-4)


def test_margins_make_the_true_class_harder():
    plain = F.cross_entropy(S * COS, LABELS)
    for kind in ("cosface", "arcface"):
        assert F.cross_entropy(margin_logits(COS, LABELS, kind, S, M), LABELS) > plain


def test_circle_weights_are_not_differentiated():
    cos = COS.clone().requires_grad_(True)
    margin_logits(cos, LABELS, "circle", S, M)[0, 0].backward()
    alpha_p = 1 + M - 0.8
    assert torch.isclose(cos.grad[0, 0], torch.tensor(S * alpha_p))


def test_center_loss_formula_and_unlabelled_samples():
    f = torch.tensor([[1.0, 0.0], [0.0, 2.0], [5.0, 5.0]])
    c = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    labels = torch.tensor([0, 1, -1])
    assert torch.isclose(center_loss(f, labels, c), torch.tensor((1.0 + 2.0) / 2))
    assert center_loss(f[2:], labels[2:], c) == 0


def test_cosine_classifier_and_the_loss_wiring():
    cfg = ModelConfig(heatmaps=False, keypoints=False, color=False, type=False, backbone="timm/resnet18",
                      neck="bnneck", id_fc=0, classifier="cosine", centers=True)
    model = ReIDNet(cfg, num_ids=2)
    assert isinstance(model.id_classifier, CosineClassifier)
    out = model(torch.randn(4, 3, 32, 32))
    assert out["id"].abs().max() <= 1 + 1e-6 and out["centers"].shape == (2, 512)
    batch = {k: torch.full((4,), -1) for k in ("color", "type", "orientation")}
    batch.update(pid=torch.tensor([0, 0, 1, 1]), domain=torch.zeros(4, dtype=torch.long))
    loss_cfg = LossConfig(id_loss="circle", scale=S, id_margin=M, center=5e-4)
    losses = reid_losses(out, batch, loss_cfg)
    want_id = F.cross_entropy(margin_logits(out["id"], batch["pid"], "circle", S, M), batch["pid"])
    assert torch.isclose(losses["id"], want_id)
    assert torch.isclose(losses["center"], center_loss(out["triplet_feature"], batch["pid"], model.centers))
    assert torch.isclose(losses["total"], losses["triplet"] + losses["id"] + 5e-4 * losses["center"])
    losses["total"].backward()
    assert model.centers.grad.abs().sum() > 0


@pytest.mark.parametrize("sets,message", [
    ({"loss.id_loss": "arcface"}, "need classifier: cosine"),
    ({"model.classifier": "cosine"}, "softmax needs linear"),
    ({"loss.center": 5e-4}, "set both or neither"),
    ({"model.centers": True}, "set both or neither"),
])
def test_loss_and_model_must_agree(sets, message):
    cfg = ReIDConfig()
    for key, value in sets.items():
        group, name = key.split(".")
        setattr(cfg, group, replace(getattr(cfg, group), **{name: value}))
    with pytest.raises(ConfigError, match=message):
        cfg.validate()


def test_cosine_schedule_with_warmup():
    cfg = OptimConfig(schedule="cosine", epochs=12, warmup_epochs=2, warmup_factor=0.1)
    assert lr_factor(0, cfg) == pytest.approx(0.1)
    assert lr_factor(1, cfg) == pytest.approx(0.55)
    assert lr_factor(2, cfg) == pytest.approx(1.0)
    assert lr_factor(7, cfg) == pytest.approx(0.5)
    assert lr_factor(11, cfg) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.9)))
    assert lr_factor(5, replace(cfg, milestones=[3])) == lr_factor(5, cfg)  # milestones belong to the step schedule


def test_frozen_backbone_gets_no_gradient_and_keeps_its_statistics():
    cfg = ModelConfig(heatmaps=False, keypoints=False, color=False, type=False, backbone="timm/resnet18")
    model = ReIDNet(cfg, num_ids=3).train()
    model.backbone_frozen = True
    mean = model.backbone.bn1.running_mean.clone()
    model(torch.randn(4, 3, 32, 32))["id"].sum().backward()
    assert model.backbone.conv1.weight.grad is None and model.id_classifier.weight.grad is not None
    assert torch.equal(model.backbone.bn1.running_mean, mean) and model.backbone.training
    model.backbone_frozen = False
    model(torch.randn(4, 3, 32, 32))["id"].sum().backward()
    assert model.backbone.conv1.weight.grad is not None
    assert not torch.equal(model.backbone.bn1.running_mean, mean)


def test_sgd_with_momentum_nesterov_decay_and_the_bias_rate():
    from pamtri.common.schedule import build_optimizer, build_scheduler
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    cfg = OptimConfig(name="sgd", lr=0.1, momentum=0.8, nesterov=False, weight_decay=1e-3, bias_lr_factor=2.0,
                      milestones=[1], gamma=0.5)
    opt = build_optimizer(model, cfg)
    assert isinstance(opt, torch.optim.SGD)
    weights, biases = opt.param_groups
    assert [id(p) for p in biases["params"]] == [id(model[0].bias), id(model[1].bias)]
    assert (weights["lr"], biases["lr"]) == (0.1, pytest.approx(0.2))
    assert (weights["momentum"], weights["nesterov"], weights["weight_decay"]) == (0.8, False, 1e-3)
    sched = build_scheduler(opt, cfg)
    opt.step()
    sched.step()  # the schedule scales both groups
    assert (opt.param_groups[0]["lr"], opt.param_groups[1]["lr"]) == (pytest.approx(0.05), pytest.approx(0.1))
    plain = build_optimizer(model, OptimConfig(name="sgd"))  # the default: one group, Nesterov momentum 0.9
    group = plain.param_groups[0]
    assert len(plain.param_groups) == 1 and group["nesterov"] and group["momentum"] == 0.9
    with pytest.raises(ConfigError, match="optim.bias_lr_factor"):
        OptimConfig(bias_lr_factor=0).validate()
