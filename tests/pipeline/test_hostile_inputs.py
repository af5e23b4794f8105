"""Issue 22: hostile files given to `embed`, `cache build` and the ONNX runtime cache."""
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

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
    from pamtri.pose.predict import PosePredictor, load_pose_model
    rng = np.random.default_rng(0)
    big = cv2.resize(rng.integers(0, 255, (60, 120, 3), dtype=np.uint8), (6000, 3000), interpolation=cv2.INTER_NEAREST)
    cv2.imwrite(str(tmp_path / "big.png"), big)
    build_cache(pose_weights, [str(tmp_path / "big.png")], tmp_path / "c", device="cpu", precision="fp32",
                progress=False)
    cached = np.asarray(Cache(tmp_path / "c").raw(0)[1])
    model, cfg, codec = load_pose_model(pose_weights)
    predictor = PosePredictor.from_config(model, cfg, codec, device="cpu", precision="fp32")
    shrunk = read_image(tmp_path / "big.png")
    assert shrunk.shape == (2048, 4096, 3)
    on_shrunk = np.asarray(run_pose(predictor, [shrunk], 64).keypoints[0])
    np.testing.assert_allclose(cached[:, 0], on_shrunk[:, 0] * 6000 / 4096, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(cached[:, 1], on_shrunk[:, 1] * 3000 / 2048, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(cached[:, 2], on_shrunk[:, 2], rtol=1e-5, atol=1e-2)
