"""The index with part features (issue 25): parts stored in SQLite, the FAISS top-L re-scored by the co-visible
distance, equal to brute force over the whole gallery; old gallery files (no parts) still load."""
import numpy as np
import pytest

from pamtri.pipeline import index as gi
from pamtri.reid.distance import covisible_distance, part_scale

pytest.importorskip("faiss")


def write_parts(path, x, parts, vis, names):
    np.savez(path, features=np.asarray(x, np.float32), names=np.asarray(names),
             paths=np.asarray([f"/imgs/{n}" for n in names]), reid_weights=np.asarray("reid.pt"),
             pose_weights=np.asarray(""), reid_weights_sha256=np.asarray("a" * 64),
             part_features=np.asarray(parts, np.float32), part_visibility=np.asarray(vis, np.float32))
    return path


def data(n, seed):
    rng = np.random.default_rng(seed)
    vis = rng.random((n, 5)).astype(np.float32)
    vis[rng.random((n, 5)) < 0.4] = 0.0  # parts not seen
    return (rng.normal(size=(n, 12)).astype(np.float32), rng.normal(size=(n, 5, 4)).astype(np.float32), vis)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_rescoring_the_whole_gallery_equals_brute_force(tmp_path, metric):
    g, gp, gv = data(60, 0)
    q, qp, qv = data(7, 1)
    names = [f"g{i}.jpg" for i in range(60)]
    idx = gi.build_index([write_parts(tmp_path / "g.npz", g, gp, gv, names)], tmp_path / "g.faiss", "flat", metric)
    try:
        assert idx.info["parts"] == [5, 4]
        scale = idx.info["part_scale"]
        assert scale == pytest.approx(part_scale((g, gp, gv), metric), rel=1e-5) and scale > 0
        pos, dist = gi.search_covisible(idx, q, (qp, qv), top=10, candidates=60, part_weight=0.5)
    finally:
        idx.close()
    brute = covisible_distance((q, qp, qv), (g, gp, gv), metric, 0.5 * scale).numpy()
    want = np.argsort(brute, axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(pos, want)
    np.testing.assert_allclose(dist, np.take_along_axis(brute, want, 1), rtol=1e-4, atol=1e-5)


def test_parts_survive_an_add_and_old_files_load(tmp_path):
    g, gp, gv = data(30, 2)
    first = write_parts(tmp_path / "a.npz", g[:20], gp[:20], gv[:20], [f"a{i}" for i in range(20)])
    second = write_parts(tmp_path / "b.npz", g[20:], gp[20:], gv[20:], [f"b{i}" for i in range(10)])
    gi.build_index([first], tmp_path / "i.faiss").close()
    assert gi.add_to_index(tmp_path / "i.faiss", [second]) == (10, 0)
    idx = gi.open_index(tmp_path / "i.faiss")
    try:
        feats, vis = gi.index_parts(idx, np.array([25, 3]))
    finally:
        idx.close()
    np.testing.assert_array_equal(feats, gp[[25, 3]])
    np.testing.assert_array_equal(vis, gv[[25, 3]])
    old = tmp_path / "old.npz"
    np.savez(old, features=g, names=np.asarray([f"o{i}" for i in range(30)]), paths=np.asarray(["p"] * 30),
             reid_weights=np.asarray("reid.pt"), reid_weights_sha256=np.asarray("b" * 64))
    fs = gi.read_features(old)
    assert fs.parts is None
    idx = gi.build_index([old], tmp_path / "old.faiss")
    try:  # an index without parts: the global search, whatever the queries carry
        pos, _ = gi.search_covisible(idx, g[:2], (gp[:2], gv[:2]), top=1)
    finally:
        idx.close()
    assert pos[:, 0].tolist() == [0, 1]


@pytest.mark.parametrize("weight", [0.0, 0.5])
def test_index_search_part_weight_reaches_the_rescoring(tmp_path, weight):
    from pamtri.pipeline.cli import build_parser
    from pamtri.pipeline.search import search_to_csv
    g, gp, gv = data(40, 3)
    q, qp, qv = data(3, 4)
    gi.build_index([write_parts(tmp_path / "g.npz", g, gp, gv, [f"g{i}.jpg" for i in range(40)])],
                   tmp_path / "g.faiss", "flat", "euclidean").close()
    queries = write_parts(tmp_path / "q.npz", q, qp, qv, ["q0.jpg", "q1.jpg", "q2.jpg"])
    args = build_parser().parse_args(["index", "search", str(tmp_path / "g.faiss"), "--features", str(queries),
                                      "--part-weight", str(weight)])
    rows = search_to_csv(args.index, args.features, top=40, part_weight=args.part_weight)
    idx = gi.open_index(tmp_path / "g.faiss")
    scale = idx.info["part_scale"]
    idx.close()
    brute = covisible_distance((q, qp, qv), (g, gp, gv), "euclidean", weight * scale).numpy()
    for qi in range(3):
        got = [r["distance"] for r in rows if r["query"] == f"q{qi}.jpg"]
        np.testing.assert_allclose(got, np.sort(brute[qi]), rtol=1e-4, atol=1e-5)


def test_part_weight_must_be_a_non_negative_number(capsys):
    from pamtri.pipeline.cli import build_parser
    for bad in ("-1", "nan", "heavy"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["search", "--query", "a.jpg", "--gallery", "g.npz", "--part-weight", bad])
        assert "--part-weight" in capsys.readouterr().err


def test_the_index_searches_with_the_models_own_part_weight(tmp_path):
    """A part model trained to rank by the global distance (eval.part_weight 0) is searched that way by default;
    the weight is read from its checkpoint at build and recorded in the index; an explicit weight wins."""
    import torch
    g, gp, gv = data(30, 5)
    q, qp, qv = data(2, 6)
    for weight in (0.0, 0.5):
        ckpt = tmp_path / f"reid{weight}.pt"
        torch.save({"config": {"eval": {"part_weight": weight}}}, ckpt)
        path = tmp_path / f"g{weight}.npz"
        write_parts(path, g, gp, gv, [f"g{i}" for i in range(30)])
        arrays = dict(np.load(path))
        arrays["reid_weights"] = np.asarray(str(ckpt))
        np.savez(path, **arrays)
        idx = gi.build_index([path], tmp_path / f"g{weight}.faiss", "flat", "euclidean")
        try:
            assert idx.info["part_weight"] == weight
            got = gi.search_covisible(idx, q, (qp, qv), top=30, candidates=30)
            explicit = gi.search_covisible(idx, q, (qp, qv), top=30, candidates=30, part_weight=weight)
            other = gi.search_covisible(idx, q, (qp, qv), top=30, candidates=30, part_weight=1.0)
            scale = idx.info["part_scale"]
        finally:
            idx.close()
        np.testing.assert_array_equal(got[0], explicit[0])
        np.testing.assert_allclose(got[1], explicit[1])
        brute = covisible_distance((q, qp, qv), (g, gp, gv), "euclidean", weight * scale).numpy()
        np.testing.assert_allclose(got[1], np.sort(brute, axis=1), rtol=1e-4, atol=1e-5)
        assert not np.allclose(other[1], got[1])
    from pamtri.reid.weights import evaluated_part_weight
    assert evaluated_part_weight(tmp_path / "missing.pt") == 1.0
