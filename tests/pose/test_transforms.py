from dataclasses import replace

import numpy as np

from pamtri.pose.codec import HeatmapCodec
from pamtri.pose.dataset import PoseDataset
from pamtri.pose.keypoints import FLIP_INDEX
from pamtri.pose.transforms import (
    Augment,
    apply,
    colour_jitter,
    compose,
    crop_matrix,
    flip_matrix,
    image_box,
    invert,
    sample_crop,
)
from tests.pose.posedata import make_pose_set


def test_image_box_enlarged_and_padded_to_aspect():
    centre, size = image_box(200, 100, aspect=1.0, enlarge=1.25)
    np.testing.assert_allclose(centre, [99.5, 49.5])
    np.testing.assert_allclose(size, [250, 250])
    _, size = image_box(100, 200, aspect=0.5, enlarge=1.25)
    np.testing.assert_allclose(size, [125, 250])
    _, size = image_box(100, 300, aspect=0.5, enlarge=1.0)
    np.testing.assert_allclose(size, [150, 300])


def test_crop_matrix_maps_box_edges_to_output_edges():
    m = crop_matrix([49.5, 29.5], [100, 60], (50, 30))
    # continuous box edges (-0.5 .. 99.5) go to the output's edges (-0.5 .. 49.5)
    np.testing.assert_allclose(apply(m, [[-0.5, -0.5], [99.5, 59.5], [49.5, 29.5]]),
                               [[-0.5, -0.5], [49.5, 29.5], [24.5, 14.5]])
    r = crop_matrix([10, 10], [20, 20], (20, 20), rotation=90)
    # a point to the right of the centre ends up above it (counter-clockwise on screen)
    np.testing.assert_allclose(apply(r, [[15.0, 10.0]]), [[9.5, 4.5]], atol=1e-9)


def test_compose_and_invert_round_trip():
    m = compose(crop_matrix([30, 20], [70, 50], (64, 48), rotation=17), flip_matrix(61))
    pts = np.random.default_rng(0).uniform(0, 60, (5, 2))
    np.testing.assert_allclose(apply(invert(m), apply(m, pts)), pts, atol=1e-9)
    batch = np.stack([m, invert(m)])
    np.testing.assert_allclose(apply(batch, np.stack([pts, pts]))[0], apply(m, pts))


def test_sample_crop_pixels_follow_keypoints_with_flip():
    # 64x64 image, 80x80 input, enlarge 1.25: scale exactly 1 and offset 8, so pixels land on pixels.
    img = np.zeros((64, 64, 3), np.uint8)
    kps = np.zeros((36, 3))
    kps[:, 2] = 1
    kps[5, :2] = (10, 20)
    img[20, 10] = 255
    crop, out, m = sample_crop(img, kps, (80, 80), 1.25)
    assert crop[28, 18].max() == 255 and out[5, 0] == 18 and out[5, 1] == 28
    crop, out, m = sample_crop(img, kps, (80, 80), 1.25, flip=True)
    k = FLIP_INDEX[5]  # keypoint 5 became its mirror
    assert out[k, 0] == 63 - 10 + 8 and out[k, 1] == 28
    assert crop[28, 63 - 10 + 8].max() == 255 and crop.sum() == 3 * 255


def test_colour_jitter_keeps_shape_and_zero_strength_is_identity():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (8, 9, 3), dtype=np.uint8)
    assert colour_jitter(img, rng, 0.0) is img
    out = colour_jitter(img, rng, 0.3)
    assert out.shape == img.shape and out.dtype == np.uint8


def test_dataset_targets_decode_back_to_original_pixels(tmp_path):
    records = make_pose_set(tmp_path, "train", n=2, seed=3)
    plain = PoseDataset(records, HeatmapCodec((64, 64), (16, 16), sigma=2.0))
    item = plain[0]
    assert item["image"].shape == (3, 64, 64) and item["target"].shape == (36, 16, 16)
    pred = apply(item["inverse"], replace(plain.codec, blur_sigma=0).decode(item["target"][None])[0, :, :2])
    vis = item["weight"] > 0
    np.testing.assert_allclose(pred[vis], records[0].keypoints[vis, :2], atol=1e-3)
    np.testing.assert_array_equal(vis, records[0].keypoints[:, 2] > 0)

    aug = PoseDataset(records, HeatmapCodec((64, 64), (16, 16), sigma=2.0),
                      augment=Augment(flip_prob=1.0, rotation_prob=1.0))
    a = aug[(1, 1234)]
    b = aug[(1, 1234)]
    np.testing.assert_array_equal(a["image"], b["image"])  # seed-determined augmentation
    pred = apply(a["inverse"], replace(aug.codec, blur_sigma=0).decode(a["target"][None])[0, :, :2])
    vis = a["weight"] > 0
    truth = records[1].keypoints[list(FLIP_INDEX), :2]  # every sample is flipped: channel k is old FLIP_INDEX[k]
    np.testing.assert_allclose(pred[vis], truth[vis], atol=1e-3)
