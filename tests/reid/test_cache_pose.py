"""ReID pose channels read from the pose stage's caches: same rows, same values, clear refusals."""
import pickle

import numpy as np
import pytest

from pamtri.common.checkpoint import load_checkpoint
from pamtri.common.errors import ConfigError, DataError
from pamtri.data.records import Record
from pamtri.pose.cache import CacheSpec, CacheWriter
from pamtri.pose.segments import rasterise
from pamtri.reid.config import DataConfig, DataSource, ModelConfig
from pamtri.reid.pose_inputs import CachePose, make_pose_source

W, H = 40, 30  # image size (pixels); cached heatmaps are 8 x 8 cells over the whole image


def _fake(names):
    """Deterministic pose output per name: heatmaps in [0, 1], keypoints inside the image with confidence."""
    hms, kps = [], []
    for n in names:
        rng = np.random.default_rng(int(n[:4]))
        hms.append(rng.random((36, 8, 8), dtype=np.float32))
        k = np.stack([rng.uniform(2, W - 3, 36), rng.uniform(2, H - 3, 36), rng.uniform(0.3, 1.0, 36)], -1)
        kps.append(k.astype(np.float32))
    return np.stack(hms), np.stack(kps)


def _cache(folder, names, weights="w1"):
    spec = CacheSpec(weights_sha256=weights, pose_config={}, input_size=(32, 32), heatmap_size=(8, 8),
                     chunk_size=2)
    w = CacheWriter(folder, names, spec)
    w.build(_fake, progress=False)
    w.finalise()
    return str(folder)


def _records(names):
    return [Record(path=f"/data/image_train/{n}", vehicle_id=i, camera_id=1, width=W, height=H)
            for i, n in enumerate(names)]


def test_rows_follow_names_and_sources(tmp_path):
    a = [f"{i:04d}_c001_00000000_0.jpg" for i in range(5)]
    b = [f"{i:04d}_c002_00000000_0.jpg" for i in range(10, 13)]
    ca, cb = _cache(tmp_path / "a", a), _cache(tmp_path / "b", b)
    # records in another order than the caches, from two caches
    names = [b[2], a[3], a[0], b[0]]
    src = CachePose(_records(names), [ca, cb], sources=[1, 0, 0, 1], heatmaps=True, segments=True, size=16)
    for i, n in enumerate(names):
        got = src(i, _records(names)[i], (W, H))
        hm, kps = (x[0] for x in _fake([n]))
        np.testing.assert_allclose(got.keypoints, kps)
        np.testing.assert_allclose(got.heatmaps, np.round(hm * 255) / 255, atol=1e-6)  # uint8 storage
        cells = kps.copy()
        cells[:, 0] = (kps[:, 0] + 0.5) * 16 / W - 0.5
        cells[:, 1] = (kps[:, 1] + 0.5) * 16 / H - 0.5
        np.testing.assert_array_equal(got.segments, rasterise(cells, (16, 16)))
    # picklable for loader workers without copying the memory maps
    clone = pickle.loads(pickle.dumps(src))
    assert clone._caches is None
    np.testing.assert_allclose(clone(1, None, (W, H)).keypoints, _fake([a[3]])[1][0])


def test_refusals_name_the_problem(tmp_path):
    a = [f"{i:04d}_c001_00000000_0.jpg" for i in range(3)]
    ca = _cache(tmp_path / "a", a)
    cb = _cache(tmp_path / "b", a, weights="w2")
    with pytest.raises(DataError, match="not in the pose cache"):
        CachePose(_records(["0099_c001_00000000_0.jpg"]), [ca])
    with pytest.raises(ConfigError, match="different pose weights"):
        CachePose(_records(a[:1]), [ca, cb], sources=[0])
    data = DataConfig(pose_source="cache", heatmap_size=8, train=[DataSource(root="r", pose_cache=ca)])
    with pytest.raises(ConfigError, match="no pose cache folder"):
        make_pose_source(data, ModelConfig(), _records(a), [""])
    assert isinstance(make_pose_source(data, ModelConfig(), _records(a), [ca]), CachePose)
    assert make_pose_source(data, ModelConfig(heatmaps=False, keypoints=False), _records(a), [ca]) is None


def test_config_names_the_source_without_a_cache():
    data = DataConfig(pose_source="cache", train=[DataSource(root="r", pose_cache="c"), DataSource(root="s")])
    with pytest.raises(ConfigError, match=r"data\.train\[1\]\.pose_cache"):
        data.validate()


def test_training_and_evaluation_refuse_caches_of_other_pose_weights(tmp_path, capsys):
    from pamtri.data.readers import read_split
    from pamtri.pipeline.cli import main
    from tests.conftest import write_tiny_reid_config, write_tiny_synth_tree
    root = write_tiny_synth_tree(tmp_path / "data", ids=8)
    caches = {}
    for split in ("train", "query", "test"):
        names = [r.name for r in read_split(root, split)]
        caches[split] = _cache(tmp_path / f"cache_{split}", names, weights="w1")
    caches["other"] = _cache(tmp_path / "cache_other", [r.name for r in read_split(root, "query")], weights="w2")
    caches["other_test"] = _cache(tmp_path / "cache_other_test", [r.name for r in read_split(root, "test")], "w2")
    cfg = write_tiny_reid_config(tmp_path / "tiny.yaml", root, epochs=1, batches=1)

    def train(out, query_cache, gallery_cache=caches["test"]):
        return main(["reid", "train", "--config", str(cfg), "--out", str(out), "--set", "data.pose_source=cache",
                     "--set", "data.heatmap_size=8",
                     "--set", f"data.train=[{{root: '{root}', split: train, pose_cache: '{caches['train']}'}}]",
                     "--set", f"data.query_cache={query_cache}", "--set", f"data.gallery_cache={gallery_cache}"])

    assert train(tmp_path / "bad", caches["other"]) == 1
    assert "built with different pose weights" in capsys.readouterr().err
    assert train(tmp_path / "bad2", caches["other"], caches["other_test"]) == 1
    assert "other pose weights than the training caches" in capsys.readouterr().err
    assert train(tmp_path / "run", caches["query"]) == 0
    assert load_checkpoint(tmp_path / "run" / "best.pt")["pose_weights_sha256"] == "w1"
    capsys.readouterr()
    evaluate = ["reid", "eval", "--weights", str(tmp_path / "run" / "best.pt"), "--data", str(root),
                "--out", str(tmp_path / "eval"), "--set", f"data.gallery_cache={caches['other_test']}"]
    assert main(evaluate + ["--set", f"data.query_cache={caches['other']}"]) == 1
    err = capsys.readouterr().err
    assert "other pose weights than the ones" in err and str(caches["other"]) in err
    assert main(["reid", "eval", "--weights", str(tmp_path / "run" / "best.pt"), "--data", str(root),
                 "--out", str(tmp_path / "eval")]) == 0


def test_caches_on_another_grid_than_data_heatmap_size_are_refused(tmp_path):
    """Cached heatmaps are never resampled: a cache whose grid is not data.heatmap_size is refused, naming the
    folder and the --grid to rebuild it with; a model without heatmap channels does not read them."""
    a = [f"{i:04d}_c001_00000000_0.jpg" for i in range(3)]
    ca = _cache(tmp_path / "a", a)  # 8 x 8 cells
    data = DataConfig(pose_source="cache", heatmap_size=16, train=[DataSource(root="r", pose_cache=ca)])
    with pytest.raises(ConfigError, match=r"/a: this pose cache holds 8x8-cell heatmaps but data\.heatmap_size is "
                                          r"16; rebuild it with `pamtri cache build \.\.\. --grid 16`"):
        make_pose_source(data, ModelConfig(), _records(a), [ca])
    segments_only = ModelConfig(heatmaps=False, segments=True, keypoints=True)
    assert make_pose_source(data, segments_only, _records(a), [ca]).size == 16
