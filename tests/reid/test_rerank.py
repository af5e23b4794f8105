"""k-reciprocal re-ranking against a plain dense implementation of the paper's algorithm."""
import numpy as np
import pytest

from pamtri.reid.rerank import rerank


def dense_rerank(q_g, q_q, g_g, k1, k2, lam):
    """Zhong et al. 2017 written directly with N x N matrices (float64): squared distances divided by the
    column maximum and transposed, k-reciprocal sets, expansion with the k1/2 sets (2/3 overlap rule),
    Gaussian-kernel encoding V, query expansion over the k2 nearest, Jaccard distance, lambda blend."""
    nq = len(q_q)
    d = np.block([[q_q, q_g], [q_g.T, g_g]]).astype(np.float64) ** 2
    d = (d / d.max(axis=0)).T
    n = len(d)
    rank = np.argsort(d, axis=1, kind="stable")

    def recip(i, k):
        return [j for j in rank[i, :k + 1] if i in rank[j, :k + 1]]

    v = np.zeros((n, n))
    half = int(np.around(k1 / 2))
    for i in range(n):
        r = recip(i, k1)
        expanded = set(r)
        for c in r:
            rc = recip(c, half)
            if len(set(rc) & set(r)) > 2 / 3 * len(rc):
                expanded |= set(rc)
        idx = np.array(sorted(expanded))
        w = np.exp(-d[i, idx])
        v[i, idx] = w / w.sum()
    if k2 != 1:
        v = np.stack([v[rank[i, :k2]].mean(0) for i in range(n)])
    jac = np.zeros((nq, n))
    for i in range(nq):
        m = np.minimum(v[i][None, :], v).sum(1)
        jac[i] = 1 - m / (2 - m)
    return (jac * (1 - lam) + d[:nq] * lam)[:, nq:]


def _features(seed, nq, ng, dim=6, ids=8):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(ids, dim))
    q = centres[rng.integers(0, ids, nq)] + 0.6 * rng.normal(size=(nq, dim))
    g = centres[rng.integers(0, ids, ng)] + 0.6 * rng.normal(size=(ng, dim))

    def dist(a, b):
        return np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1)).astype(np.float32)
    return dist(q, g), dist(q, q), dist(g, g)


@pytest.mark.parametrize("seed,nq,ng,k1,k2,lam", [(0, 12, 40, 20, 6, 0.3), (1, 9, 30, 6, 3, 0.3),
                                                   (2, 15, 25, 5, 1, 0.5), (3, 4, 60, 8, 2, 0.1)])
def test_rerank_equals_dense_reference(seed, nq, ng, k1, k2, lam):
    q_g, q_q, g_g = _features(seed, nq, ng)
    want = dense_rerank(q_g, q_q, g_g, k1, k2, lam)
    got = rerank(q_g, q_q, g_g, k1=k1, k2=k2, lambda_value=lam, block=7)
    assert got.shape == (nq, ng) and got.dtype == np.float32
    assert np.abs(got - want).max() < 1e-3


def test_rerank_shape_checks():
    q_g, q_q, g_g = _features(0, 3, 5)
    with pytest.raises(ValueError, match="shapes"):
        rerank(q_g, q_q, g_g[:4, :4])
