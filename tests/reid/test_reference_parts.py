"""The parts the reference recipes need, against the reference formulas on tiny tensors: fast-reid's non-local block
and its placement, TransReID's shift + patch shuffle, JPM's branches, loss weighting and test feature, the joint
camera x view SIE table, the triplet feature choice and drop-path."""
from dataclasses import replace

import pytest
import torch

from pamtri.reid.config import LossConfig, ModelConfig
from pamtri.reid.losses import reid_losses, triplet_batch_hard
from pamtri.reid.model import NonLocal, ReIDNet
from pamtri.reid.vit import shift_shuffle

VIT = ModelConfig(backbone="timm/vit_tiny_patch16_224", input_size=(64, 64), neck="bnneck", id_fc=0, heatmaps=False,
                  segments=False, keypoints=False, color=False, type=False)


def test_non_local_block_is_the_dot_product_formula():
    torch.manual_seed(0)
    nl = NonLocal(8).eval()
    x = torch.randn(2, 8, 3, 5)
    assert torch.equal(nl(x), x)  # W's BN starts at zero: the identity
    torch.nn.init.normal_(nl.W[1].weight)
    torch.nn.init.normal_(nl.W[1].bias)
    b, c, h, w = x.shape
    want = torch.empty_like(x)
    for i in range(b):  # y_p = sum_q (theta_p . phi_q) g_q / N, per image, by loops
        th, ph, g = (m(x[i:i + 1])[0].reshape(c // 2, -1) for m in (nl.theta, nl.phi, nl.g))
        y = torch.stack([sum((th[:, p] @ ph[:, q]) * g[:, q] for q in range(h * w)) / (h * w) for p in range(h * w)], 1)
        want[i] = x[i] + nl.W(y.reshape(1, c // 2, h, w))[0]
    torch.testing.assert_close(nl(x), want, atol=1e-5, rtol=1e-5)


def test_non_local_blocks_sit_where_fast_reid_puts_them_and_keep_imagenet_keys():
    cfg = ModelConfig(backbone="resnet50", neck="bnneck", id_fc=0, heatmaps=False, keypoints=False, color=False,
                      type=False, non_local=True, last_stride=1)
    cfg.validate()
    model = ReIDNet(cfg, num_ids=3)
    nl = sorted(k.split(".W.0.weight")[0] for k in model.state_dict() if k.endswith(".W.0.weight"))
    assert nl == ["backbone.layer2.nl.2", "backbone.layer2.nl.3", "backbone.layer3.nl.3", "backbone.layer3.nl.4",
                  "backbone.layer3.nl.5"]
    assert "backbone.layer2.3.conv1.weight" in model.state_dict()  # the blocks keep torchvision's names
    assert model.embed(torch.randn(2, 3, 64, 64)).shape == (2, 2048)


def _reference_shuffle(features, shift, group):
    """TransReID's shuffle_unit, as model/make_model.py writes it (begin = 1), restated with plain indexing."""
    x = torch.cat([features[:, shift:], features[:, 1:shift]], dim=1)
    if x.shape[1] % group:
        x = torch.cat([x, x[:, -2:-1]], dim=1)
    n = x.shape[1] // group
    return torch.stack([x[:, g * n + j] for j in range(n) for g in range(group)], dim=1)


@pytest.mark.parametrize("patches, shift, group", [(8, 2, 2), (441, 8, 2), (9, 5, 3), (7, 3, 2)])
def test_shift_and_patch_shuffle_follow_transreid(patches, shift, group):
    tokens = torch.arange(1 + patches, dtype=torch.float32)[None, :, None].repeat(2, 1, 3)
    got = shift_shuffle(tokens, shift, group)
    torch.testing.assert_close(got, _reference_shuffle(tokens, shift, group))
    if (patches, shift, group) == (8, 2, 2):  # patches 1..8 -> shifted 2..8, 1 -> runs (2 3 4 5), (6 7 8 1)
        assert got[0, :, 0].tolist() == [2, 6, 3, 7, 4, 8, 5, 1]


def test_jpm_gives_global_and_local_features_losses_and_the_concatenated_test_feature():
    cfg = replace(VIT, jpm=True, jpm_shift=5, jpm_groups=2, jpm_parts=4, embedding="before_bn")
    cfg.validate()
    torch.manual_seed(0)
    model = ReIDNet(cfg, num_ids=3)
    assert torch.equal(model.backbone.jpm_block.attn.qkv.weight, model.backbone.vit.blocks[-1].attn.qkv.weight)
    x, pid = torch.randn(4, 3, 64, 64), torch.tensor([0, 0, 1, 1])
    out = model(x)
    assert out["triplet_local"].shape == (4, 4, 192) and out["id_local"].shape == (4, 4, 3)
    f = out["triplet_feature"]
    torch.testing.assert_close(out["embedding"], torch.cat([f, *(out["triplet_local"] / 4)], dim=1))
    model.eval()
    assert model.embed(x).shape == (4, 5 * 192) and model.embedding_dim == 5 * 192
    model.train()
    loss = reid_losses(out, {"pid": pid, "domain": torch.zeros(4, dtype=torch.long)}, LossConfig())
    ce = torch.nn.functional.cross_entropy
    want_id = 0.5 * ce(out["id"], pid) + 0.5 * torch.stack([ce(z, pid) for z in out["id_local"]]).mean()
    want_tri = 0.5 * triplet_batch_hard(f, pid) + 0.5 * torch.stack(
        [triplet_batch_hard(t, pid) for t in out["triplet_local"]]).mean()
    torch.testing.assert_close(loss["id"], want_id)
    torch.testing.assert_close(loss["triplet"], want_tri)


def test_joint_sie_has_one_row_per_camera_view_pair():
    cfg = replace(VIT, sie_cameras=3, sie_views=4, orientation_bins=4, sie_mode="joint", sie_coefficient=2.0)
    cfg.validate()
    torch.manual_seed(0)
    vit = ReIDNet(cfg, num_ids=3).backbone
    assert vit.camera_embed is None and vit.view_embed is None and vit.sie_embed.shape == (12, 192)
    side = vit.side_embedding(torch.tensor([2, 1, -1, 0]), torch.tensor([3, 0, 2, -1]))
    torch.testing.assert_close(side[0], 2.0 * vit.sie_embed[2 * 4 + 3])
    torch.testing.assert_close(side[1], 2.0 * vit.sie_embed[1 * 4 + 0])
    assert side[2].abs().sum() == 0 and side[3].abs().sum() == 0  # unknown camera or view: nothing
    with pytest.raises(ValueError, match="model.sie_views"):
        vit.side_embedding(torch.tensor([0]), torch.tensor([4]))
    # the joint table can give (camera 0, view 0) + (1, 1) != (0, 1) + (1, 0), which no sum of two tables can
    a = vit.side_embedding(torch.tensor([0, 1]), torch.tensor([0, 1])).sum(0)
    b = vit.side_embedding(torch.tensor([0, 1]), torch.tensor([1, 0])).sum(0)
    assert not torch.allclose(a, b)


def test_triplet_feature_after_uses_the_bnneck_output():
    outputs = {"embedding": torch.randn(4, 6), "triplet_feature": torch.randn(4, 6), "bn_feature": torch.randn(4, 6)}
    batch = {"pid": torch.tensor([0, 0, 1, 1]), "domain": torch.zeros(4, dtype=torch.long)}
    before = reid_losses(outputs, batch, LossConfig(triplet_feature="before"))["triplet"]
    after = reid_losses(outputs, batch, LossConfig(triplet_feature="after"))["triplet"]
    assert before == triplet_batch_hard(outputs["triplet_feature"], batch["pid"])
    assert after == triplet_batch_hard(outputs["bn_feature"], batch["pid"])


def test_drop_path_is_linear_over_the_blocks():
    cfg = replace(VIT, drop_path=0.1)
    cfg.validate()
    blocks = ReIDNet(cfg, num_ids=3).backbone.vit.blocks
    rates = [getattr(b.drop_path1, "drop_prob", 0.0) for b in blocks]
    assert rates == pytest.approx([0.1 * i / (len(blocks) - 1) for i in range(len(blocks))])


def test_transreid_parts_train_and_evaluate_end_to_end(tmp_path):
    """JPM, joint SIE (views from the pose), drop-path, the timm cosine under the warm-up, biases at 2x lr: the CLI
    trains a tiny ViT with them and evaluates the 5 x D feature with dense re-ranking."""
    from pamtri.common.checkpoint import load_checkpoint
    from pamtri.pipeline.cli import main
    from tests.conftest import write_tiny_reid_config, write_tiny_synth_tree
    from tests.reid.test_vit_sie import VIT_SETS
    root = write_tiny_synth_tree(tmp_path / "data", ids=8)
    cfg = write_tiny_reid_config(tmp_path / "tiny.yaml", root, epochs=2, batches=2)
    sets = [*VIT_SETS, "model.sie_mode=joint", "model.jpm=true", "model.jpm_shift=2", "model.drop_path=0.1",
            "model.embedding=before_bn", "optim.schedule=cosine", "optim.warmup_prefix=false", "optim.warmup_epochs=1",
            "optim.epoch_offset=1", "optim.min_lr=0.00001", "optim.bias_lr_factor=2", "eval.rerank=true"]
    out = tmp_path / "run"
    overrides = [a for s in sets for a in ("--set", s)]
    assert main(["reid", "train", "--config", str(cfg), "--out", str(out), *overrides]) == 0
    best = load_checkpoint(out / "best.pt")
    assert best["model"]["backbone.sie_embed"].shape == (3 * 8, 192) and "jpm_bnnecks.3.weight" in best["model"]
    assert 0 <= best["metrics"]["mAP"] <= 1


def test_fast_reid_parts_train_end_to_end(tmp_path, monkeypatch):
    """Non-local blocks, the triplet on the BN output, the freeze counted in epochs, the delayed cosine."""
    from pamtri.common.checkpoint import load_checkpoint
    flags, feature_map = [], ReIDNet.feature_map

    def recording(self, images, *side):
        if self.training:
            flags.append(self.backbone_frozen)
        return feature_map(self, images, *side)
    monkeypatch.setattr(ReIDNet, "feature_map", recording)
    from pamtri.pipeline.cli import main
    from tests.conftest import write_tiny_reid_config, write_tiny_synth_tree
    root = write_tiny_synth_tree(tmp_path / "data", ids=8)
    cfg = write_tiny_reid_config(tmp_path / "tiny.yaml", root, epochs=2, batches=2)
    sets = ["model.backbone=resnet50", "model.neck=bnneck", "model.id_fc=0", "model.non_local=true",
            "model.freeze_epochs=1", "loss.triplet_feature=after", "optim.schedule=cosine", "optim.delay_epochs=1",
            "optim.warmup_prefix=false", "optim.weight_decay_bias=0", "eval.metric=cosine"]
    out = tmp_path / "run"
    overrides = [a for s in sets for a in ("--set", s)]
    assert main(["reid", "train", "--config", str(cfg), "--out", str(out), *overrides]) == 0
    assert "backbone.layer3.nl.5.W.1.weight" in load_checkpoint(out / "best.pt")["model"]
    assert flags == [True, True, False, False]  # 2 epochs of 2 steps, the first epoch frozen


def test_per_image_epochs_have_fast_reids_iteration_count_of_whole_p_by_k_batches():
    from pamtri.reid.samplers import IdentitySampler
    labels = [i // 7 for i in range(70)] + [100 + i for i in range(6)]  # 10 ids x 7 images, 6 singletons
    one_pass = IdentitySampler(labels, p=2, k=4)
    per_image = IdentitySampler(labels, p=2, k=4, per_image=True)
    assert len(one_pass) < 76 // 8 == len(per_image)  # a pass: 16 groups of 4 -> 8 batches; fast-reid: 76 // 8 = 9
    for batch in per_image:
        groups = [batch[j:j + 4] for j in range(0, 8, 4)]
        assert len({labels[i] for g in groups for i in g}) == 2
        assert all(len({labels[i] for i in g}) == 1 for g in groups)
    ranks = [IdentitySampler(labels, p=2, k=4, rank=r, world_size=2, per_image=True) for r in range(2)]
    assert [len(r) for r in ranks] == [76 // 16, 76 // 16]
