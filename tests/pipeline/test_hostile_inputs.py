"""Issue 22: hostile files given to `embed`, `cache build` and the ONNX runtime cache."""
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import write_tiny_reid_checkpoint
from tests.data.test_images import write_png_bomb
from tests.pipeline.test_cachebuild import pose_weights  # noqa: F401 - the module fixture

REPO = Path(__file__).resolve().parents[2]

_PEAK = """
import sys
from pamtri.pipeline.cli import main
code = main(sys.argv[1:])
print(next(int(ln.split()[1]) for ln in open("/proc/self/status") if ln.startswith("VmHWM")) // 1024)
sys.exit(code)
"""


def _pamtri_peak_mb(argv) -> tuple[int, int, str]:
    """(exit code, peak resident MB, stderr) of ``pamtri ARGV`` in a fresh process."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-c", _PEAK, *map(str, argv)], env=env, capture_output=True, text=True,
                         timeout=300)
    return run.returncode, int(run.stdout.split()[-1]), run.stderr


def test_embed_and_cache_build_refuse_a_png_bomb_in_bounded_memory(tmp_path, pose_weights):  # noqa: F811
    """Case 7: a 1 MB 20000 x 20000 PNG took `embed` to 3.1 GB and `cache build` further; now one line, < 1.5 GB."""
    folder = tmp_path / "img"
    folder.mkdir()
    cv2.imwrite(str(folder / "0001_c001_00000000_0.jpg"), np.full((40, 50, 3), 90, np.uint8))
    write_png_bomb(folder / "0002_c001_00000001_0.png")
    write_tiny_reid_checkpoint(tmp_path / "r.pt", heatmaps=False, segments=False, keypoints=False)
    bomb = folder / "0002_c001_00000001_0.png"
    want = (f"pamtri: error: {bomb}: image is 20000x20000 pixels, more than the 100,000,000 a decode may produce (a "
            "decompression bomb?); shrink it first")
    for argv in (["embed", "--reid-weights", tmp_path / "r.pt", "--images", folder, "--out", tmp_path / "g.npz",
                  "--device", "cpu", "--precision", "fp32"],
                 ["cache", "build", "--pose-weights", pose_weights, "--images", folder, "--out", tmp_path / "c",
                  "--device", "cpu", "--precision", "fp32"]):
        code, peak, err = _pamtri_peak_mb(argv)
        assert code == 1 and err.strip().splitlines()[-1] == want and "Traceback" not in err, err
        assert peak < 1500, (argv[0], peak)


def test_cache_build_decodes_huge_images_shrunk_with_keypoints_in_original_pixels(tmp_path, pose_weights):  # noqa: F811
    """A 6000 x 3000 image is decoded at 4096 x 2048 for the cache (it used to take its full size, whole batches
    of them); its keypoints are scaled back to the file's pixels."""
    from pamtri.data.images import read_image
    from pamtri.pipeline.cachebuild import build_cache
    from pamtri.pipeline.infer import run_pose
    from pamtri.pose.cache import Cache
    from pamtri.pose.predict import PosePredictor
    from pamtri.pose.weights import load as load_pose
    rng = np.random.default_rng(0)
    big = cv2.resize(rng.integers(0, 255, (60, 120, 3), dtype=np.uint8), (6000, 3000), interpolation=cv2.INTER_NEAREST)
    cv2.imwrite(str(tmp_path / "big.png"), big)
    build_cache(pose_weights, [str(tmp_path / "big.png")], tmp_path / "c", device="cpu", precision="fp32",
                progress=False)
    cached = np.asarray(Cache(tmp_path / "c").raw(0)[1])
    model, (cfg, codec) = load_pose(pose_weights)
    predictor = PosePredictor.from_config(model, cfg, codec, device="cpu", precision="fp32")
    shrunk = read_image(tmp_path / "big.png")
    assert shrunk.shape == (2048, 4096, 3)
    on_shrunk = np.asarray(run_pose(predictor, [shrunk], 64).keypoints[0])
    np.testing.assert_allclose(cached[:, 0], on_shrunk[:, 0] * 6000 / 4096, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(cached[:, 1], on_shrunk[:, 1] * 3000 / 2048, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(cached[:, 2], on_shrunk[:, 2], rtol=1e-5, atol=1e-2)


def _reid_embed(weights, runtime, images):
    from pamtri.pipeline.infer import Pipeline
    # the per-stage graph: the cache checks (runtimes._cached) are the same for the one graph of --runtime
    pipe = Pipeline.from_weights(None, weights, device="cpu", precision="fp32", batch_size=2, runtime=runtime,
                                 one_graph=False)
    return pipe.embed(images)["features"]


def _onnx_setup(tmp_path, monkeypatch):
    import pytest
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home-cache"))
    (tmp_path / "w").mkdir()
    weights = tmp_path / "w" / "reid.pt"
    write_tiny_reid_checkpoint(weights, heatmaps=False, segments=False, keypoints=False)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (40, 30, 3), dtype=np.uint8) for _ in range(2)]
    return weights, images, _reid_embed(weights, "torch", images)


def test_a_cache_folder_others_may_write_is_not_used_and_never_a_shared_tmp_path(tmp_path, monkeypatch):
    """Case 6: a graph planted where another user can write is never run; the graphs go to this user's private
    folder (mode 0700), not to a predictable /tmp/pamtri-onnx."""
    from pamtri.pipeline import runtimes
    weights, images, want = _onnx_setup(tmp_path, monkeypatch)
    shared = weights.parent / ".pamtri-onnx"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o777)  # another local user may write here
    planted = runtimes._cache_path("reid", weights, (32, 32), ".onnx")
    assert planted.parent == tmp_path / "home-cache" / "pamtri" / "onnx"
    assert os.stat(planted.parent).st_mode & 0o777 == 0o700
    (shared / planted.name).write_bytes(b"planted graph")
    np.testing.assert_allclose(_reid_embed(weights, "onnxruntime", images), want, atol=1e-4)
    assert (shared / planted.name).read_bytes() == b"planted graph" and planted.is_file()
    assert "/tmp/pamtri-onnx" not in str(planted) and not list(Path(runtimes.__file__).parent.glob("pamtri-onnx"))


def _tamper(path: Path, case: str, other: Path | None) -> None:
    from pamtri.pipeline import runtimes
    if case == "garbage":
        path.write_bytes(os.urandom(4096))
    elif case == "other weights":
        # a graph of other weights, stamped as theirs, under this name
        import shutil
        shutil.copy(runtimes.cached_onnx("reid", other, (32, 32)), path)
    elif case == "changed byte":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x55  # inside the weights' raw data: still a valid graph, other numbers
        path.write_bytes(bytes(data))
    else:  # unstamped: a graph exported by anyone, without the weights' hash
        import onnx
        proto = onnx.load(str(path))
        del proto.metadata_props[:]
        path.write_bytes(proto.SerializeToString())


@pytest.mark.parametrize("case, problem", [
    ("garbage", "cannot be read as an ONNX graph"),
    ("other weights", "was not exported from these weights"),
    ("changed byte", "its bytes changed since it was exported (SHA-256 mismatch)"),
    ("unstamped", "was not exported from these weights (its weights SHA-256 missing)"),
])
def test_a_corrupt_or_foreign_cached_graph_is_exported_again_with_a_warning(tmp_path, monkeypatch, caplog, case,
                                                                              problem):
    """Case 6: the cached graph is checked against the weights' hash in its metadata and its own hash; one that
    fails is exported again (with a warning), once, and the features are the torch path's."""
    import logging

    from pamtri.pipeline import runtimes
    weights, images, want = _onnx_setup(tmp_path, monkeypatch)
    other = tmp_path / "w" / "other.pt"
    write_tiny_reid_checkpoint(other, heatmaps=False, segments=False, keypoints=False, id_fc=64)
    graph = runtimes.cached_onnx("reid", weights, (32, 32))
    _tamper(graph, case, other)
    with caplog.at_level(logging.WARNING, logger="pamtri.pipeline.runtimes"):
        got = _reid_embed(weights, "onnxruntime", images)
    np.testing.assert_allclose(got, want, atol=1e-4)
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 1 and warned[0].startswith(f"{graph}: {problem}") and warned[0].endswith(
        "; exporting it again"), warned
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pamtri.pipeline.runtimes"):
        _reid_embed(weights, "onnxruntime", images)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # repaired, not warned on every run
