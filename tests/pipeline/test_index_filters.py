"""pamtri.pipeline.index: search with a position filter (``keep``) and adds of in-memory feature sets."""
import numpy as np
import pytest

from pamtri.common.errors import DataError
from pamtri.pipeline import index as gi
from tests.pipeline.test_index import brute_force, clustered, write_features


@pytest.mark.parametrize("rerank", [False, True])
def test_keep_returns_the_nearest_allowed_positions_only(tmp_path, rerank):
    g, q = clustered(200), clustered(5, seed=1)
    idx = gi.build_index([write_features(tmp_path / "g.npz", g, [f"g{i}" for i in range(200)])], tmp_path / "i")
    keep = np.arange(200) % 3 == 0
    if rerank:
        pos, _ = gi.rerank_index(idx, q, 5, candidates=200, keep=keep)
        assert (pos >= 0).all() and keep[pos].all()
    else:
        pos, dist = gi.search_index(idx, q, 5, keep=keep)
        allowed = np.flatnonzero(keep)
        exact, d = brute_force(q, g[allowed], "cosine", 5)
        assert np.array_equal(pos, allowed[exact]) and np.allclose(dist, d, atol=1e-5)
    few = np.zeros(200, bool)
    few[[7, 150]] = True
    pos, dist = gi.search_index(idx, q, 5, keep=few)
    assert set(pos[0][:2]) == {7, 150} and (pos[:, 2:] == -1).all() and np.isinf(dist[:, 2:]).all()
    assert (gi.search_index(idx, q, 3, keep=np.zeros(200, bool))[0] == -1).all()
    idx.close()


def test_add_features_is_add_to_index_of_a_feature_set(tmp_path):
    g = clustered(50)
    path = tmp_path / "i"
    gi.build_index([write_features(tmp_path / "g.npz", g[:40], [f"g{i}" for i in range(40)])], path).close()
    fs = gi.read_features(write_features(tmp_path / "h.npz", g[40:], [f"g{i}" for i in range(40, 50)]))
    assert gi.add_features(path, fs, "upload") == (10, 0)
    with pytest.raises(DataError, match="^upload: 10 image"):
        gi.add_features(path, fs, "upload")
    assert gi.add_features(path, fs, "upload", skip_existing=True) == (0, 10)
    idx = gi.open_index(path)
    assert len(idx) == 50 == len(gi._column(idx, "name")) and gi.committed_generation(idx) == 2
    idx.close()
