"""The sample builder: one transform for image, pose channels and keypoints; flips swap left and right."""
import numpy as np
import pytest
import torch

from pamtri.data.records import REAL, SYNTHETIC, Record
from pamtri.pose.keypoints import FLIP_INDEX, NUM_KEYPOINTS, SEGMENT_FLIP, flip_keypoints
from pamtri.reid.dataset import ReIDDataset, combine_training_sets
from pamtri.reid.pose_inputs import KeypointPose, PoseChannels
from pamtri.reid.samplers import IdentitySampler, SeededBatches
from pamtri.reid.transforms import AugParams, SampleBuilder
from tests.conftest import assert_heatmap_peaks_on_keypoints

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
W, H = 48, 40  # source image size (pixels)


def _vehicle(seed=0):
    """A random image and plausible keypoints: left side (0-17) on the left half, right side on the right."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)
    kps = np.zeros((NUM_KEYPOINTS, 3), np.float32)
    kps[:18, 0] = rng.uniform(3, W / 2 - 3, 18)
    kps[18:, 0] = rng.uniform(W / 2 + 3, W - 4, 18)
    kps[:, 1] = rng.uniform(3, H - 4, 36)
    kps[:, 2] = rng.random(36) > 0.2
    return img, kps


def _record(kps):
    return Record(path="x.jpg", vehicle_id=1, camera_id=1, keypoints=kps, width=W, height=H)


def _mirror(x: torch.Tensor, heat: bool, seg: bool) -> torch.Tensor:
    """The expected flipped sample: columns reversed, heatmap/segment channels permuted."""
    x = x.flip(-1)
    parts = [x[:3]]
    c = 3
    if heat:
        parts.append(x[c:c + 36][list(FLIP_INDEX)])
        c += 36
    if seg:
        parts.append(x[c:c + 13][list(SEGMENT_FLIP)])
    return torch.cat(parts)


@pytest.mark.parametrize("heat,seg", [(True, False), (False, True), (True, True)])
def test_flip_equals_mirrored_sample_with_swapped_channels(heat, seg):
    img, kps = _vehicle()
    pose = KeypointPose(heatmaps=heat, segments=seg)(0, _record(kps), (W, H))
    b = SampleBuilder(32, 32, heatmaps=heat, segments=seg, train=True, translate=True, flip=True)
    big_w = b.big[0]
    plain = AugParams(crop_x=1, crop_y=2, flip=False)
    flipped = AugParams(crop_x=1, crop_y=2, flip=True)
    x0, k0 = b(img, pose, plain)
    x1, k1 = b(img, pose, flipped)
    assert x0.shape == (3 + 36 * heat + 13 * seg, 32, 32) and big_w == 36
    assert torch.equal(x1, _mirror(x0, heat, seg))
    kp0 = k0.numpy().reshape(36, 3)
    kp1 = k1.numpy().reshape(36, 3)
    # x / W - 0.5 mirrors to (W - 1 - x) / W - 0.5 and keypoint k becomes FLIP_INDEX[k]
    exp = kp0[list(FLIP_INDEX)].copy()
    exp[:, 0] = np.clip((31 - (kp0[list(FLIP_INDEX), 0] + 0.5) * 32) / 32 - 0.5, -0.5, 0.5)
    assert np.allclose(kp1, exp, atol=1e-6)


def test_flip_agrees_with_a_truly_mirrored_vehicle():
    """Flip augmentation of a vehicle == the sample of the mirrored photo with mirrored labels."""
    img, kps = _vehicle(1)
    render = KeypointPose(heatmaps=True, segments=True)
    b = SampleBuilder(40, 48, heatmaps=True, segments=True, train=True, translate=False, flip=True)
    x_aug, k_aug = b(img, render(0, _record(kps), (W, H)), AugParams(flip=True))
    m_img = np.ascontiguousarray(img[:, ::-1])
    m_kps = flip_keypoints(kps, W)
    x_ref, k_ref = b(m_img, render(0, _record(m_kps), (W, H)), AugParams(flip=False))
    assert torch.equal(x_aug[:3], x_ref[:3])
    assert torch.allclose(x_aug[3:39], x_ref[3:39], atol=1e-5)       # Gaussians are symmetric
    seg_a, seg_r = x_aug[39:] > 0, x_ref[39:] > 0                  # polygon fill may differ at the rim
    inter = (seg_a & seg_r).sum().item()
    union = (seg_a | seg_r).sum().item()
    assert union == 0 or inter / union > 0.85
    assert torch.allclose(k_aug, k_ref, atol=1e-5)


def test_heatmap_peaks_sit_on_transformed_keypoints():
    img, kps = _vehicle(2)
    kps[:, 2] = 1
    b = SampleBuilder(64, 64, heatmaps=True, train=True)
    pose = KeypointPose(heatmaps=True, size=64)(0, _record(kps), (W, H))
    x, kv = b(img, pose, AugParams(crop_x=5, crop_y=3, flip=True))
    assert_heatmap_peaks_on_keypoints(x, kv)


def test_normalisation_of_image_and_pose_channels():
    img = np.full((H, W, 3), (255, 0, 128), np.uint8)
    pose = PoseChannels(np.zeros((36, 3), np.float32), np.ones((36, 8, 8), np.float32), np.zeros((13, 8, 8), np.uint8))
    b = SampleBuilder(16, 16, heatmaps=True, segments=True)
    x, kv = b(img, pose)
    want_rgb = (np.array([1.0, 0.0, 128 / 255], np.float32) - MEAN) / STD
    assert np.allclose(x[:3, 5, 5].numpy(), want_rgb, atol=1e-6)
    pm, ps = MEAN.mean(), STD.mean()  # the paper: the mean of the RGB means and stds
    assert np.allclose(x[3:39].numpy(), (1 - pm) / ps, atol=1e-5)
    assert np.allclose(x[39:].numpy(), (0 - pm) / ps, atol=1e-5)
    assert np.allclose(kv.numpy().reshape(36, 3)[:, 2], -0.5)
    assert b.mean.tolist() == pytest.approx(MEAN.tolist())  # unchanged by use (the reference code mutates its lists)


def test_colour_jitter_and_erasing_touch_image_channels_only():
    img, kps = _vehicle(3)
    pose = KeypointPose(heatmaps=True, segments=True)(0, _record(kps), (W, H))
    b = SampleBuilder(32, 32, heatmaps=True, segments=True, train=True, random_erasing=1.0, color_jitter=0.4)
    p = b.draw(np.random.default_rng(0))
    assert p.erase is not None and p.brightness != 1.0
    x_aug, _ = b(img, pose, p)
    plain = AugParams(crop_x=p.crop_x, crop_y=p.crop_y, flip=p.flip)
    x_plain, _ = b(img, pose, plain)
    assert torch.equal(x_aug[3:], x_plain[3:])
    assert not torch.equal(x_aug[:3], x_plain[:3])
    x0, y0, x1, y1 = p.erase
    assert torch.count_nonzero(x_aug[:3, y0:y1, x0:x1]) == 0


def test_dataset_samples_are_reproducible_from_their_seed(tmp_path):
    import cv2
    recs = []
    for i in range(4):
        img, kps = _vehicle(i)
        path = tmp_path / f"{i:04d}_c001_0_0.jpg"
        cv2.imwrite(str(path), img[:, :, ::-1])
        recs.append(Record(path=str(path), vehicle_id=i // 2, camera_id=1, color_id=i, type_id=-1,
                           orientation=90.0 * i, domain=REAL, keypoints=kps))
    b = SampleBuilder(32, 32, heatmaps=True, train=True, random_erasing=0.5)
    ds = ReIDDataset(recs, b, KeypointPose(heatmaps=True))
    a, c = ds[(1, 1234)], ds[(1, 1234)]
    assert torch.equal(a["image"], c["image"]) and a["pid"] == 0 and a["color"] == 1 and a["type"] == -1
    assert a["orientation"] == 1 and ds[(0, 5)]["orientation"] == 5  # 90 deg -> bin 1; 0 deg -> last bin
    batches = SeededBatches(IdentitySampler([r.vehicle_id for r in recs], p=2, k=2), seed=3)
    first = list(batches)
    assert first == list(batches) and all(isinstance(i, tuple) for i in first[0])


def test_combined_training_sets_offset_ids_and_set_domains():
    real = [Record(path=f"r{i}", vehicle_id=v) for i, v in enumerate([5, 5, 9])]
    synth = [Record(path=f"s{i}", vehicle_id=v, domain=REAL) for i, v in enumerate([5, 7])]
    recs, info = combine_training_sets([(synth, SYNTHETIC), (real, REAL)])
    assert [(r.path, r.vehicle_id, r.domain) for r in recs] == [
        ("r0", 0, REAL), ("r1", 0, REAL), ("r2", 1, REAL), ("s0", 2, SYNTHETIC), ("s1", 3, SYNTHETIC)]
    assert info["num_ids"] == 4 and info["ids_per_domain"] == {REAL: 2, SYNTHETIC: 2}
