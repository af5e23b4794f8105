"""AutoAugment / RandAugment on the RGB channels only: pose channels and keypoints stay aligned."""
import numpy as np
import pytest
import torch

from pamtri.common.config import load_config
from pamtri.common.errors import ConfigError
from pamtri.data.records import REAL, Record
from pamtri.pose.keypoints import NUM_KEYPOINTS
from pamtri.reid.config import ReIDConfig
from pamtri.reid.dataset import ReIDDataset
from pamtri.reid.pose_inputs import KeypointPose
from pamtri.reid.transforms import GEOMETRIC_OPS, AugParams, SampleBuilder, auto_augment_transform, make_builder
from tests.conftest import assert_heatmap_peaks_on_keypoints

W, H = 48, 40  # source image size (pixels)


def _vehicle(seed=0):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)
    kps = np.zeros((NUM_KEYPOINTS, 3), np.float32)
    kps[:, 0] = rng.uniform(3, W - 4, 36)
    kps[:, 1] = rng.uniform(3, H - 4, 36)
    kps[:, 2] = 1
    return img, kps


def _pose(kps, size=64):
    rec = Record(path="x.jpg", vehicle_id=1, camera_id=1, keypoints=kps, width=W, height=H)
    return KeypointPose(heatmaps=True, segments=True, size=size)(0, rec, (W, H))


@pytest.mark.parametrize("kind", ["autoaugment", "randaugment"])
def test_rgb_changes_while_pose_channels_and_keypoints_stay_bit_identical(kind):
    img, kps = _vehicle(1)
    pose = _pose(kps)
    b = SampleBuilder(64, 64, heatmaps=True, segments=True, train=True,
                      auto_augment=auto_augment_transform(kind, 2, 15), auto_augment_prob=1.0)
    plain = AugParams(crop_x=3, crop_y=2, flip=True)
    x0, k0 = b(img, pose, plain)
    changed = 0
    for seed in range(8):
        x1, k1 = b(img, pose, AugParams(crop_x=3, crop_y=2, flip=True, auto_augment_seed=seed))
        assert torch.equal(x1[3:], x0[3:]) and torch.equal(k1, k0)
        changed += not torch.equal(x1[:3], x0[:3])
    assert changed >= 4


@pytest.mark.parametrize("kind", ["autoaugment", "randaugment"])
def test_no_op_moves_pixels(kind):
    """A constant image stays constant under every photometric op; a shear, translation or rotation would bring
    in the fill colour (black) at the border."""
    t = auto_augment_transform(kind, 3, 30)
    img = torch.full((3, 32, 32), 90, dtype=torch.uint8)
    for seed in range(60):
        torch.manual_seed(seed)
        out = t(img)
        assert (out == out[:, :1, :1]).all(), seed
    assert GEOMETRIC_OPS == {"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"}


def test_heatmap_peaks_still_sit_on_the_keypoints_after_auto_augment():
    img, kps = _vehicle(2)
    b = SampleBuilder(64, 64, heatmaps=True, segments=True, train=True,
                      auto_augment=auto_augment_transform("randaugment", 2, 20), auto_augment_prob=1.0)
    x, kv = b(img, _pose(kps), AugParams(crop_x=5, crop_y=3, flip=True, auto_augment_seed=7))
    assert_heatmap_peaks_on_keypoints(x, kv)


def test_draw_applies_it_with_its_probability_and_samples_are_reproducible(tmp_path):
    import cv2
    b = SampleBuilder(32, 32, heatmaps=True, train=True, auto_augment=auto_augment_transform("autoaugment"),
                      auto_augment_prob=0.3)
    draws = [b.draw(np.random.default_rng(s)).auto_augment_seed for s in range(400)]
    assert 0.22 < np.mean([d is not None for d in draws]) < 0.38
    off = SampleBuilder(32, 32, heatmaps=True, train=True)  # no AutoAugment: the other draws are unchanged
    assert [off.draw(np.random.default_rng(s)) for s in range(5)] == [
        AugParams(**{**vars(b.draw(np.random.default_rng(s))), "auto_augment_seed": None}) for s in range(5)]
    recs = []
    for i in range(2):
        img, kps = _vehicle(i)
        path = tmp_path / f"{i:04d}_c001_0_0.jpg"
        cv2.imwrite(str(path), img[:, :, ::-1])
        recs.append(Record(path=str(path), vehicle_id=i, camera_id=1, domain=REAL, keypoints=kps))
    always = SampleBuilder(32, 32, heatmaps=True, train=True, auto_augment=auto_augment_transform("randaugment", 2, 20),
                           auto_augment_prob=1.0)
    ds = ReIDDataset(recs, always, KeypointPose(heatmaps=True))
    torch.manual_seed(0)
    a = ds[(1, 1234)]["image"]
    torch.manual_seed(99)  # the global torch RNG does not matter, and is left as it was
    state = torch.random.get_rng_state()
    assert torch.equal(ds[(1, 1234)]["image"], a)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert not all(torch.equal(ds[(1, s)]["image"][:3], a[:3]) for s in range(1235, 1240))


def test_config_keys_reach_the_builder_and_are_checked():
    cfg = load_config(ReIDConfig, None, ["data.auto_augment=randaugment", "data.randaugment_ops=3",
                                         "data.randaugment_magnitude=12", "data.auto_augment_prob=0.5"])
    b = make_builder(cfg.data, cfg.model, train=True)
    assert (b.auto_augment.num_ops, b.auto_augment.magnitude, b.auto_augment_prob) == (3, 12, 0.5)
    assert make_builder(cfg.data, cfg.model, train=False).auto_augment is None
    with pytest.raises(ConfigError, match="data.auto_augment_prob"):
        load_config(ReIDConfig, None, ["data.auto_augment_prob=1.5"])
    with pytest.raises(ConfigError, match="data.randaugment_magnitude"):
        load_config(ReIDConfig, None, ["data.randaugment_magnitude=31"])


@pytest.mark.parametrize("name", ["veri_sbs_r50ibn", "veri_sbs_r50ibn_k_h"])
def test_sbs_recipes_use_auto_augment(name):
    cfg = load_config(ReIDConfig, f"configs/reid/{name}.yaml")
    assert (cfg.data.auto_augment, cfg.data.auto_augment_prob) == ("autoaugment", 0.1)
