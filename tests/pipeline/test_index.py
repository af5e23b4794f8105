"""pamtri.pipeline.index: FAISS gallery index with SQLite metadata (build, atomic add, search)."""
import csv

import numpy as np
import pytest

from pamtri.common.errors import DataError
from pamtri.pipeline import index as gi
from pamtri.pipeline import search


def write_features(path, x, names, cameras=None, sha="a" * 64):
    arrays = dict(features=np.asarray(x, np.float32), names=np.asarray(names),
                  paths=np.asarray([f"/imgs/{n}" for n in names]), reid_weights=np.asarray("reid.pt"),
                  pose_weights=np.asarray(""), reid_weights_sha256=np.asarray(sha))
    if cameras is not None:
        arrays["cameras"] = np.asarray(cameras)
    np.savez(path, **arrays)
    return path


def clustered(n, dim=16, clusters=20, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)) * 4
    return (centres[rng.integers(0, clusters, n)] + rng.normal(size=(n, dim))).astype(np.float32)


def brute_force(q, g, metric, k):
    if metric == "cosine":
        qn, gn = (a / np.linalg.norm(a, axis=1, keepdims=True) for a in (q, g))
        d = 1 - qn @ gn.T
    else:
        d = np.sqrt(((q[:, None] - g[None]) ** 2).sum(-1))
    return np.argsort(d, axis=1, kind="stable")[:, :k], np.sort(d, axis=1)[:, :k]


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_flat_top_k_equals_brute_force(tmp_path, metric):
    g, q = clustered(300), clustered(12, seed=1)
    f = write_features(tmp_path / "g.npz", g, [f"g{i}.jpg" for i in range(300)])
    idx = gi.build_index([f], tmp_path / "g.faiss", "flat", metric)
    idx.close()
    idx = gi.open_index(tmp_path / "g.faiss")
    pos, dist = gi.search_index(idx, q, top=7)
    want_pos, want_dist = brute_force(q, g, metric, 7)
    np.testing.assert_array_equal(pos, want_pos)
    np.testing.assert_allclose(dist, want_dist, atol=1e-4)


def test_add_then_search_sees_both_files_and_writes_csv(tmp_path):
    g = clustered(100)
    f1 = write_features(tmp_path / "a.npz", g[:60], [f"g{i}" for i in range(60)], cameras=[i % 3 for i in range(60)])
    f2 = write_features(tmp_path / "b.npz", g[60:], [f"g{i}" for i in range(60, 100)],
                        cameras=[i % 3 for i in range(60, 100)])
    gi.build_index([f1], tmp_path / "g.faiss", metric="euclidean").close()
    assert gi.add_to_index(tmp_path / "g.faiss", [f2]) == (40, 0)
    qf = write_features(tmp_path / "q.npz", g[:3], ["q0", "q1", "q2"], cameras=[0, 1, 2])
    rows = search.search_to_csv(tmp_path / "g.faiss", qf, top=5, exclude_same_camera=True,
                            out=tmp_path / "r.csv")
    with open(tmp_path / "r.csv") as fh:
        read = list(csv.DictReader(fh))
    assert list(read[0]) == ["query", "rank", "image", "distance", "camera"]
    assert [r["rank"] for r in read[:5]] == ["1", "2", "3", "4", "5"] and len(read) == 15
    assert all(int(r["camera"]) != q for r, q in zip(rows, [0] * 5 + [1] * 5 + [2] * 5))
    _, want = brute_force(g[:3], g, "euclidean", 100)
    cams = np.arange(100) % 3
    order = np.argsort(np.sqrt(((g[:3, None] - g[None]) ** 2).sum(-1)), axis=1)
    assert [r["image"] for r in rows[:5]] == [f"g{i}" for i in order[0][cams[order[0]] != 0][:5]]


def test_add_is_atomic_under_a_crash_before_the_metadata_commit(tmp_path, monkeypatch):
    g = clustered(80)
    f1 = write_features(tmp_path / "a.npz", g[:50], [f"g{i}" for i in range(50)])
    f2 = write_features(tmp_path / "b.npz", g[50:], [f"g{i}" for i in range(50, 80)])
    gi.build_index([f1], tmp_path / "g.faiss").close()
    before = (tmp_path / "g.faiss").read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed between the FAISS write and the metadata commit")
    monkeypatch.setattr(gi, "_commit", crash)
    monkeypatch.setattr(gi.Path, "unlink", lambda self, *a, **k: None)  # a kill leaves the temporary file behind
    with pytest.raises(KeyboardInterrupt):
        gi.add_to_index(tmp_path / "g.faiss", [f2])
    monkeypatch.undo()
    assert list(tmp_path.glob(".g.faiss.g*.tmp")), "the crash should have left the pending FAISS file"
    idx = gi.open_index(tmp_path / "g.faiss")
    assert len(idx) == 50 and idx.db.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 50
    assert (tmp_path / "g.faiss").read_bytes() == before and not list(tmp_path.glob(".g.faiss.g*.tmp"))
    idx.close()
    assert gi.add_to_index(tmp_path / "g.faiss", [f2]) == (30, 0)  # and the add goes through afterwards


def test_committed_add_whose_rename_was_cut_is_finished_on_open(tmp_path, monkeypatch):
    g = clustered(80)
    f1 = write_features(tmp_path / "a.npz", g[:50], [f"g{i}" for i in range(50)])
    f2 = write_features(tmp_path / "b.npz", g[50:], [f"g{i}" for i in range(50, 80)])
    gi.build_index([f1], tmp_path / "g.faiss").close()
    real_replace = gi.os.replace

    def cut(src, dst):
        raise KeyboardInterrupt("killed after the commit")
    monkeypatch.setattr(gi.os, "replace", cut)
    with pytest.raises(KeyboardInterrupt):
        gi.add_to_index(tmp_path / "g.faiss", [f2])
    monkeypatch.setattr(gi.os, "replace", real_replace)
    idx = gi.open_index(tmp_path / "g.faiss")
    assert len(idx) == 80 and idx.db.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 80
    idx.close()


def test_duplicate_add_is_refused_or_skipped_by_name(tmp_path):
    g = clustered(40)
    f1 = write_features(tmp_path / "a.npz", g[:30], [f"g{i}" for i in range(30)])
    f2 = write_features(tmp_path / "b.npz", g[20:], [f"g{i}" for i in range(20, 40)])
    gi.build_index([f1], tmp_path / "g.faiss").close()
    with pytest.raises(DataError, match="already in the index.*g20"):
        gi.add_to_index(tmp_path / "g.faiss", [f2])
    assert gi.add_to_index(tmp_path / "g.faiss", [f2], skip_existing=True) == (10, 10)
    idx = gi.open_index(tmp_path / "g.faiss")
    names = gi._column(idx, "name")
    assert len(idx) == 40 and len(set(names)) == 40
    idx.close()


def test_foreign_model_add_is_refused_naming_what_differs(tmp_path):
    g = clustered(40)
    gi.build_index([write_features(tmp_path / "a.npz", g, [f"g{i}" for i in range(40)])], tmp_path / "g.faiss").close()
    other = write_features(tmp_path / "b.npz", g, [f"h{i}" for i in range(40)], sha="b" * 64)
    with pytest.raises(DataError, match="another model.*bbbbbbbbbbbb.*aaaaaaaaaaaa"):
        gi.add_to_index(tmp_path / "g.faiss", [other])
    wider = write_features(tmp_path / "c.npz", np.zeros((2, 32)), ["x", "y"])
    with pytest.raises(DataError, match="embedding size 32 differs from the index's 16"):
        gi.add_to_index(tmp_path / "g.faiss", [wider])
    assert len(gi.open_index(tmp_path / "g.faiss")) == 40


def test_features_without_model_identity_are_refused(tmp_path):
    f = tmp_path / "old.npz"
    np.savez(f, features=np.zeros((2, 4), np.float32), names=np.asarray(["a", "b"]), paths=np.asarray(["a", "b"]),
             reid_weights=np.asarray("r.pt"))
    with pytest.raises(DataError, match="old.npz.*reid_weights_sha256"):
        gi.build_index([f], tmp_path / "g.faiss")


@pytest.mark.parametrize("kind", ["ivf", "ivfpq"])
def test_ivf_reaches_high_recall_against_flat_on_clustered_data(tmp_path, kind):
    g, q = clustered(4000, dim=32, clusters=50), clustered(50, dim=32, clusters=50, seed=3)
    f = write_features(tmp_path / "g.npz", g, [f"g{i}" for i in range(4000)])
    flat = gi.build_index([f], tmp_path / "flat.faiss", "flat", "euclidean")
    approx = gi.build_index([f], tmp_path / f"{kind}.faiss", kind, "euclidean")
    params = approx.info["params"]
    assert params["nlist"] > 1 and params["nprobe"] <= params["nlist"] and (kind == "ivf" or params["m"] >= 1)
    exact, _ = gi.search_index(flat, q, top=10)
    found, _ = gi.search_index(gi.open_index(tmp_path / f"{kind}.faiss"), q, top=10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, found)])
    assert recall >= (0.95 if kind == "ivf" else 0.6), recall  # PQ codes are lossy: 8 bytes a vector here


def test_cli_embed_build_add_search_with_images_and_features(tmp_path, capsys):
    import cv2

    from pamtri.pipeline.cli import main
    from tests.conftest import write_tiny_reid_checkpoint
    write_tiny_reid_checkpoint(tmp_path / "r.pt", heatmaps=False, segments=False, keypoints=False)
    rng = np.random.default_rng(0)
    for part in ("a", "b"):
        (tmp_path / part).mkdir()
        for i in range(3):
            cv2.imwrite(str(tmp_path / part / f"{part}{i}.jpg"), rng.integers(0, 255, (40, 60, 3), dtype=np.uint8))
        assert main(["embed", "--reid-weights", str(tmp_path / "r.pt"), "--images", str(tmp_path / part),
                     "--out", str(tmp_path / f"{part}.npz"), "--precision", "fp32"]) == 0
    idx = str(tmp_path / "g.faiss")
    assert main(["index", "build", "--features", str(tmp_path / "a.npz"), "--out", idx]) == 0
    assert main(["index", "add", idx, "--features", str(tmp_path / "b.npz")]) == 0
    assert main(["index", "add", idx, "--features", str(tmp_path / "b.npz")]) == 1
    assert "already in the index" in capsys.readouterr().err
    query = str(tmp_path / "b" / "b1.jpg")
    assert main(["index", "search", idx, "--images", query, "--top", "3", "--precision", "fp32",
                 "--out", str(tmp_path / "r.csv"), "--png", str(tmp_path / "r.png")]) == 0
    with open(tmp_path / "r.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["rank"] for r in rows] == ["1", "2", "3"] and rows[0]["image"] == "b1.jpg"
    assert float(rows[0]["distance"]) < 1e-4 and (tmp_path / "r.png").stat().st_size > 0
    assert main(["index", "search", idx, "--features", str(tmp_path / "a.npz"), "--top", "1"]) == 0
    assert capsys.readouterr().out.count(" 1. ") == 3


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_search_rerank_from_the_index_equals_rerank_neighbours(tmp_path, metric):
    from pamtri.reid.rerank import rerank_neighbours
    g, q = clustered(200), clustered(6, seed=1)
    f = write_features(tmp_path / "g.npz", g, [f"g{i}.jpg" for i in range(200)])
    idx = gi.build_index([f], tmp_path / "g.faiss", "flat", metric)
    pos, dist = gi.rerank_index(idx, q, top=10, candidates=50)
    want_pos, want_dist = rerank_neighbours(q, g, top=50, metric=metric)
    np.testing.assert_array_equal(pos, want_pos[:, :10])
    np.testing.assert_allclose(dist, want_dist[:, :10], atol=1e-4)
    assert not np.array_equal(pos, gi.search_index(idx, q, top=10)[0])  # re-ranking changed some order
    from pamtri.reid.distance import RerankSpace
    from pamtri.reid.rerank import FeatureSpace
    space, features = gi.IndexSpace(idx, gi._prepare(q, metric)), FeatureSpace(q, g, metric)
    assert isinstance(space, RerankSpace) and (space.nq, space.n) == (features.nq, features.n)
    rows, cols = np.array([0, 3, 7, 150]), np.array([9, 1, 200, 5])
    np.testing.assert_allclose(space.pairs(rows, cols), features.pairs(rows, cols), rtol=1e-4, atol=1e-6)
    idx.close()


def test_search_rerank_on_ivf_and_cli_flag(tmp_path, capsys):
    from pamtri.pipeline.cli import main
    g = clustered(2000, seed=2)
    f = write_features(tmp_path / "g.npz", g, [f"g{i}.jpg" for i in range(2000)], cameras=[i % 4 for i in range(2000)])
    qf = write_features(tmp_path / "q.npz", g[:3] + 0.01, ["q0", "q1", "q2"], cameras=[0, 1, 2])
    gi.build_index([f], tmp_path / "g.faiss", "ivf", "cosine").close()
    assert main(["index", "search", str(tmp_path / "g.faiss"), "--features", str(qf), "--top", "5", "--rerank",
                 "--rerank-top", "40", "--exclude-same-camera", "--out", str(tmp_path / "r.csv")]) == 0
    with open(tmp_path / "r.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 15 and all(int(r["camera"]) != int(r["query"][1]) for r in rows)
    assert [r["image"] for r in rows if r["query"] == "q1"][0] != "g1.jpg"  # its own camera is left out
    first = {r["query"]: r["image"] for r in rows if r["rank"] == "1"}
    assert first["q0"] != "g0.jpg" and all(float(r["distance"]) <= 1.0 for r in rows)


@pytest.mark.parametrize("capability, expected", [("AVX512", "SkylakeX"), ("AVX2", "Haswell"), ("DEFAULT", None)])
def test_import_faiss_names_the_openblas_kernels_of_this_cpu_unless_the_user_did(monkeypatch, capability, expected):
    import torch
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)
    assert gi.import_faiss().IndexFlatIP is not None
    assert gi.os.environ.get("OPENBLAS_CORETYPE") == expected
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Zen")
    gi.import_faiss()
    assert gi.os.environ["OPENBLAS_CORETYPE"] == "Zen"


def test_build_calibrates_nprobe_to_twice_the_smallest_that_reaches_the_recall_target(tmp_path):
    g = clustered(6000, dim=16, clusters=400, seed=5)  # many small clusters: one probed list is not enough
    f = write_features(tmp_path / "g.npz", g, [f"g{i}" for i in range(6000)])
    idx = gi.build_index([f], tmp_path / "ivf.faiss", "ivf", "euclidean")
    nprobe, stored = idx.faiss.nprobe, idx.info["params"]
    assert stored["nprobe"] == nprobe and stored["nprobe_recall"] >= gi.RECALL_TARGET
    q = g[np.sort(np.random.default_rng(0).choice(len(g), 256, replace=False))]
    exact, _ = brute_force(q, g, "euclidean", 11)

    def recall(n):
        idx.faiss.nprobe = n
        found = idx.faiss.search(q, 11)[1]
        return np.mean([len(set(a) & set(b[1:])) / 10 for a, b in zip(found, exact)])
    assert recall(nprobe) >= gi.RECALL_TARGET
    assert nprobe >= 4 and recall(nprobe // 2) >= gi.RECALL_TARGET > recall(nprobe // 4)
    assert gi.open_index(tmp_path / "ivf.faiss").faiss.nprobe == nprobe
