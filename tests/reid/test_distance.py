"""reid.distance: one home for distances; every re-ranking space implements its protocol."""
import numpy as np
import pytest
import torch

from pamtri.reid.distance import (
    RerankSpace,
    from_similarity,
    normalise,
    pairwise_distance,
    prepared,
    squared_block,
    squared_pairs,
)
from pamtri.reid.rerank import FeatureSpace, MatrixSpace


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_squared_blocks_and_pairs_are_the_squared_pairwise_distances(metric):
    rng = np.random.default_rng(0)
    a, b = torch.from_numpy(rng.normal(size=(5, 8)).astype(np.float32)), torch.from_numpy(
        rng.normal(size=(7, 8)).astype(np.float32))
    want = pairwise_distance(a, b, metric).double().numpy() ** 2
    pa, pb = prepared(a, metric), prepared(b, metric)
    np.testing.assert_allclose(squared_block(pa, pb, metric).numpy(), want, rtol=1e-4, atol=1e-5)
    rows, cols = np.array([0, 4, 2]), np.array([6, 0, 3])
    np.testing.assert_allclose(squared_pairs(pa[rows], pb[cols], metric), want[rows, cols], rtol=1e-4, atol=1e-5)


def test_normalise_keeps_the_type_and_similarities_become_distances():
    x = np.array([[3.0, 4.0], [0.0, 0.0]], np.float32)
    np.testing.assert_allclose(normalise(x), [[0.6, 0.8], [0.0, 0.0]])
    assert isinstance(normalise(torch.from_numpy(x)), torch.Tensor)
    np.testing.assert_allclose(from_similarity(np.array([0.25, 1.0]), "cosine"), [0.75, 0.0])
    np.testing.assert_allclose(from_similarity(np.array([4.0, -1e-7]), "euclidean"), [2.0, 0.0])
    with pytest.raises(ValueError, match="unknown metric"):
        prepared(x, "manhattan")


def test_every_rerank_space_implements_the_protocol(tmp_path):
    rng = np.random.default_rng(1)
    q, g = rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(6, 4)).astype(np.float32)
    d = [pairwise_distance(torch.from_numpy(a), torch.from_numpy(b)).numpy() for a, b in ((q, g), (q, q), (g, g))]
    spaces = [FeatureSpace(q, g), MatrixSpace(*d)]
    for space in spaces:
        assert isinstance(space, RerankSpace)
        assert (space.nq, space.n) == (3, 9)
    # the two spaces agree on the same distances
    rows, cols = np.array([0, 1, 5, 8]), np.array([7, 3, 2, 0])
    np.testing.assert_allclose(spaces[0].pairs(rows, cols), spaces[1].pairs(rows, cols), rtol=1e-4)
