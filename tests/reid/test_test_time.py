"""Test-time tricks: flip-feature averaging, alpha query expansion, CityFlow track averaging."""
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from pamtri.common.errors import ConfigError
from pamtri.data.records import Record
from pamtri.pose.keypoints import FLIP_INDEX, SEGMENT_FLIP
from pamtri.reid.config import EvalConfig, ModelConfig
from pamtri.reid.evaluate import Features, extract_features, metrics_and_distances
from pamtri.reid.model import ReIDNet
from pamtri.reid.test_time import alpha_query_expansion, mirror_inputs, track_average

POSE = ModelConfig(backbone="timm/resnet18", heatmaps=True, segments=True, keypoints=True, color=False, type=False)


class _Batches(Dataset):
    def __init__(self, n: int, channels: int):
        g = torch.Generator().manual_seed(0)
        self.images = torch.randn(n, channels, 32, 32, generator=g)
        self.kps = torch.rand(n, 108, generator=g) - 0.5
        self.records = [Record(path=f"img{i}.jpg", vehicle_id=i % 2, camera_id=i % 3) for i in range(n)]

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"image": self.images[i], "keypoints": self.kps[i], "pid": i % 2, "camid": i % 3, "color": -1,
                "type": -1, "index": i}


def test_mirror_swaps_pose_channels_and_keypoints():
    x = torch.randn(2, POSE.in_channels, 8, 8)
    kp = (torch.rand(2, 108) - 0.5) * 0.7  # |v_x| <= 0.35: no clipping after -v_x - 1/8
    mx, mk = mirror_inputs(x, kp, POSE)
    assert torch.equal(mx[:, :3], x[:, :3].flip(-1))
    assert torch.equal(mx[:, 3 + 5], x[:, 3 + FLIP_INDEX[5]].flip(-1))
    assert torch.equal(mx[:, 3 + 36 + 2], x[:, 3 + 36 + SEGMENT_FLIP[2]].flip(-1))
    k = kp.reshape(2, 36, 3)
    m = mk.reshape(2, 36, 3)
    assert torch.allclose(m[:, 0, 0], -k[:, FLIP_INDEX[0], 0] - 1 / 8)
    assert torch.equal(m[:, 0, 1:], k[:, FLIP_INDEX[0], 1:])
    back_x, back_k = mirror_inputs(mx, mk, POSE)
    assert torch.equal(back_x, x) and torch.allclose(back_k, kp, atol=1e-6)


def test_flip_feature_is_the_mean_of_both_passes():
    model = ReIDNet(POSE, num_ids=2).eval()
    ds = _Batches(5, POSE.in_channels)
    loader = DataLoader(ds, batch_size=2)
    plain = extract_features(model, loader, torch.device("cpu")).features
    flipped = extract_features(model, loader, torch.device("cpu"), flip=True).features
    with torch.no_grad():
        mirror = model.embed(*mirror_inputs(ds.images, ds.kps, POSE))
    assert torch.allclose(plain, model.embed(ds.images, ds.kps).detach(), atol=1e-5)
    assert torch.allclose(flipped, (plain + mirror) / 2, atol=1e-5)
    assert not torch.allclose(flipped, plain, atol=1e-3)


def test_alpha_query_expansion_by_hand():
    q = torch.tensor([[1.0, 0.0]])
    g = torch.tensor([[0.0, 2.0], [2.0, 2.0]])
    nq, ng = alpha_query_expansion(q, g, k=2, alpha=2.0)
    c = 0.5 ** 0.5  # cos 45 degrees
    # q: itself (sim 1) and g1 (sim c): mean of 1 * q and c^2 * g1
    assert torch.allclose(nq[0], (q[0] + c ** 2 * g[1]) / 2)
    # g0: itself and g1 (sim c); g1: itself and, tied at sim c, q or g0 (topk takes the first, q)
    assert torch.allclose(ng[0], (g[0] + c ** 2 * g[1]) / 2)
    assert torch.allclose(ng[1], (g[1] + c ** 2 * q[0]) / 2)
    same_q, same_g = alpha_query_expansion(q, g, k=1, alpha=3.0)
    assert torch.allclose(same_q, q) and torch.allclose(same_g, g)  # k = 1: each feature only itself


def test_track_average():
    f = torch.tensor([[1.0], [3.0], [10.0], [7.0]])
    out = track_average(f, ["a.jpg", "b.jpg", "c.jpg", "d.jpg"], [["a.jpg", "b.jpg", "missing.jpg"], ["c.jpg"]])
    assert out.flatten().tolist() == [2.0, 2.0, 10.0, 7.0]


def _features(values, pids, names):
    n = len(pids)
    return Features(torch.tensor(values, dtype=torch.float32), np.array(pids), np.zeros(n, np.int64) if names[0][0]
                    == "q" else np.ones(n, np.int64), np.full(n, -1), np.full(n, -1), names=names)


def test_evaluation_averages_gallery_tracks_from_the_track_file(tmp_path):
    qf = _features([[1.0, 0.0]], [0], ["q0.jpg"])
    # gallery: g2 (id 0) at 0.2 from the query, g1 (id 1) at 0.4, g0 (id 0) at 0.6; g0 and g2 form one track
    gf = _features([[1.0, 0.6], [1.0, 0.4], [1.0, -0.2]], [0, 1, 0], ["g0.jpg", "g1.jpg", "g2.jpg"])
    cfg = EvalConfig(metric="euclidean")
    plain, _ = metrics_and_distances(qf, gf, cfg)
    (tmp_path / "test_track.txt").write_text("g0.jpg g2.jpg\ng1.jpg\n")
    tracked, dist = metrics_and_distances(qf, gf, replace(cfg, track_file=str(tmp_path / "test_track.txt")))
    assert plain["mAP"] < 1.0 and tracked["mAP"] == 1.0
    assert dist[0, 0] == pytest.approx(0.2, abs=1e-5) and dist[0, 2] == pytest.approx(0.2, abs=1e-5)


def test_query_expansion_config_checks():
    with pytest.raises(ConfigError, match="eval.qe_k"):
        EvalConfig(qe_k=0).validate()


def test_evaluation_expands_queries_before_the_distances():
    qf = _features([[1.0, 0.0]], [0], ["q0.jpg"])
    gf = _features([[1.0, 0.6], [1.0, 0.4], [1.0, -0.2]], [0, 1, 0], ["g0.jpg", "g1.jpg", "g2.jpg"])
    cfg = EvalConfig(metric="cosine", query_expansion=True, qe_k=2, qe_alpha=1.0)
    _, dist = metrics_and_distances(qf, gf, cfg)
    q, g = alpha_query_expansion(qf.features, gf.features, 2, 1.0)
    plain = replace(cfg, query_expansion=False)
    _, want = metrics_and_distances(Features(q, qf.pids, qf.camids, qf.colors, qf.types),
                                Features(g, gf.pids, gf.camids, gf.colors, gf.types), plain)
    assert np.allclose(dist, want) and not np.allclose(dist, metrics_and_distances(qf, gf, plain)[1])
