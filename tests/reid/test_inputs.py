"""The ReID input has one definition (reid.inputs.ReidInput) for training, inference and export."""
from pathlib import Path

import numpy as np

from pamtri.reid.config import DataConfig, ModelConfig
from pamtri.reid.inputs import ReidInput
from pamtri.reid.transforms import make_builder

REPO = Path(__file__).resolve().parents[2]


def test_the_normalisation_constants_are_written_once_in_the_package():
    homes = [p.relative_to(REPO).as_posix() for folder in ("pamtri", "pose", "reid", "pipeline")
             for p in (REPO / folder).rglob("*.py") if not (REPO / folder).is_symlink()
             and ("0.485" in p.read_text() or "0.229" in p.read_text())]
    assert homes == ["pamtri/data/images.py"], homes


def test_training_builder_and_the_checkpoint_agree_on_the_input():
    data = DataConfig(height=48, width=32, mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.4), heatmap_size=16)
    model = ModelConfig(heatmaps=True, segments=True, keypoints=True)
    spec = ReidInput.from_configs(data, model)
    builder = make_builder(data, model, train=False)
    assert builder.input.mean == spec.mean and builder.input.std == spec.std
    assert builder.channels == spec.channels == 3 + 36 + 13
    assert builder.pose_mean == spec.pose_mean == np.float32(0.4)
    stored = {"config": {"data": {"height": 48, "width": 32, "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.3, 0.4],
                                  "heatmap_size": 16}}}
    assert ReidInput.from_checkpoint(stored, model, "r.pt") == spec
    meta = spec.metadata()
    assert meta["input_size_hw"] == [48, 32] and meta["pose_grid"] == 16 and meta["rgb_std"] == [0.2, 0.3, 0.4]


def test_the_keypoint_vector_of_a_resized_image_is_in_the_input_pixels():
    spec = ReidInput(20, 40, keypoints=True)
    kps = np.array([[[0.0, 0.0, 1.0]] * 36, [[79.0, 9.0, 0.25]] * 36], np.float32)
    sizes = np.array([[80, 10], [80, 10]], np.float32)   # 80x10 images resized to 40x20
    v = spec.keypoint_vector(spec.to_input_pixels(kps, sizes)).reshape(2, 36, 3)
    # x = (0.5 * 0.5 - 0.5) / 40 - 0.5 is clipped to -0.5
    np.testing.assert_allclose(v[0, 0], [-0.5, (0.5 * 2 - 0.5) / 20 - 0.5, 0.5])
    np.testing.assert_allclose(v[1, 0], [(79.5 * 0.5 - 0.5) / 40 - 0.5, (9.5 * 2 - 0.5) / 20 - 0.5, -0.25])
