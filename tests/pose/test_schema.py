import numpy as np

from pamtri.pose.heatmaps import encode
from pamtri.pose.keypoints import (
    FLIP_INDEX,
    FLIP_PAIRS,
    KEYPOINT_NAMES,
    NUM_KEYPOINTS,
    PCK_GROUPS,
    SEGMENT_FLIP,
    SEGMENTS,
    flip_keypoints,
)
from pamtri.pose.segments import rasterise


def test_schema_matches_spec():
    assert NUM_KEYPOINTS == 36 and len(KEYPOINT_NAMES) == 36 and len(set(KEYPOINT_NAMES)) == 36
    assert FLIP_PAIRS[0] == (0, 18) and FLIP_PAIRS[-1] == (17, 35) and len(FLIP_PAIRS) == 18
    assert SEGMENTS[0] == (5, 15, 16, 17) and SEGMENTS[6] == (10, 11, 29, 28) and SEGMENTS[12] == (16, 17, 35, 34)
    assert len(SEGMENTS) == 13
    assert SEGMENT_FLIP == (3, 4, 5, 0, 1, 2, 6, 7, 8, 9, 10, 11, 12)
    assert sorted(i for g in PCK_GROUPS.values() for i in g) == list(range(36))
    assert set(PCK_GROUPS) == {"wheel", "fender", "back", "front", "back_windshield", "front_windshield"}
    for k in range(18):
        assert KEYPOINT_NAMES[k].replace("left_", "") == KEYPOINT_NAMES[k + 18].replace("right_", "")
    assert all(FLIP_INDEX[FLIP_INDEX[k]] == k for k in range(36))


def test_flip_keypoints_mirrors_and_swaps():
    kps = np.zeros((36, 3), np.float32)
    kps[:, 0] = np.arange(36)
    kps[:, 2] = 1
    kps[3, 2] = 0
    out = flip_keypoints(kps, width=100)
    assert out[21, 0] == 99 - 3 and out[21, 2] == 0   # keypoint 3 became keypoint 21
    assert out[0, 0] == 99 - 18


def test_rasterise_fills_quad_and_respects_confidence():
    kps = np.zeros((36, 3), np.float32)
    kps[:, 2] = 1.0
    # segment 9 is the roof (13, 14, 32, 31): an axis-aligned rectangle x in [2, 6], y in [1, 3]
    kps[[13, 14, 32, 31], :2] = [(2, 1), (6, 1), (6, 3), (2, 3)]
    seg = rasterise(kps, (5, 8))
    assert seg.shape == (13, 5, 8) and seg.dtype == np.uint8
    expected = np.zeros((5, 8), np.uint8)
    expected[1:4, 2:7] = 1
    np.testing.assert_array_equal(seg[9], expected)
    kps[31, 2] = 0.49
    assert rasterise(kps, (5, 8))[9].sum() == 0


def test_rasterise_segment_flip_consistency():
    rng = np.random.default_rng(0)
    kps = np.concatenate([rng.uniform(0, 127, (36, 2)), np.ones((36, 1))], 1).astype(np.float32)
    seg = rasterise(kps, (128, 128))
    flipped = rasterise(flip_keypoints(kps, 128), (128, 128)).astype(bool)
    mirrored = seg[list(SEGMENT_FLIP)][:, :, ::-1].astype(bool)
    # polygon edges rasterise slightly asymmetrically; a wrong permutation gives IoU far below 0.9
    iou = (flipped & mirrored).sum((1, 2)) / np.maximum((flipped | mirrored).sum((1, 2)), 1)
    assert (iou > 0.9).all(), iou


def test_encode_peak_position_and_weights():
    xy = np.array([[[3.0, 5.0], [100.0, 2.0], [1.0, 1.0]]], np.float32)
    vis = np.array([[1, 1, 0]])
    hm, w = encode(xy, vis, (8, 10), sigma=2.0)
    assert hm.shape == (1, 3, 8, 10) and w.tolist() == [[1.0, 0.0, 0.0]]
    assert np.unravel_index(hm[0, 0].argmax(), (8, 10)) == (5, 3)  # row y=5, column x=3
    assert hm[0, 0, 5, 3] == 1.0
    np.testing.assert_allclose(hm[0, 0, 5, 5], np.exp(-4 / 8), rtol=1e-6)
    assert hm[0, 1].max() == 0 and hm[0, 2].max() == 0
