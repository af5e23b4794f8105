"""Sharded embedding: torchrun ranks share the chunks, a killed run resumes, a changed run is refused."""
import os
import subprocess
import sys

import numpy as np
import pytest

from pamtri.common.errors import DataError
from pamtri.pipeline import gallery as shards
from pamtri.pipeline.cli import main
from tests.conftest import write_tiny_reid_checkpoint

FAST = ["--precision", "fp32", "--device", "cpu", "--batch-size", "2"]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """(tiny ReID checkpoint without pose input, folder of 5 images, the one-process gallery of them)."""
    import cv2
    root = tmp_path_factory.mktemp("sharded")
    write_tiny_reid_checkpoint(root / "r.pt", heatmaps=False, segments=False, keypoints=False)
    rng = np.random.default_rng(0)
    (root / "img").mkdir()
    for i in range(5):
        cv2.imwrite(str(root / "img" / f"{i:04d}_c00{i % 2 + 1}_0000000{i}_0.jpg"),
                    rng.integers(0, 255, (40, 50 + 4 * i, 3), dtype=np.uint8))
    assert main(["embed", "--reid-weights", str(root / "r.pt"), "--images", str(root / "img"),
                 "--out", str(root / "one.npz")] + FAST) == 0
    return root / "r.pt", root / "img", dict(np.load(root / "one.npz"))


def assert_same_gallery(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    np.testing.assert_array_equal(got["names"], want["names"])
    assert len(set(got["names"].tolist())) == len(got["names"])  # no duplicates
    np.testing.assert_allclose(got["features"], want["features"], atol=1e-5)
    for key in set(want) - {"features"}:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_two_gloo_ranks_give_the_one_process_gallery(images, tmp_path):
    weights, folder, want = images
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = tmp_path / "two.npz"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "pamtri",
           "embed", "--reid-weights", str(weights), "--images", str(folder), "--out", str(out), "--chunk", "2"]
    run = subprocess.run(cmd + FAST, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert sorted(p.name for p in shards.shard_folder(out).glob("chunk-*")) == [
        "chunk-000000.npz", "chunk-000001.npz", "chunk-000002.npz"]
    assert_same_gallery(dict(np.load(out)), want)
    from pamtri.pipeline.index import read_features
    fs = read_features(shards.shard_folder(out))  # the shard folder reads as the same feature set
    np.testing.assert_array_equal(fs.features, np.load(out)["features"])
    assert fs.names == want["names"].tolist()


def test_a_killed_run_resumes_with_only_the_missing_chunks(images, tmp_path, monkeypatch):
    weights, folder, want = images
    real, embedded, killed = shards.embed_images, [], []

    def embed_or_die(pipe, source, start, stop):
        if start == 4 and not killed:  # the first run is killed on its third chunk (images 4:6)
            killed.append(start)
            raise KeyboardInterrupt
        embedded.append(start)
        return real(pipe, source, start, stop)
    monkeypatch.setattr(shards, "embed_images", embed_or_die)
    argv = ["embed", "--reid-weights", str(weights), "--images", str(folder), "--out", str(tmp_path / "g.npz"),
            "--chunk", "2"] + FAST
    assert main(argv) == 130  # the CLI's answer to Ctrl-C
    shard_dir = shards.shard_folder(tmp_path / "g.npz")
    assert not (tmp_path / "g.npz").exists() and len(list(shard_dir.glob("chunk-*"))) == 2
    with pytest.raises(DataError, match="1 of 3 chunks missing"):
        shards.read_shards(shard_dir)
    assert embedded == [0, 2]
    embedded.clear()
    assert main(argv) == 0
    assert embedded == [4]  # only the missing chunk is computed
    assert_same_gallery(dict(np.load(tmp_path / "g.npz")), want)
    (shard_dir / "chunk-000000.npz").unlink()  # or its file was lost: that chunk alone is redone
    assert main(argv) == 0 and embedded == [4, 0]
    assert_same_gallery(dict(np.load(tmp_path / "g.npz")), want)


def test_a_resume_with_other_inputs_is_refused(images, tmp_path, capsys):
    weights, folder, _ = images
    out = str(tmp_path / "g.npz")
    assert main(["embed", "--reid-weights", str(weights), "--images", str(folder), "--out", out, "--chunk", "3"]
                + FAST) == 0
    fewer = tmp_path / "list.txt"
    fewer.write_text("".join(str(p) + "\n" for p in sorted(folder.iterdir())[:4]))
    capsys.readouterr()
    assert main(["embed", "--reid-weights", str(weights), "--images", str(fewer), "--out", out, "--chunk", "3"]
                + FAST) == 1
    manifest = shards.shard_folder(out) / "manifest.json"
    err = capsys.readouterr().err
    assert err.startswith(f"pamtri: error: {manifest}: these shards were started with another source list")
    assert err.count("\n") == 1
    assert main(["embed", "--reid-weights", str(weights), "--images", str(folder), "--out", out, "--chunk", "2"]
                + FAST) == 1
    assert "started with another --chunk (chunk 3, now 2)" in capsys.readouterr().err


def test_embed_data_writes_cameras_for_the_index(images, veri_tree, tmp_path):
    from pamtri.data.readers import read_split
    from pamtri.pipeline.index import _column, build_index
    weights, _, _ = images
    assert main(["embed", "--reid-weights", str(weights), "--data", str(veri_tree), "--split", "test",
                 "--out", str(tmp_path / "g.npz")] + FAST) == 0
    cameras = [r.camera_id for r in read_split(veri_tree, "test")]
    np.testing.assert_array_equal(np.load(tmp_path / "g.npz")["cameras"], cameras)
    idx = build_index([tmp_path / "g.npz"], tmp_path / "g.faiss")
    assert _column(idx, "camera") == cameras
    idx.close()


def _count_embeds(monkeypatch) -> list:
    real, embedded = shards.embed_images, []

    def counting(pipe, source, start=0, stop=None, **options):
        embedded.append(start)
        return real(pipe, source, start, stop, **options)
    monkeypatch.setattr(shards, "embed_images", counting)
    return embedded


def test_chunks_without_their_manifest_are_not_reused_for_other_weights(images, tmp_path, monkeypatch):
    """Issue 22, case 4: manifest.json deleted, then a run with other weights: every chunk is embedded again with
    those weights (the chunks of the first run used to be reused and labelled with the new weights' hash)."""
    weights, folder, want = images
    other = tmp_path / "other.pt"
    write_tiny_reid_checkpoint(other, heatmaps=False, segments=False, keypoints=False, height=48, width=48)
    out = tmp_path / "g.npz"
    argv = ["embed", "--images", str(folder), "--out", str(out), "--chunk", "2"] + FAST
    assert main(argv + ["--reid-weights", str(weights)]) == 0
    (shards.shard_folder(out) / "manifest.json").unlink()
    embedded = _count_embeds(monkeypatch)
    assert main(argv + ["--reid-weights", str(other)]) == 0
    assert embedded == [0, 2, 4]
    assert main(["embed", "--images", str(folder), "--out", str(tmp_path / "one.npz"), "--reid-weights", str(other)]
                + FAST) == 0
    assert_same_gallery(dict(np.load(out)), dict(np.load(tmp_path / "one.npz")))


@pytest.mark.parametrize("case, problem", [
    ("swapped", "does not hold the images of chunk 1 (its paths differ from the source list's)"),
    ("other run", "made by another run (its manifest SHA-256 differs: other inputs or weights)"),
    ("no names", "not a chunk of this run (missing names)"),
    ("truncated", "cannot read chunk ("),
])
def test_a_chunk_that_does_not_fit_is_refused_on_read_and_redone_on_resume(images, tmp_path, monkeypatch, capsys,
                                                                          case, problem):
    weights, folder, want = images
    out = tmp_path / "g.npz"
    argv = ["embed", "--reid-weights", str(weights), "--images", str(folder), "--out", str(out), "--chunk", "2"] + FAST
    assert main(argv) == 0
    shard_dir = shards.shard_folder(out)
    target = shard_dir / "chunk-000001.npz"
    good = dict(np.load(target))
    if case == "swapped":
        target.write_bytes((shard_dir / "chunk-000000.npz").read_bytes())
    elif case == "other run":
        np.savez(target, **{**good, shards.MANIFEST_KEY: np.asarray("0" * 64)})
    elif case == "no names":
        np.savez(target, **{k: v for k, v in good.items() if k != "names"})
    else:
        target.write_bytes(target.read_bytes()[:200])
    with pytest.raises(DataError) as err:
        shards.read_shards(shard_dir)
    assert str(err.value) == f"{target}: {problem}; delete it and re-run `pamtri embed` to redo it" or (
        case == "truncated" and str(err.value).startswith(f"{target}: {problem}"))
    capsys.readouterr()
    assert main(["index", "build", "--features", str(shard_dir), "--out", str(tmp_path / "i.faiss")]) == 1
    assert capsys.readouterr().err.count("\n") == 1
    embedded = _count_embeds(monkeypatch)
    assert main(argv) == 0
    assert embedded == [2]  # that chunk alone is redone
    assert_same_gallery(dict(np.load(out)), want)
