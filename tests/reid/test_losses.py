"""Losses: batch-hard triplet, masked cross-entropy, PAMTRI and StRDAN totals."""
import math

import pytest
import torch

from pamtri.reid.config import LossConfig
from pamtri.reid.losses import masked_cross_entropy, reid_losses, triplet_batch_hard


def test_triplet_batch_hard_hand_worked():
    # 1-D features: ids 0,0,1,1 at 0, 1, 1.5, 4
    f = torch.tensor([[0.0], [1.0], [1.5], [4.0]])
    y = torch.tensor([0, 0, 1, 1])
    # anchor: (hardest positive, hardest negative): 0:(1, 1.5) 1:(1, 0.5) 2:(2.5, 0.5) 3:(2.5, 3)
    want = (max(0, 1 - 1.5 + 0.3) + max(0, 1 - 0.5 + 0.3) + max(0, 2.5 - 0.5 + 0.3) + max(0, 2.5 - 3 + 0.3)) / 4
    assert triplet_batch_hard(f, y, 0.3).item() == pytest.approx(want, abs=1e-5)
    soft = sum(math.log1p(math.exp(a - n)) for a, n in ((1, 1.5), (1, 0.5), (2.5, 0.5), (2.5, 3))) / 4
    assert triplet_batch_hard(f, y, soft_margin=True).item() == pytest.approx(soft, abs=1e-5)


def test_triplet_skips_anchors_without_positive():
    f = torch.tensor([[0.0], [1.0], [5.0]])
    y = torch.tensor([0, 0, 1])  # id 1 has no positive: only anchors 0 and 1 count
    want = (max(0, 1 - 5 + 0.3) + max(0, 1 - 4 + 0.3)) / 2
    assert triplet_batch_hard(f, y, 0.3).item() == pytest.approx(want, abs=1e-5)
    lone = torch.tensor([0, 1, 2])
    assert triplet_batch_hard(f, lone).item() == 0.0


def test_masked_cross_entropy_values():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [5.0, 5.0, 5.0]])
    labels = torch.tensor([0, -1, 2])
    lse0 = math.log(math.exp(2) + 2)
    want = ((lse0 - 2.0) + math.log(3)) / 2  # the -1 row contributes nothing
    assert masked_cross_entropy(logits, labels).item() == pytest.approx(want, abs=1e-6)
    # label smoothing eps: (1 - eps) * nll + eps * mean_c(-log p_c)
    eps = 0.1
    nll0, uni0 = lse0 - 2.0, lse0 - 2.0 / 3
    want_s = ((1 - eps) * nll0 + eps * uni0 + math.log(3)) / 2
    assert masked_cross_entropy(logits, labels, smoothing=eps).item() == pytest.approx(want_s, abs=1e-6)
    mask = torch.tensor([True, True, False])
    assert masked_cross_entropy(logits, labels, mask=mask).item() == pytest.approx(lse0 - 2.0, abs=1e-6)


def _heads(seed=0):
    torch.manual_seed(seed)
    feat = torch.randn(8, 16, requires_grad=True)
    heads = {n: torch.nn.Linear(16, c) for n, c in (("id", 4), ("color", 10), ("type", 9), ("orientation", 6),
                                                    ("domain", 2))}
    return feat, heads


def _batch(labelled: bool):
    pid = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    attr = torch.tensor([1, 2, 3, 4, 5, 6, 7, 8]) if labelled else torch.full((8,), -1)
    return {"pid": pid, "color": attr, "type": attr.clamp(max=8), "orientation": attr.clamp(max=5),
            "domain": torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])}


def test_unlabelled_batch_gives_exactly_zero_attribute_loss_and_gradient():
    feat, heads = _heads()
    out = {"embedding": feat, **{n: h(feat) for n, h in heads.items()}}
    losses = reid_losses(out, _batch(labelled=False), LossConfig())
    for name in ("color", "type", "orientation"):
        assert losses[name].item() == 0.0
    losses["total"].backward()
    for name in ("color", "type", "orientation"):
        assert torch.count_nonzero(heads[name].weight.grad) == 0
        assert torch.count_nonzero(heads[name].bias.grad) == 0
    assert torch.count_nonzero(heads["id"].weight.grad) > 0


def test_pamtri_total_is_the_weighted_sum():
    feat, heads = _heads()
    out = {"embedding": feat, **{n: heads[n](feat) for n in ("id", "color", "type")}}
    losses = reid_losses(out, _batch(labelled=True), LossConfig())
    want = losses["triplet"] + losses["id"] + 0.125 * losses["color"] + 0.125 * losses["type"]
    assert losses["total"].item() == pytest.approx(want.item(), rel=1e-6)
    xent = reid_losses(out, _batch(True), LossConfig(triplet=0.0))
    assert "triplet" not in xent and xent["total"].item() == pytest.approx(
        (losses["id"] + 0.125 * losses["color"] + 0.125 * losses["type"]).item(), rel=1e-6)


def test_strdan_total_joint_plus_weighted_disjoint():
    feat, heads = _heads()
    out = {"embedding": feat, **{n: h(feat) for n, h in heads.items()}}
    cfg = LossConfig(objective="strdan", color=1.0, type=1.0, orientation=1.0, disjoint_weight=0.5)
    losses = reid_losses(out, _batch(True), cfg)
    joint = losses["id"] + losses["domain"] + losses["triplet"]
    disjoint = losses["color"] + losses["type"] + losses["orientation"]
    assert losses["joint"].item() == pytest.approx(joint.item(), rel=1e-6)
    assert losses["disjoint"].item() == pytest.approx(disjoint.item(), rel=1e-6)
    assert losses["total"].item() == pytest.approx((joint + 0.5 * disjoint).item(), rel=1e-6)
    # the authors' option: ID cross-entropy on real images (domain 0) only
    real_only = reid_losses(out, _batch(True), LossConfig(objective="strdan", id_real_only=True))
    want = masked_cross_entropy(out["id"][:4], _batch(True)["pid"][:4])
    assert real_only["id"].item() == pytest.approx(want.item(), rel=1e-6)


@pytest.mark.parametrize("objective", ["pamtri", "strdan"])
def test_attribute_losses_synthetic_only_under_strdan(objective):
    """StRDAN's disjoint losses see synthetic images only, even when real images carry labels (VeRi does)."""
    feat, heads = _heads()
    out = {"embedding": feat, **{n: h(feat) for n, h in heads.items()}}
    batch = _batch(labelled=True)  # 4 real (domain 0) + 4 synthetic (domain 1), all with labels
    losses = reid_losses(out, batch, LossConfig(objective=objective, color=1.0, type=1.0, orientation=1.0))
    rows = slice(4, 8) if objective == "strdan" else slice(0, 8)
    for name in ("color", "type", "orientation"):
        want = torch.nn.functional.cross_entropy(out[name][rows], batch[name][rows])
        assert losses[name].item() == pytest.approx(want.item(), rel=1e-6), name
    everything = torch.nn.functional.cross_entropy(out["color"], batch["color"])
    assert (losses["color"].item() == pytest.approx(everything.item(), rel=1e-6)) == (objective == "pamtri")
    if objective == "strdan":  # and no gradient reaches the attribute heads from the real half
        feat.grad = None
        losses["disjoint"].backward()
        assert torch.count_nonzero(feat.grad[:4]) == 0 and torch.count_nonzero(feat.grad[4:]) > 0
