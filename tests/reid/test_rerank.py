"""k-reciprocal re-ranking against a plain dense implementation of the paper's algorithm."""
import numpy as np
import pytest

from pamtri.pipeline.bench.baselines import euclidean, rerank_dense
from pamtri.pipeline.bench.harness import peak_traced
from pamtri.pipeline.bench.inputs import veri_like
from pamtri.reid.rerank import rerank


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
    want = rerank_dense(q_g, q_q, g_g, k1, k2, lam, dtype=np.float64)  # the dense algorithm, exact
    got = rerank(q_g, q_q, g_g, k1=k1, k2=k2, lambda_value=lam, block=7)
    assert got.shape == (nq, ng) and got.dtype == np.float32
    assert np.abs(got - want).max() < 1e-3


def test_rerank_shape_checks():
    q_g, q_q, g_g = _features(0, 3, 5)
    with pytest.raises(ValueError, match="shapes"):
        rerank(q_g, q_q, g_g[:4, :4])


def test_rerank_dense_path_extra_memory_is_below_half_an_n_by_n_matrix():
    """The dense path (every gallery image a candidate) holds its (Q, G) result, O(N * k1 * k2) lists and sparse V
    and (block x N) slabs: beyond the result, less than half of one N x N float32 matrix at N = 4,000 (it measured
    0.37 of one; the candidate-list version this replaced held 3.2 of them, the version before it 0.53)."""
    nq, ng = 400, 3600
    qf, gf, *_ = veri_like(nq, ng, dim=64)
    q_g, q_q, g_g = euclidean(qf, gf), euclidean(qf, qf), euclidean(gf, gf)
    out, peak = peak_traced(lambda: rerank(q_g, q_q, g_g))
    n_by_n = (nq + ng) ** 2 * 4
    assert out.shape == (nq, ng)
    assert peak - out.nbytes < n_by_n / 2, f"{(peak - out.nbytes) / n_by_n:.2f} of an N x N float32 matrix"
