"""The heatmap codec: one object for sizes, sigma, cell convention, decoding and flip-back, saved with the weights."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from pamtri.common.checkpoint import load_checkpoint, save_checkpoint
from pamtri.common.config import load_config
from pamtri.common.errors import ConfigError
from pamtri.pose.codec import HeatmapCodec
from pamtri.pose.config import PoseConfig
from pamtri.pose.heatmaps import decode, flip_back
from pamtri.pose.keypoints import flip_keypoints
from pamtri.pose.transforms import apply, input_to_heatmap


def _keypoints(rng, width, height, n=2):
    xy = rng.uniform([12, 12], [width - 13, height - 13], (n, 36, 2))
    return np.concatenate([xy, np.ones((n, 36, 1))], -1)


@pytest.mark.parametrize("convention", ["centred", "reference"])
@pytest.mark.parametrize("method", ["dark", "reference"])
def test_encode_then_decode_returns_the_input_pixels(convention, method):
    """Non-square sizes: (width, height) everywhere, targets (N, K, height, width)."""
    codec = HeatmapCodec(input_size=(192, 256), heatmap_size=(48, 64), cell_convention=convention,
                         decode_method=method, blur_sigma=0)
    kps = _keypoints(np.random.default_rng(0), 192, 256)
    targets, weights = codec.encode(kps)
    assert targets.shape == (2, 36, 64, 48) and targets.dtype == np.float32 and (weights == 1).all()
    back = codec.decode(targets)
    assert back.shape == (2, 36, 3) and back.dtype == np.float32
    tol = 1e-3 if method == "dark" else 0.25 * 4 + 1e-3  # the reference rule is exact to a quarter cell
    np.testing.assert_allclose(back[..., :2], kps[..., :2], atol=tol)
    np.testing.assert_array_equal(back[..., 2], targets.max(axis=(2, 3)))  # confidence: the peak value


def test_decode_is_the_vectorised_decoder_mapped_to_input_pixels():
    """DARK and the reference rule give exactly what pose.heatmaps.decode gives, in input pixels."""
    hm = np.random.default_rng(1).random((3, 36, 16, 24)).astype(np.float32)
    for method, blur in (("dark", 2.0), ("dark", 0.0), ("reference", 2.0)):
        codec = HeatmapCodec((96, 64), (24, 16), decode_method=method, blur_sigma=blur)
        xy, conf = decode(hm, method, blur or None)
        got = codec.decode(torch.from_numpy(hm))
        np.testing.assert_allclose(got[..., :2], apply(codec.cells_to_input, xy), atol=1e-5)
        np.testing.assert_array_equal(got[..., 2], conf)


def test_input_to_cells_is_the_stride_four_affine_of_each_convention():
    for convention in ("centred", "reference"):
        codec = HeatmapCodec((256, 192), (64, 48), cell_convention=convention)
        np.testing.assert_array_equal(codec.input_to_cells, input_to_heatmap(4, convention))
    # a grid spanning a whole image: cell (i, j) covers pixels [j W / Wo, (j + 1) W / Wo) on x
    image = HeatmapCodec(input_size=(100, 60), heatmap_size=(32, 32))
    cells = image.to_cells(np.array([[[-0.5, -0.5, 1.0], [99.5, 59.5, 0.3]]]))
    np.testing.assert_allclose(cells[0], [[-0.5, -0.5, 1.0], [31.5, 31.5, 0.3]], atol=1e-6)


def test_flip_back_uses_the_codec_shift():
    kps = _keypoints(np.random.default_rng(2), 256, 256, n=1)
    codec = HeatmapCodec()
    original, _ = codec.encode(kps)
    mirrored, _ = codec.encode(flip_keypoints(kps[0], 256)[None])
    np.testing.assert_allclose(codec.flip_back(mirrored), original, atol=1e-6)
    shifted = replace(codec, flip_shift=1.0)
    np.testing.assert_array_equal(shifted.flip_back(mirrored), flip_back(mirrored, 1.0))
    assert np.abs(shifted.flip_back(mirrored) - original).max() > 0.1


def test_dict_round_trip_and_errors_name_the_source_and_key():
    codec = HeatmapCodec((128, 96), (32, 24), sigma=1.5, cell_convention="reference", decode_method="reference",
                         blur_sigma=1.0, flip_shift=1.0)
    assert HeatmapCodec.from_dict(codec.to_dict()) == codec
    assert codec.to_dict()["input_size"] == [128, 96]
    with pytest.raises(ConfigError, match=r"best\.pt \(stored codec\).*decode_method"):
        HeatmapCodec.from_dict({"decode_method": "argmax"}, "best.pt (stored codec)")
    with pytest.raises(ConfigError, match=r"best\.pt.*codec\.sigma"):
        HeatmapCodec.from_dict({"sigma": 0}, "best.pt")
    with pytest.raises(ConfigError, match="unknown key 'stride'"):
        HeatmapCodec.from_dict({"stride": 4}, "best.pt")
    with pytest.raises(ConfigError, match="heatmap_size"):
        HeatmapCodec(heatmap_size=(0, 64))


def test_from_config_reads_sizes_sigma_conventions_and_decoding():
    cfg = load_config(PoseConfig, None, ["codec.input_size=[192, 256]", "codec.sigma=3",
                                         "codec.cell_convention=reference", "codec.decode_method=reference",
                                         "codec.blur_sigma=1", "codec.flip_shift=1"])
    assert HeatmapCodec.from_config(cfg) == HeatmapCodec((192, 256), (48, 64), 3.0, "reference", "reference", 1.0, 1.0)


def test_pose_checkpoints_carry_their_codec(tmp_path):
    """Training stores the codec in best.pt and last.pt; loading rebuilds it from there, and from the config for
    checkpoints written before codecs were stored."""
    import pamtri.pose.train as pose_train
    from pamtri.pose.predict import PosePredictor
    from pamtri.pose.weights import load as load_pose
    from tests.pose.posedata import make_pose_set
    make_pose_set(tmp_path / "data", "train", n=4, seed=0)
    root = tmp_path / "data"
    cfg = load_config(PoseConfig, None, [
        f"data.train=[{{root: '{root}', split: train}}]", f"data.val=[{{root: '{root}', split: train}}]",
        "codec.input_size=[64, 64]", "data.workers=0", "model.name=hrnet_w18_small", "optim.epochs=1",
        "data.batch_size=4", "max_batches=1", "optim.milestones=[1]", "precision=fp32", "device=cpu",
        "eval.batch_size=4", "codec.flip_shift=0.25"])
    pose_train.train(cfg, tmp_path / "run")
    expected = HeatmapCodec.from_config(cfg)
    assert expected.flip_shift == 0.25 and expected.heatmap_size == (16, 16)
    for name in ("best.pt", "last.pt"):
        assert load_checkpoint(tmp_path / "run" / name)["codec"] == expected.to_dict(), name
        assert load_pose(tmp_path / "run" / name)[1].codec == expected
    # the stored codec is the one used, whatever the config says, and the loaded config says the same
    ckpt = load_checkpoint(tmp_path / "run" / "best.pt")
    ckpt["codec"] = replace(expected, decode_method="reference", flip_shift=1.0).to_dict()
    save_checkpoint(ckpt, tmp_path / "edited.pt")
    model, (loaded_cfg, codec) = load_pose(tmp_path / "edited.pt")
    assert codec.decode_method == "reference" and codec.flip_shift == 1.0
    assert loaded_cfg.codec.decode_method == "reference"
    assert PosePredictor.from_config(model, loaded_cfg, codec, device="cpu").codec is codec
    del ckpt["codec"]
    save_checkpoint(ckpt, tmp_path / "old.pt")
    assert load_pose(tmp_path / "old.pt")[1].codec == expected


def test_the_codec_section_is_the_one_place_of_its_parameters(tmp_path):
    """Old keys of the codec's parameters are refused with their new name; the config validates them through the
    codec itself; a checkpoint's old-layout config is upgraded."""
    from pamtri.common.config import upgrade_renamed
    for old, new in (("data.input_size=[64, 64]", "codec.input_size"), ("eval.decode=reference", "codec.decode_method"),
                     ("model.cell_convention=reference", "codec.cell_convention")):
        with pytest.raises(ConfigError, match=f"was renamed {new}"):
            load_config(PoseConfig, None, [old])
    with pytest.raises(ConfigError, match="codec.sigma"):
        load_config(PoseConfig, None, ["codec.sigma=0"])
    old = {"data": {"input_size": [96, 64], "sigma": 3.0}, "eval": {"flip_shift": 1.0, "every": 2}}
    new = upgrade_renamed(PoseConfig, old)
    assert new["codec"] == {"input_size": [96, 64], "sigma": 3.0, "flip_shift": 1.0} and new["eval"] == {"every": 2}
