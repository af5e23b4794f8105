import cv2
import numpy as np
import torch
import torch.nn.functional as F

from pamtri.pose.codec import HeatmapCodec
from pamtri.pose.predict import PosePredictor
from pamtri.pose.segments import rasterise
from pamtri.pose.visualize import draw_pose, pose_grid

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


class MarkerModel(torch.nn.Module):
    """A 'perfect' flip-consistent pose model for images with a red, green and blue marker:
    keypoints 0/18 follow red, 1/19 green, 2/20 blue (each pair shares a colour, so a mirrored image
    gives the mirrored answer); a cell averages its 4x4 input pixels, as pamtri's cell convention says."""
    stride = 4

    def forward(self, x):
        rgb = (x * STD + MEAN).clamp(0, 1)
        cells = F.avg_pool2d(rgb, 4)  # (N, 3, h, w)
        out = torch.zeros(x.shape[0], 36, *cells.shape[-2:])
        for colour, (a, b) in enumerate(((0, 18), (1, 19), (2, 20))):
            out[:, a] = out[:, b] = cells[:, colour]
        return out


def _marker_image(width, height, centres, sigma=4.0):
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.zeros((height, width, 3), np.float64)
    for c, (x, y) in enumerate(centres):
        img[..., c] = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2))
    return np.round(255 * img).astype(np.uint8)


def test_predictor_maps_peaks_back_to_original_pixels_and_flip_test_is_consistent():
    centres = [(30.3, 20.6), (70.8, 40.2), (50.5, 12.25)]
    img = _marker_image(97, 61, centres)
    codec = HeatmapCodec((128, 128), (32, 32))
    plain = PosePredictor(MarkerModel(), codec, flip_test=False, device="cpu")
    flipped = PosePredictor(MarkerModel(), codec, flip_test=True, device="cpu")
    kps, hm = plain.predict_arrays([img])
    kps_f, hm_f = flipped.predict_arrays([img])
    assert kps.shape == (1, 36, 3) and hm.shape == (1, 36, 32, 32)
    # the mirrored input's heatmaps, flipped back with no shift, equal the direct ones
    np.testing.assert_allclose(hm_f, hm, atol=1e-5)
    for c, (a, b) in enumerate(((0, 18), (1, 19), (2, 20))):
        np.testing.assert_allclose(kps[0, a, :2], centres[c], atol=0.05)
        np.testing.assert_allclose(kps[0, b, :2], centres[c], atol=0.05)
    # the reference's one-cell shift would move every flip-tested peak
    shifted = PosePredictor(MarkerModel(), HeatmapCodec((128, 128), (32, 32), flip_shift=1.0), flip_test=True,
                            device="cpu")
    k_s, _ = shifted.predict_arrays([img])
    assert abs(k_s[0, 0, 0] - kps[0, 0, 0]) > 0.5


def test_predict_batch_returns_pose_results_with_segments():
    imgs = [_marker_image(64, 48, [(10, 10), (40, 30), (20, 40)]), _marker_image(50, 80, [(5, 5), (25, 60), (45, 20)])]
    results = PosePredictor(MarkerModel(), HeatmapCodec((64, 64), (16, 16)), device="cpu").predict_batch(imgs)
    assert len(results) == 2
    r = results[1]
    assert r.keypoints.shape == (36, 3) and r.heatmaps.shape == (36, 16, 16) and r.image_size == (50, 80)
    assert r.segments.shape == (13, 80, 50) and r.segments.dtype == np.uint8
    np.testing.assert_array_equal(r.segments, rasterise(r.keypoints, (80, 50)))
    # keypoints the marker model never sees have confidence 0, so every segment is blank
    assert r.keypoints[5, 2] == 0 and r.segments.sum() == 0
    predictor = PosePredictor(MarkerModel(), HeatmapCodec((64, 64), (16, 16)), device="cpu")
    assert predictor.predict_batch(torch.from_numpy(np.stack([imgs[0]] * 2)))[0].keypoints.shape == (36, 3)


def test_visualisation_draws_and_grids():
    img = np.zeros((60, 80, 3), np.uint8)
    kps = np.zeros((36, 3), np.float32)
    kps[:, 0], kps[:, 1], kps[:, 2] = 40, 30, 1
    kps[[13, 14, 32, 31], :2] = [(10, 10), (70, 10), (70, 50), (10, 50)]  # the roof segment
    out = draw_pose(img, kps)
    assert out.shape == img.shape and out[30, 40].any() and out[15, 15].any() and not img.any()
    grid = pose_grid([img, img, img], [kps] * 3, [kps] * 3, cell=32, columns=2)
    assert grid.shape == (2 * 32 + 4, 2 * 64 + 4, 3)
    ok, _ = cv2.imencode(".png", grid)
    assert ok
