"""Re-ranking from k-NN lists (reid.rerank.rerank_neighbours) against the dense algorithm, and its memory."""
import tracemalloc

import numpy as np
import pytest

from pamtri.pipeline.bench.baselines import rerank_dense
from pamtri.reid.metrics import pairwise_distance
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
                                                         (2, 15, 35, "euclidean", 5, 1, 0.5)])
def test_candidate_list_covering_the_gallery_is_the_dense_result(seed, nq, ng, metric, k1, k2, lam):
    q, g = _features(seed, nq, ng)
    want = _dense(q, g, metric, k1=k1, k2=k2, lambda_value=lam)
    order, dist = rerank_neighbours(q, g, top=ng, metric=metric, k1=k1, k2=k2, lambda_value=lam, block=7)
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
        order, _ = rerank_neighbours(q, g, top=50, block=128)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert order.shape == (nq, 50)
    assert peak < 4 * (nq + ng) ** 2 / 8, f"peak {peak / 2**20:.0f} MiB"


def test_bad_k_is_refused():
    q, g = _features(0, 3, 5)
    with pytest.raises(ValueError, match="k1 and k2"):
        rerank_neighbours(q, g, k1=0)
