"""ReID metrics on hand-worked rankings, against a brute-force reference, and their error messages."""
import numpy as np
import pytest
import torch

from pamtri.common.errors import PamtriError
from pamtri.reid.distance import pairwise_distance
from pamtri.reid.metrics import NoMatchError, attribute_accuracy, metrics_from_distances

G_IDS = np.array([1, 2, 1, 3, 1, 2])
G_CAMS = np.array([1, 2, 2, 1, 3, 3])


def _hand():
    dist = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6],     # query id 1, camera 1
                     [0.9, 0.1, 0.8, 0.7, 0.6, 0.5],     # query id 2, camera 1
                     [0.3, 0.3, 0.3, 0.3, 0.3, 0.3]],    # query id 9: no match anywhere
                    np.float32)
    return dist, np.array([1, 2, 9]), np.array([1, 1, 1])


def test_hand_worked_ranking():
    dist, q_ids, q_cams = _hand()
    r = metrics_from_distances(dist, q_ids, G_IDS, q_cams, G_CAMS, max_rank=5, topk_map=3)
    # query 0: gallery 0 (same id, same camera) is removed; matches at ranks 2 and 4 of the rest
    #   AP = (1/2 + 2/4) / 2 = 0.5, first match rank 2, INP = 2/4, AP@3 = (1/2) / 2
    # query 1: matches at ranks 1 and 2: AP = 1, INP = 1, AP@3 = 1; query 2 has no match and is left out
    assert r["mAP"] == pytest.approx(0.75)
    assert r["cmc"].tolist() == pytest.approx([0.5, 1, 1, 1, 1])
    assert r["mINP"] == pytest.approx(0.75)
    assert r["mAP@3"] == pytest.approx(0.625)
    assert r["num_valid_queries"] == 2 and r["num_no_match"] == 1
    assert np.isnan(r["ap"][2]) and r["ap"][:2].tolist() == pytest.approx([0.5, 1.0])
    kept = metrics_from_distances(dist, q_ids, G_IDS, ignore_cameras=True, max_rank=5)
    # without the camera rule gallery 0 is query 0's rank-1 match: AP = (1 + 2/3 + 3/5) / 3
    assert kept["ap"][0] == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)


def test_ties_are_broken_by_gallery_order():
    dist = np.zeros((1, 4), np.float32)
    r = metrics_from_distances(dist, [1], [2, 1, 2, 1], [1], [1, 2, 2, 3])
    assert r["mAP"] == pytest.approx((1 / 2 + 2 / 4) / 2)  # a collapsed model is not rewarded


def _brute(dist, q_ids, g_ids, q_cams, g_cams, max_rank, k):
    aps, apk, cmc, inp = [], [], [], []
    for i in range(len(q_ids)):
        order = np.argsort(dist[i], kind="stable")
        keep = ~((g_ids[order] == q_ids[i]) & (g_cams[order] == q_cams[i]))
        hit = (g_ids[order] == q_ids[i])[keep]
        if not hit.any():
            continue
        pos = np.flatnonzero(hit) + 1
        prec = np.arange(1, len(pos) + 1) / pos
        aps.append(prec.mean())
        apk.append(prec[pos <= k].sum() / len(pos))
        cmc.append((np.arange(1, max_rank + 1) >= pos[0]).astype(float))
        inp.append(len(pos) / pos[-1])
    return np.mean(aps), np.mean(cmc, 0), np.mean(inp), np.mean(apk)


@pytest.mark.parametrize("quantise", [None, 0.05])
def test_matches_brute_force_reference(quantise):
    rng = np.random.default_rng(0)
    q, g = 57, 300
    dist = rng.random((q, g)).astype(np.float32)
    if quantise:
        dist = (np.round(dist / quantise) * quantise).astype(np.float32)  # many ties
    q_ids, g_ids = rng.integers(0, 30, q), rng.integers(0, 30, g)
    q_cams, g_cams = rng.integers(0, 4, q), rng.integers(0, 4, g)
    r = metrics_from_distances(dist, q_ids, g_ids, q_cams, g_cams, max_rank=50, topk_map=20, block=16)
    m, cmc, inp, apk = _brute(dist, q_ids, g_ids, q_cams, g_cams, 50, 20)
    assert r["mAP"] == pytest.approx(m, abs=1e-9)
    assert np.allclose(r["cmc"], cmc)
    assert r["mINP"] == pytest.approx(inp, abs=1e-9)
    assert r["mAP@20"] == pytest.approx(apk, abs=1e-9)
    assert r["mAP@20"] <= r["mAP"]


def test_clear_errors():
    dist, q_ids, q_cams = _hand()
    with pytest.raises(NoMatchError, match="no query has a true match"):
        metrics_from_distances(dist[2:], q_ids[2:], G_IDS, q_cams[2:], G_CAMS)
    with pytest.raises(PamtriError, match="ignore_cameras"):
        metrics_from_distances(dist, q_ids, G_IDS)
    with pytest.raises(PamtriError, match="no camera id"):
        metrics_from_distances(dist, q_ids, G_IDS, [-1, -1, -1], G_CAMS)
    with pytest.raises(ValueError, match="NaN"):
        metrics_from_distances(np.full((3, 6), np.nan), q_ids, G_IDS, q_cams, G_CAMS)


def test_distances_and_attribute_accuracy():
    torch.manual_seed(0)
    q, g = torch.randn(5, 8), torch.randn(7, 8)
    assert torch.allclose(pairwise_distance(q, g, block=2), torch.cdist(q, g), atol=1e-5)
    cos = 1 - torch.nn.functional.normalize(q, dim=1) @ torch.nn.functional.normalize(g, dim=1).T
    assert torch.allclose(pairwise_distance(q, g, "cosine", block=3), cos.clamp_min(0), atol=1e-6)
    assert attribute_accuracy([1, 2, 3, 0], [1, 0, 3, -1]) == pytest.approx(2 / 3)
    assert attribute_accuracy(torch.tensor([[0.1, 0.9], [0.8, 0.2]]), [1, 1]) == 0.5
    assert attribute_accuracy([1, 2], [-1, -1]) is None


def test_attribute_accuracy_counts_each_test_image_once():
    """VeRi's query images are also test images: colour/type accuracy is over distinct images, not Q + G."""
    from pamtri.reid.config import EvalConfig
    from pamtri.reid.evaluate import Features, metrics_and_distances

    def feats(names, pids, cams, colors, predicted):
        logits = torch.nn.functional.one_hot(torch.tensor(predicted), 3).float()
        return Features(torch.eye(4)[: len(names)] + torch.tensor(pids)[:, None].float(), np.array(pids),
                        np.array(cams), np.array(colors), np.array(colors), logits, logits, names)
    # gallery: 4 images, colour predicted right on 3; the two queries are gallery images 0 and 1 (both right),
    # plus one query of its own (wrong)
    g = feats(["a.jpg", "b.jpg", "c.jpg", "d.jpg"], [0, 1, 0, 1], [1, 1, 2, 2], [0, 1, 2, 0], [0, 1, 2, 1])
    q = feats(["a.jpg", "b.jpg", "e.jpg"], [0, 1, 0], [1, 1, 3], [0, 1, 1], [0, 1, 2])
    out, _ = metrics_and_distances(q, g, EvalConfig())
    assert out["color_acc"] == pytest.approx(3 / 5) and out["type_acc"] == pytest.approx(3 / 5)  # not 5 / 7


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("ignore_cameras", [False, True])
@pytest.mark.parametrize("ties", [False, True])
def test_blocked_evaluation_from_features_equals_the_dense_path(metric, ignore_cameras, ties):
    from pamtri.reid.metrics import metrics_from_features
    rng = np.random.default_rng(7)
    q, g = rng.normal(size=(37, 8)).astype(np.float32), rng.normal(size=(150, 8)).astype(np.float32)
    if ties:  # +-1 in 4 of 8 places: every distance is exact in float32, and many are equal (ties decide ranks)
        q, g = (np.sign(x) * (np.argsort(rng.random(x.shape), 1) < 4) for x in (q, g))
        q, g = q.astype(np.float32), g.astype(np.float32)
    q_ids, g_ids = rng.integers(0, 12, 37), rng.integers(0, 12, 150)
    q_cams, g_cams = rng.integers(0, 3, 37), rng.integers(0, 3, 150)
    dense = metrics_from_distances(pairwise_distance(torch.from_numpy(q), torch.from_numpy(g), metric), q_ids, g_ids,
                                   q_cams, g_cams, max_rank=20, topk_map=100, ignore_cameras=ignore_cameras)
    # memory_mib=0: one query per block, so no block ever holds more than one row of the (Q, G) matrix
    blocked = metrics_from_features(q, g, q_ids, g_ids, q_cams, g_cams, metric, max_rank=20, topk_map=100,
                                     ignore_cameras=ignore_cameras, memory_mib=0, threads=2)
    for key in ("mAP", "mINP", "mAP@100", "num_valid_queries"):
        assert blocked[key] == pytest.approx(dense[key], abs=1e-12), key
    np.testing.assert_array_equal(blocked["cmc"], dense["cmc"])
    np.testing.assert_array_equal(blocked["first_rank"], dense["first_rank"])
    np.testing.assert_allclose(blocked["ap"], dense["ap"], atol=1e-12)


def test_reid_eval_features_use_the_blocked_path_and_keep_only_the_rank_list_rows(monkeypatch):
    from pamtri.reid import evaluate as ev
    from pamtri.reid.config import EvalConfig
    rng = np.random.default_rng(3)
    q = ev.Features(torch.randn(20, 8), rng.integers(0, 5, 20), rng.integers(0, 3, 20), None, None, None, None, [])
    g = ev.Features(torch.randn(90, 8), rng.integers(0, 5, 90), rng.integers(0, 3, 90), None, None, None, None, [])
    dense = metrics_from_distances(pairwise_distance(q.features, g.features), q.pids, g.pids, q.camids, g.camids)

    def no_dense(*args):
        raise AssertionError("the re-ranking path ran without re-ranking")
    monkeypatch.setattr(ev, "rerank_lists", no_dense)
    out, rows = ev.metrics_and_distances(q, g, EvalConfig())
    assert out["mAP"] == pytest.approx(dense["mAP"], abs=1e-6) and rows.shape == (8, 90)
    np.testing.assert_allclose(rows, pairwise_distance(q.features, g.features).numpy()[[0, 3, 5, 8, 11, 14, 16, 19]],
                               atol=1e-5)
