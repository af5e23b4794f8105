"""Re-ranking from k-NN lists (reid.rerank.rerank_neighbours) against the dense algorithm, and its memory."""
import tracemalloc

import numpy as np
import pytest

from pamtri.pipeline.bench.baselines import rerank_dense
from pamtri.reid.distance import pairwise_distance
from pamtri.reid.rerank import rerank_neighbours


def _features(seed, nq, ng, dim=8, ids=10):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(ids, dim))
    q = centres[rng.integers(0, ids, nq)] + 0.6 * rng.normal(size=(nq, dim))
    g = centres[rng.integers(0, ids, ng)] + 0.6 * rng.normal(size=(ng, dim))
    return q.astype(np.float32), g.astype(np.float32)


def _dense(q, g, metric, **kw):
    import torch
    q, g = torch.from_numpy(q), torch.from_numpy(g)
    mats = [pairwise_distance(a, b, metric).double().numpy() for a, b in ((q, g), (q, q), (g, g))]
    return rerank_dense(*mats, dtype=np.float64, **kw)


@pytest.mark.parametrize("seed,nq,ng,metric,k1,k2,lam", [(0, 12, 60, "euclidean", 20, 6, 0.3),
                                                         (1, 9, 40, "cosine", 6, 3, 0.3),
                                                         (2, 15, 35, "euclidean", 5, 1, 0.5),
                                                         (4, 2, 3, "euclidean", 4, 2, 0.3),   # fewer images
                                                         (5, 1, 2, "cosine", 20, 6, 0.3)])    # than k1 + 1
def test_candidate_list_covering_the_gallery_is_the_dense_result(seed, nq, ng, metric, k1, k2, lam):
    q, g = _features(seed, nq, ng)
    want = _dense(q, g, metric, k1=k1, k2=k2, lambda_value=lam)
    order, dist = rerank_neighbours(q, g, top=ng, metric=metric, k1=k1, k2=k2, lambda_value=lam, memory_mib=0)
    assert order.shape == dist.shape == (nq, ng) and dist.dtype == np.float32
    assert np.all(np.diff(dist, axis=1) >= 0)
    np.testing.assert_array_equal(order[:, :10], np.argsort(want, axis=1, kind="stable")[:, :10])
    np.testing.assert_allclose(dist, np.take_along_axis(want, order, 1), atol=1e-4)


def test_a_short_candidate_list_keeps_the_dense_distances_of_its_pairs():
    q, g = _features(3, 10, 80)
    want = _dense(q, g, "euclidean")
    plain = np.argsort(pairwise_distance(*map(__import__("torch").from_numpy, (q, g))).numpy(), axis=1)[:, :15]
    order, dist = rerank_neighbours(q, g, top=15)
    assert order.shape == (10, 15)
    np.testing.assert_array_equal(np.sort(order, 1), np.sort(plain, 1))  # the 15 nearest by the original distance
    np.testing.assert_allclose(dist, np.take_along_axis(want, order, 1), atol=1e-4)  # re-ranked as dense does


def test_peak_memory_is_not_quadratic():
    nq, ng = 300, 9000  # dense: an N x N float32 matrix alone is 340 MB
    q, g = _features(4, nq, ng, dim=16, ids=400)
    tracemalloc.start()
    try:
        order, _ = rerank_neighbours(q, g, top=50, memory_mib=16)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert order.shape == (nq, 50)
    assert peak < 4 * (nq + ng) ** 2 / 8, f"peak {peak / 2**20:.0f} MiB"


def test_bad_k_is_refused():
    q, g = _features(0, 3, 5)
    with pytest.raises(ValueError, match="k1 and k2"):
        rerank_neighbours(q, g, k1=0)


def _labelled(seed, nq, ng, dim=8, ids=10):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(ids, dim))
    q_ids, g_ids = rng.integers(0, ids, nq), rng.integers(0, ids, ng)
    q = (centres[q_ids] + 0.7 * rng.normal(size=(nq, dim))).astype(np.float32)
    g = (centres[g_ids] + 0.7 * rng.normal(size=(ng, dim))).astype(np.float32)
    return q, g, q_ids, g_ids, rng.integers(0, 4, nq), rng.integers(0, 4, ng)


def test_reid_eval_rerank_covering_the_gallery_equals_the_dense_re_ranked_evaluation():
    import torch

    from pamtri.reid.config import EvalConfig
    from pamtri.reid.evaluate import Features, metrics_and_distances
    from pamtri.reid.metrics import metrics_from_distances
    q, g, q_ids, g_ids, q_cams, g_cams = _labelled(5, 25, 120)
    want = metrics_from_distances(_dense(q, g, "euclidean").astype(np.float32), q_ids, g_ids, q_cams, g_cams)
    qf, gf = (Features(torch.from_numpy(x), i, c, None, None) for x, i, c in ((q, q_ids, q_cams), (g, g_ids, g_cams)))
    got, rows = metrics_and_distances(qf, gf, EvalConfig(rerank=True, rerank_top=120))
    for key in ("mAP", "mINP", "mAP@100"):
        assert got[key] == pytest.approx(want[key], abs=1e-6), key
    assert got["rank1"] == pytest.approx(want["cmc"][0]) and rows.shape == (8, 120)
    assert rows.max() <= 1.0  # every gallery image is in the re-ranked list


def test_ranked_lists_put_the_rest_of_the_gallery_after_the_list_in_the_original_order():
    import torch

    from pamtri.reid.metrics import metrics_from_distances, metrics_from_ranked_lists
    q, g, q_ids, g_ids, q_cams, g_cams = _labelled(6, 20, 90)
    plain = pairwise_distance(torch.from_numpy(q), torch.from_numpy(g)).numpy()
    order = np.argsort(plain, axis=1, kind="stable")[:, :7]  # lists in the original order, distances in [0, 1]
    listed = np.take_along_axis(plain, order, 1) / (plain.max() + 1.0)
    got = metrics_from_ranked_lists(order, listed, q, g, q_ids, g_ids, q_cams, g_cams, memory_mib=0, threads=1)
    want = metrics_from_distances(plain, q_ids, g_ids, q_cams, g_cams)
    assert got["mAP"] == pytest.approx(want["mAP"], abs=1e-12)
    np.testing.assert_array_equal(got["first_rank"], want["first_rank"])


def test_reid_eval_rerank_is_dense_within_the_memory_budget_whatever_rerank_top():
    """A 60 x 1,500 set at eval.rerank_top 100: within the budget every gallery image is re-ranked, and the mAP is the
    dense algorithm's (k-NN lists of 100 under-state it); over the budget the k-NN lists are used and recorded."""
    import torch

    from pamtri.reid.config import EvalConfig
    from pamtri.reid.evaluate import Features, metrics_and_distances
    from pamtri.reid.metrics import metrics_from_distances
    q, g, q_ids, g_ids, q_cams, g_cams = _labelled(7, 60, 1500, ids=40)
    want = metrics_from_distances(_dense(q, g, "euclidean").astype(np.float32), q_ids, g_ids, q_cams, g_cams)
    qf, gf = (Features(torch.from_numpy(x), i, c, None, None) for x, i, c in ((q, q_ids, q_cams), (g, g_ids, g_cams)))
    got, _ = metrics_and_distances(qf, gf, EvalConfig(rerank=True, rerank_top=100))
    assert got["rerank_candidates"] == 1500 and got["mAP"] == pytest.approx(want["mAP"], abs=1e-6)
    lists, _ = metrics_and_distances(qf, gf, EvalConfig(rerank=True, rerank_top=100, rerank_memory_mib=0))
    assert lists["rerank_candidates"] == 100


def test_cosine_re_ranking_at_evaluation_uses_the_reference_kernel_2_minus_2cos():
    """Cosine features are re-ranked on squared Euclidean distances of the normalised features (2 - 2 cos), as the
    reference re_ranking on normalised features; the dense oracle fed those distances gives the same mAP."""
    import torch

    from pamtri.reid.config import EvalConfig
    from pamtri.reid.evaluate import Features, metrics_and_distances
    from pamtri.reid.metrics import metrics_from_distances
    q, g, q_ids, g_ids, q_cams, g_cams = _labelled(8, 20, 150)
    qn, gn = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in (q, g))
    mats = [np.sqrt(np.clip(2 - 2 * (a.astype(np.float64) @ b.T.astype(np.float64)), 0, None))  # sqrt(2 - 2 cos)
            for a, b in ((qn, gn), (qn, qn), (gn, gn))]
    want = metrics_from_distances(rerank_dense(*mats, dtype=np.float64).astype(np.float32), q_ids, g_ids, q_cams,
                                  g_cams)
    qf, gf = (Features(torch.from_numpy(x), i, c, None, None) for x, i, c in ((q, q_ids, q_cams), (g, g_ids, g_cams)))
    got, _ = metrics_and_distances(qf, gf, EvalConfig(rerank=True, metric="cosine"))
    assert got["mAP"] == pytest.approx(want["mAP"], abs=1e-6) and got["mINP"] == pytest.approx(want["mINP"], abs=1e-6)
