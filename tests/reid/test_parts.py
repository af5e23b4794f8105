"""Part features and the co-visible distance (issue 25): masks, pooling, visibility, losses, evaluation."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from pamtri.common.config import load_config
from pamtri.common.errors import ConfigError
from pamtri.pose.keypoints import SEGMENTS
from pamtri.reid.config import LossConfig, ModelConfig, ReIDConfig
from pamtri.reid.distance import covisible_distance, part_scale, split_embedding
from pamtri.reid.losses import covisible_part_distance, reid_losses, triplet_from_distances
from pamtri.reid.metrics import cross_view_faces, metrics_from_features
from pamtri.reid.model import ReIDNet
from pamtri.reid.parts import GROUPS, part_masks, part_pool

FRONT_FACE = 12  # SEGMENTS[12]: front face (16, 17, 35, 34)


def keypoint_vector(corners: dict[int, tuple[float, float]], confident: set[int] | None = None) -> torch.Tensor:
    """(1, 108) vector: the given keypoints at (u, v) in [0, 1] with confidence 1, the others at 0 confidence."""
    kp = torch.zeros(36, 3)
    kp[:, 2] = -0.5
    for k, (u, v) in corners.items():
        kp[k] = torch.tensor([u - 0.5, v - 0.5, 0.5 if confident is None or k in confident else -0.5])
    return kp.reshape(1, 108)


def front_face_rectangle(u0, v0, u1, v1) -> dict[int, tuple[float, float]]:
    a, b, c, d = SEGMENTS[FRONT_FACE]  # its quadrilateral, in drawing order
    return {a: (u0, v0), b: (u0, v1), c: (u1, v1), d: (u1, v0)}


def test_front_face_mask_is_the_rectangle_it_covers():
    # the left half of a 4 x 4 grid, rows 1-2 -> cells (1, 0), (1, 1), (2, 0), (2, 1) fully, nothing else
    masks, vis = part_masks(keypoint_vector(front_face_rectangle(0.0, 0.25, 0.5, 0.75)), (4, 4), "segments")
    want = torch.zeros(4, 4)
    want[1:3, 0:2] = 1
    assert torch.allclose(masks[0, FRONT_FACE], want)
    assert masks[0, :FRONT_FACE].sum() == 0  # the other segments have no confident corners
    assert vis[0, FRONT_FACE] == pytest.approx(4 / 16)  # area x confidence 1 x gate 1 (view: front)


def test_half_covered_cells_get_half_and_a_low_confidence_corner_hides_the_part():
    corners = front_face_rectangle(0.0, 0.0, 0.375, 0.25)  # 1.5 cells wide, 1 row high on 4 x 4
    masks, _ = part_masks(keypoint_vector(corners), (4, 4), "segments")
    assert masks[0, FRONT_FACE, 0].tolist() == pytest.approx([1.0, 0.5, 0.0, 0.0])
    hidden = keypoint_vector(corners, confident=set(list(corners)[:3]))
    masks, vis = part_masks(hidden, (4, 4), "segments")
    assert masks[0, FRONT_FACE].sum() == 0 and vis[0, FRONT_FACE] == 0


def test_groups_are_unions_of_their_segments():
    kp = torch.rand(3, 108) - 0.5
    kp.view(3, 36, 3)[..., 2] = 0.5  # every keypoint confident
    seg, _ = part_masks(kp, (6, 6), "segments")
    grp, vis = part_masks(kp, (6, 6), "groups")
    assert grp.shape == (3, 5, 6, 6) and vis.shape == (3, 5)
    for g, members in enumerate(GROUPS):
        # a union covers at least each member and at most their sum
        assert (grp[:, g] >= seg[:, list(members)].amax(1) - 1e-6).all()
        assert (grp[:, g] <= seg[:, list(members)].sum(1) + 1e-6).all()


def test_view_gate_scales_faces_the_view_does_not_name():
    corners = front_face_rectangle(0.0, 0.25, 0.5, 0.75)
    kp = keypoint_vector(corners)
    kp.view(36, 3)[10, 2] = 0.5  # one rear corner confident: the rear face's mean confidence stays below 0.5
    _, open_vis = part_masks(kp, (4, 4), "groups", view_gate=1.0)
    _, gated = part_masks(kp, (4, 4), "groups", view_gate=0.25)
    assert gated[0, 0] == open_vis[0, 0]  # front: named by the view (front)
    assert gated[0, 4] == open_vis[0, 4]  # top: no face, never gated


def test_part_pool_is_the_hand_computed_mask_average():
    fmap = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    masks = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]], [[0.5, 0.5], [0.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]]]] * 2)
    pooled = part_pool(fmap, masks)
    x = fmap.flatten(2)  # (B, C, 4)
    assert torch.allclose(pooled[:, 0], x[:, :, 0])
    assert torch.allclose(pooled[:, 1], (0.5 * x[:, :, 0] + 0.5 * x[:, :, 1] + x[:, :, 3]) / 2.0)
    assert torch.equal(pooled[:, 2], torch.zeros(2, 3))  # empty mask -> zero feature


def reference_covisible(qg, gg, qp, gp, qv, gv, weight):
    """The formula of docs/reid.md, one pair at a time, Euclidean."""
    out = np.zeros((len(qg), len(gg)))
    for i in range(len(qg)):
        for j in range(len(gg)):
            w = qv[i] * gv[j]
            part = sum(w[k] * np.linalg.norm(qp[i, k] - gp[j, k]) for k in range(len(w)))
            out[i, j] = np.linalg.norm(qg[i] - gg[j]) + (weight * part / w.sum() if w.sum() > 0 else 0.0)
    return out


def test_covisible_distance_follows_its_formula():
    rng = np.random.default_rng(0)
    qg, gg = rng.normal(size=(4, 6)), rng.normal(size=(5, 6))
    qp, gp = rng.normal(size=(4, 3, 2)), rng.normal(size=(5, 3, 2))
    qv, gv = rng.random((4, 3)), rng.random((5, 3))
    qv[0] = [1, 0, 0]
    gv[0] = [0, 1, 1]  # query 0 and gallery 0 share no part: global distance only
    got = covisible_distance((qg, qp, qv), (gg, gp, gv), "euclidean", 0.7).numpy()
    np.testing.assert_allclose(got, reference_covisible(qg, gg, qp, gp, qv, gv, 0.7), rtol=1e-4, atol=1e-5)
    assert got[0, 0] == pytest.approx(np.linalg.norm(qg[0] - gg[0]), rel=1e-5)
    flat = np.concatenate([qg, qp.reshape(4, -1), qv], 1)
    for a, b in zip(split_embedding(flat, (6, 3, 2)), (qg, qp, qv)):
        np.testing.assert_array_equal(a, b)


def test_batch_covisible_distance_matches_the_evaluation_one():
    torch.manual_seed(0)
    parts, vis = torch.randn(6, 5, 4), torch.rand(6, 5)
    d, shared = covisible_part_distance(parts, vis)
    full = covisible_distance((torch.zeros(6, 1), parts, vis), (torch.zeros(6, 1), parts, vis), "euclidean", 1.0)
    assert shared.all()
    assert torch.allclose(d, full, atol=1e-4)


def test_view_aware_mining_picks_other_view_positives_and_same_view_negatives():
    labels = torch.tensor([0, 0, 0, 1, 1])
    views = torch.tensor([0, 0, 4, 0, 4])
    d = torch.tensor([[0.0, 5.0, 1.0, 3.0, 0.5],
                      [5.0, 0.0, 1.0, 1.0, 1.0],
                      [1.0, 1.0, 0.0, 1.0, 1.0],
                      [3.0, 1.0, 1.0, 0.0, 1.0],
                      [0.5, 1.0, 1.0, 1.0, 0.0]])
    # anchor 0, batch-hard: positive 5.0 (same view), negative 0.5 (other view) -> 4.5 + margin
    # view-aware: positive 1.0 (image 2, other view), negative 3.0 (image 3, same view) -> relu(1 - 3 + 0.3) = 0
    hard = triplet_from_distances(d, labels, 0.3)
    aware = triplet_from_distances(d, labels, 0.3, views=views)
    assert hard > aware
    only_anchor0 = torch.zeros(5, 5, dtype=torch.bool)
    only_anchor0[0] = True
    assert triplet_from_distances(d, labels, 0.3, views=views, usable_pairs=only_anchor0) == 0.0
    assert triplet_from_distances(d, labels, 0.3, usable_pairs=only_anchor0) == pytest.approx(5.0 - 0.5 + 0.3)


@pytest.mark.parametrize("backbone,neck,mode", [("densenet121", "fc", "groups"), ("resnet50", "bnneck", "segments"),
                                                ("timm/vit_tiny_patch16_224", "bnneck", "groups")])
def test_a_training_step_with_parts(backbone, neck, mode):
    cfg = ModelConfig(backbone=backbone, heatmaps=False, keypoints=False, color=False, type=False, parts=mode,
                      part_dim=8, neck=neck, id_fc=0 if neck == "bnneck" else 32, input_size=(64, 64))
    cfg.validate()
    torch.manual_seed(0)
    model = ReIDNet(cfg, num_ids=4)
    kp = torch.rand(8, 108) - 0.5
    kp.view(8, 36, 3)[..., 2] = 0.5
    batch = {"pid": torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]), "domain": torch.zeros(8, dtype=torch.long),
             "keypoints": kp, **{k: torch.full((8,), -1) for k in ("color", "type", "orientation")}}
    out = model(torch.randn(8, 3, 64, 64), kp)
    losses = reid_losses(out, batch, LossConfig(triplet_mining="view_aware"))
    assert {"part_triplet", "part_id"} <= set(losses) and torch.isfinite(losses["total"])
    losses["total"].backward()
    assert model.part_head.reduce.weight.grad.abs().sum() > 0
    model.eval()
    flat = model.embed(torch.randn(2, 3, 64, 64), kp[:2])
    g, p, v = split_embedding(flat, model.part_layout)
    assert p.shape == (2, model.num_parts, 8) and v.shape == (2, model.num_parts)


def test_cross_view_keeps_only_matches_that_share_no_face():
    # query 0 front (view 0); gallery: the same vehicle from the front_left (shares the front) and from the rear
    q, g = torch.tensor([[0.0, 0.0]]), torch.tensor([[0.1, 0.0], [0.2, 0.0], [0.3, 0.0]])
    faces = cross_view_faces([0], [1, 5, 4])
    full = metrics_from_features(q, g, [7], [7, 8, 7], [0], [1, 1, 1], threads=1)
    cross = metrics_from_features(q, g, [7], [7, 8, 7], [0], [1, 1, 1], threads=1, faces=faces)
    assert full["cmc"][0] == 1.0 and cross["cmc"][0] == 0.0  # the front_left match is not cross-view
    assert cross["mAP"] == pytest.approx(1 / 2)  # the rear match at rank 2 (after the other vehicle)


@pytest.mark.parametrize("name", ["rs_parts_synthetic", "bot_r50_parts_synthetic", "rs_mt_k_h_parts_synthetic",
                                  "bot_r50_k_h_parts_synthetic", "veri_bot_r50_parts", "veri_rs_mt_k_h_parts"])
def test_parts_configs_load(name):
    cfg = load_config(ReIDConfig, f"configs/reid/{name}.yaml")
    cfg.validate()
    assert cfg.model.parts in ("segments", "groups") and cfg.data.pose_source != "none"


def test_parts_refuse_a_config_without_pose():
    cfg = load_config(ReIDConfig, "configs/reid/rs_parts_synthetic.yaml")
    with pytest.raises(ConfigError, match="model.parts"):
        replace(cfg, data=replace(cfg.data, pose_source="none")).validate()


def test_part_scale_puts_the_part_term_on_the_global_scale():
    rng = np.random.default_rng(3)
    g, p, v = rng.normal(size=(9, 6)) * 10.0, rng.normal(size=(9, 3, 2)), rng.random((9, 3))
    scale = part_scale((g, p, v), "euclidean")
    glob = covisible_distance((g, p, v), (g, p, v), "euclidean", 0.0).numpy()
    part = covisible_distance((g * 0, p, v), (g * 0, p, v), "euclidean", 1.0).numpy()
    off = ~np.eye(9, dtype=bool)
    assert scale == pytest.approx(glob[off].mean() / part[off].mean(), rel=1e-4)
    assert part_scale((g, p, np.zeros((9, 3))), "euclidean") == 1.0  # no shared part: nothing to scale
