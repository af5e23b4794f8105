import numpy as np
import pytest
import torch

from pamtri.pose.heatmaps import decode, encode, flip_back, shift_x
from pamtri.pose.keypoints import FLIP_INDEX, flip_keypoints
from pamtri.pose.transforms import apply, input_to_heatmap


def _random_targets(seed, n=16, size=64, lo=4.0):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(lo, size - 1 - lo, (n, 36, 2)).astype(np.float32)
    hm, w = encode(xy, np.ones((n, 36)), (size, size), sigma=2.0)
    return xy, hm


def test_dark_decodes_noise_free_gaussians_within_005_cell():
    xy, hm = _random_targets(0)
    pred, conf = decode(hm)  # DARK is the default
    assert pred.shape == (16, 36, 2) and conf.shape == (16, 36) and isinstance(pred, np.ndarray)
    err = np.linalg.norm(pred - xy, axis=-1)
    assert err.max() < 0.05
    np.testing.assert_allclose(conf, hm.max(axis=(-2, -1)))


def test_dark_without_smoothing_is_exact_on_gaussians():
    xy, hm = _random_targets(1, lo=1.0)
    pred, _ = decode(hm, "dark", blur_sigma=None)
    assert np.abs(pred - xy).max() < 1e-4


def test_dark_near_the_border_stays_within_005_cell():
    xy, hm = _random_targets(2, lo=1.0)
    pred, _ = decode(hm, "dark")
    assert np.linalg.norm(pred - xy, axis=-1).max() < 0.05


def test_reference_rule_within_03_cell_per_axis_and_quarter_steps():
    xy, hm = _random_targets(3)
    pred, _ = decode(hm, "reference")
    err = np.abs(pred - xy)
    assert err.max() <= 0.25 + 1e-3 < 0.3
    # it only ever moves a quarter cell from the argmax
    frac = np.abs(pred - np.round(pred))
    assert np.all(np.isclose(frac, 0) | np.isclose(frac, 0.25))


def test_reference_rule_hand_worked():
    hm = np.zeros((1, 2, 5, 5), np.float32)
    hm[0, 0, 2, 2] = 1.0
    hm[0, 0, 2, 3] = 0.5   # right neighbour higher than left -> +0.25 in x
    hm[0, 0, 1, 2] = 0.2   # upper neighbour higher than lower -> -0.25 in y
    hm[0, 1, 2, 2] = 0.8   # symmetric neighbours -> no step
    hm[0, 1, 2, 1] = hm[0, 1, 2, 3] = 0.3
    pred, conf = decode(hm, "reference")
    np.testing.assert_allclose(pred[0], [[2.25, 1.75], [2.0, 2.0]])
    np.testing.assert_allclose(conf[0], [1.0, 0.8])


def test_reference_rule_matches_hrnet_get_final_preds_at_the_borders():
    """Peaks in the first two rows/columns or the last one take no quarter step on either axis."""
    from pamtri.pipeline.bench.baselines import decode_loop  # get_final_preds as a per-keypoint loop: the oracle
    rng = np.random.default_rng(11)
    xy = rng.uniform(-0.4, 15.4, (20, 36, 2)).astype(np.float32)
    hm, _ = encode(xy, np.ones((20, 36)), (16, 16), sigma=1.5)
    hm = hm + rng.uniform(0, 0.05, hm.shape).astype(np.float32)
    pred, _ = decode(hm, "reference")
    np.testing.assert_array_equal(pred, decode_loop(hm)[0])
    one = np.zeros((1, 1, 6, 6), np.float32)
    one[0, 0, 3, 1], one[0, 0, 3, 2], one[0, 0, 2, 1] = 1.0, 0.5, 0.3  # peak in column 1: no step at all
    np.testing.assert_array_equal(decode(one, "reference")[0][0, 0], [1.0, 3.0])


def test_decode_accepts_torch_and_returns_torch():
    xy, hm = _random_targets(4, n=2)
    pred, conf = decode(torch.from_numpy(hm))
    assert isinstance(pred, torch.Tensor) and pred.shape == (2, 36, 2)
    np.testing.assert_allclose(pred.numpy(), decode(hm)[0], atol=1e-5)
    with pytest.raises(ValueError):
        decode(hm, "argmax")


def test_shift_x_integer_and_fractional():
    hm = torch.zeros(1, 1, 1, 6)
    hm[..., 2] = 1.0
    assert torch.equal(shift_x(hm, 1.0)[0, 0, 0], torch.tensor([0, 0, 0, 1.0, 0, 0]))
    np.testing.assert_allclose(shift_x(hm, 0.25)[0, 0, 0].numpy(), [0, 0, 0.75, 0.25, 0, 0])


def _input_targets(kps_input, stride=4, size=64, to_cells=None):
    cells = apply(input_to_heatmap(stride), kps_input[:, :2]) if to_cells is None else to_cells(kps_input[:, :2])
    hm, _ = encode(cells[None], np.ones((1, 36)), (size, size), 2.0)
    return hm


def test_flipped_image_flipped_back_heatmaps_match():
    """Heatmaps of a mirrored input, flipped back, equal the heatmaps of the original input (shift 0)."""
    rng = np.random.default_rng(5)
    w_in = 256
    kps = np.concatenate([rng.uniform(30, 220, (36, 2)), np.ones((36, 1))], 1)
    original = _input_targets(kps)
    mirrored = _input_targets(flip_keypoints(kps, w_in))
    np.testing.assert_allclose(flip_back(mirrored, shift=0.0), original, atol=1e-6)
    # a one-cell shift would be wrong under pamtri's cell convention
    assert np.abs(flip_back(mirrored, shift=1.0) - original).max() > 0.1


def test_reference_convention_needs_a_shift_to_the_right():
    """With the reference's x_cell = x_input / 4, flipped-back peaks sit 0.75 cell left of the truth,
    hence its one-cell shift to the right (towards larger x)."""
    rng = np.random.default_rng(6)
    kps = np.concatenate([rng.uniform(30, 220, (36, 2)), np.ones((36, 1))], 1)
    ref = lambda xy: xy / 4.0  # noqa: E731
    original = _input_targets(kps, to_cells=ref)
    back = flip_back(_input_targets(flip_keypoints(kps, 256), to_cells=ref), shift=0.0)
    d = decode(back, blur_sigma=None)[0] - decode(original, blur_sigma=None)[0]
    np.testing.assert_allclose(d[..., 0], -0.75, atol=1e-3)
    np.testing.assert_allclose(d[..., 1], 0.0, atol=1e-3)
    shifted = flip_back(_input_targets(flip_keypoints(kps, 256), to_cells=ref), shift=0.75)
    assert np.abs(decode(shifted)[0] - decode(original)[0]).max() < 0.05


def test_flip_back_permutes_channels():
    hm = np.zeros((1, 36, 4, 8), np.float32)
    hm[0, 3, 1, 0] = 1.0
    back = flip_back(hm)
    assert back[0, FLIP_INDEX[3], 1, 7] == 1.0 and back.sum() == 1.0


def test_patch_smoothing_equals_smoothing_the_whole_map():
    """DARK smooths only around each peak; the values must be those of a full zero-padded Gaussian blur."""
    import torch.nn.functional as F

    from pamtri.pose.heatmaps import _argmax, _blurred_neighbourhood, _gaussian_kernel
    hm = torch.rand(2, 36, 20, 24)
    hm[0, :, 0, 0] = 5.0   # peaks on a corner and an edge: the patch reaches beyond the map there
    hm[1, :, 10, 23] = 5.0
    px, py, _ = _argmax(hm)
    kern = _gaussian_kernel(2.0, hm.dtype, hm.device)
    r = kern.numel() // 2
    x = F.conv2d(F.pad(hm.reshape(72, 1, 20, 24), (r, r, r, r)), (kern[:, None] * kern[None, :])[None, None])
    full = F.pad(x.reshape(2, 36, 20, 24), (1, 1, 1, 1))  # one cell of zeros so corners have 3 x 3 windows
    expected = torch.stack([torch.stack([full[n, k, py[n, k]:py[n, k] + 3, px[n, k]:px[n, k] + 3]
                                         for k in range(36)]) for n in range(2)])
    got = _blurred_neighbourhood(hm, px, py, 2.0)
    inside = torch.ones(2, 36, 3, 3, dtype=torch.bool)  # cells off the map are not compared (never used)
    inside[0, :, 0, :] = inside[0, :, :, 0] = False
    inside[1, :, :, 2] = False
    torch.testing.assert_close(got[inside], expected[inside], atol=1e-5, rtol=1e-5)
