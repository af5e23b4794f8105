"""``pamtri search``: the simple form of ``pamtri index search`` (same rows, CSV columns and rank list)."""
import csv

import numpy as np

from pamtri.pipeline.cli import main
from tests.conftest import write_tiny_reid_checkpoint

FAST = ["--precision", "fp32", "--device", "cpu", "--batch-size", "4"]


def read_csv(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_search_equals_index_search_on_a_gallery_file_its_shards_and_an_index(tmp_path):
    import cv2
    write_tiny_reid_checkpoint(tmp_path / "r.pt", heatmaps=False, segments=False, keypoints=False)
    rng = np.random.default_rng(1)
    (tmp_path / "img").mkdir()
    for i in range(9):  # reid.rerank fails on 4 + 1 images (k1=20 beyond Q + G): part B's re-ranking replaces it
        cv2.imwrite(str(tmp_path / "img" / f"{i:04d}_c00{i + 1}_0000000{i}_0.jpg"),
                    rng.integers(0, 255, (40, 60, 3), dtype=np.uint8))
    g = str(tmp_path / "g.npz")
    assert main(["embed", "--reid-weights", str(tmp_path / "r.pt"), "--images", str(tmp_path / "img"), "--out", g,
                 "--chunk", "3"] + FAST) == 0
    idx = str(tmp_path / "g.faiss")
    assert main(["index", "build", "--features", g, "--out", idx, "--metric", "euclidean"]) == 0
    query = str(tmp_path / "img" / "0002_c003_00000002_0.jpg")
    assert main(["index", "search", idx, "--images", query, "--top", "3", "--out", str(tmp_path / "want.csv")]
                + FAST) == 0
    want = read_csv(tmp_path / "want.csv")
    assert want[0]["image"] == "0002_c003_00000002_0.jpg" and float(want[0]["distance"]) < 1e-3
    for name, gallery in (("npz", g), ("shards", g + ".shards"), ("index", idx)):
        png, out = tmp_path / f"{name}.png", tmp_path / f"{name}.csv"
        assert main(["search", "--query", query, "--gallery", gallery, "--top", "3", "--out", str(png),
                     "--out-csv", str(out)] + FAST) == 0
        assert read_csv(out) == want, name
        assert png.stat().st_size > 0
    assert main(["search", "--query", query, "--gallery", g, "--top", "3", "--rerank", "--out",
                 str(tmp_path / "rr.png"), "--out-csv", str(tmp_path / "rr.csv")] + FAST) == 0
    reranked = read_csv(tmp_path / "rr.csv")
    assert list(reranked[0]) == ["query", "rank", "image", "distance", "camera"]
    assert [r["rank"] for r in reranked] == ["1", "2", "3"] and reranked[0]["image"] == want[0]["image"]
    assert (tmp_path / "rr.png").stat().st_size > 0
