"""The tensor forms the one-graph export runs (pipeline.export.PipelineGraph) equal the numpy / cv2 code of the
same owner module: segments (pose.segments), decoding traced to ONNX (pose.codec), sampling matrices
(pose.transforms) against cv2.warpAffine and grid_sample."""
import io

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pamtri.pose.codec import HeatmapCodec
from pamtri.pose.segments import rasterise_batch, rasterise_tensor
from pamtri.pose.transforms import crop_matrix, image_box, invert, sampling_matrices, warp


def _keypoints(rng, n, low, high):
    kps = np.zeros((n, 36, 3), np.float32)
    kps[..., :2] = rng.uniform(low, high, (n, 36, 2))
    kps[..., 2] = rng.uniform(0.3, 1.0, (n, 36))  # some segments below the 0.5 threshold: blank
    return kps


def test_rasterise_tensor_is_cv2_fillpoly_on_the_grid():
    rng = np.random.default_rng(0)
    kps = _keypoints(rng, 40, 0, 63.4)  # any quadrilaterals, convex or not, self-crossing too
    want = rasterise_batch(kps, (64, 64))
    got = rasterise_tensor(torch.from_numpy(kps), (64, 64)).numpy()
    assert want.sum() > 10000 and (got == want).all()
    small = rasterise_tensor(torch.from_numpy(kps[:4] / 8), (8, 12)).numpy()  # non-square, tiny
    assert (small == rasterise_batch(kps[:4] / 8, (8, 12))).all()


def test_rasterise_tensor_across_the_border_differs_in_few_pixels():
    """cv2 clips edges that leave the image before drawing them; the tensor form does not."""
    rng = np.random.default_rng(1)
    kps = _keypoints(rng, 40, -8, 72)
    want = rasterise_batch(kps, (64, 64))
    got = rasterise_tensor(torch.from_numpy(kps), (64, 64)).numpy()
    assert (got != want).sum() <= 0.05 * want.sum()  # measured 3.1%, all in edges that cross the border


@pytest.mark.parametrize("method,blur", [("dark", 2.0), ("dark", 0.0), ("reference", 2.0)])
def test_decoding_traced_to_onnx_equals_the_codec(method, blur):
    ort = pytest.importorskip("onnxruntime")
    codec = HeatmapCodec(input_size=(64, 48), heatmap_size=(16, 12), decode_method=method, blur_sigma=blur)
    rng = np.random.default_rng(2)
    kps = np.concatenate([rng.uniform(-2, 66, (3, 36, 1)), rng.uniform(-2, 50, (3, 36, 1)),
                          np.ones((3, 36, 1))], -1)
    hm = codec.encode(kps)[0] * rng.uniform(0.2, 1.0, (3, 36, 1, 1)).astype(np.float32)
    hm += rng.uniform(0, 0.02, hm.shape).astype(np.float32)

    class Decode(torch.nn.Module):
        def forward(self, x):
            return codec.decode_tensor(x)
    buf = io.BytesIO()
    torch.onnx.export(Decode(), (torch.from_numpy(hm[:2]),), buf, input_names=["h"], output_names=["k"],
                      dynamic_axes={"h": {0: "n"}, "k": {0: "n"}}, opset_version=17, dynamo=False)
    got = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"]).run(None, {"h": hm})[0]
    np.testing.assert_allclose(got, codec.decode(hm), atol=1e-4)  # batch 3 on a graph traced at 2


def test_sampling_matrices_are_warp_affine_and_grid_sample():
    rng = np.random.default_rng(3)
    image = cv2.resize(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8), (48, 32), interpolation=cv2.INTER_CUBIC)
    m = crop_matrix(*image_box(48, 32, 1.0, 1.25), (64, 64))  # the pose crop of a 48 x 32 image, padded
    rows, cols = sampling_matrices(invert(m), (48, 32), (64, 64), subpixel_bits=5)
    x = image.transpose(2, 0, 1).astype(np.float32)
    got = np.floor(rows @ x @ cols.T + 0.5).transpose(1, 2, 0)
    want = warp(image, m, (64, 64)).astype(np.float32)
    assert np.abs(got - want).max() <= 1 and np.mean(got != want) < 0.05
    # without the sub-pixel grid: grid_sample, bilinear, zeros outside, align_corners=True
    rows, cols = sampling_matrices(invert(m), (48, 32), (64, 64))
    inv = invert(m)
    j, i = np.meshgrid(np.arange(64), np.arange(64))
    sx, sy = inv[0, 0] * j + inv[0, 2], inv[1, 1] * i + inv[1, 2]
    grid = torch.from_numpy(np.stack([sx / 47 * 2 - 1, sy / 31 * 2 - 1], -1)[None]).float()
    ref = F.grid_sample(torch.from_numpy(x[None]), grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    np.testing.assert_allclose(rows @ x @ cols.T, ref[0].numpy(), atol=1e-3)
    with pytest.raises(ValueError, match="axis-aligned"):
        sampling_matrices(crop_matrix((10, 10), (20, 20), (16, 16), rotation=30), (48, 32), (16, 16))
