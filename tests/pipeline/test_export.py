"""``pamtri export onnx``: tiny pose and ReID checkpoints exported and run with onnxruntime."""
import json
import sys

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from pamtri.common.errors import PamtriError  # noqa: E402
from pamtri.pipeline.cli import main  # noqa: E402
from tests.conftest import write_tiny_pose_checkpoint, write_tiny_reid_checkpoint  # noqa: E402


@pytest.fixture(scope="module")
def pose_weights(tmp_path_factory):
    """A pamtri pose checkpoint: hrnet_w18_small, 64x64 input, random weights."""
    return write_tiny_pose_checkpoint(tmp_path_factory.mktemp("pose") / "best.pt")


def _reid_weights(path, heatmaps, segments, keypoints):
    """A pamtri ReID checkpoint made small: 32x48 input, 64-d ReID FC, 32-d attribute FCs."""
    write_tiny_reid_checkpoint(path, heatmaps, segments, keypoints, height=32, width=48, id_fc=64, attr_fc=32)
    return path


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _metadata(path):
    return json.loads({p.key: p.value for p in onnx.load(str(path)).metadata_props}["pamtri"])


def test_pose_export_matches_pytorch_with_a_dynamic_batch(pose_weights, tmp_path, capsys):
    from pamtri.pose.weights import load as load_pose
    out = tmp_path / "pose.onnx"
    assert main(["export", "onnx", "--stage", "pose", "--weights", str(pose_weights), "--out", str(out)]) == 0
    assert "max abs diff" in capsys.readouterr().out
    sess = _session(out)
    (inp,), (outp,) = sess.get_inputs(), sess.get_outputs()
    assert inp.name == "image" and inp.shape == ["batch", 3, 64, 64]
    assert outp.name == "heatmaps" and outp.shape == ["batch", 36, 16, 16]
    model, (_, _) = load_pose(pose_weights)
    for n in (1, 4):
        x = torch.randn(n, 3, 64, 64)
        got = sess.run(None, {"image": x.numpy()})[0]
        with torch.no_grad():
            want = model(x).numpy()
        assert got.shape == (n, 36, 16, 16)
        np.testing.assert_allclose(got, want, atol=1e-4)
    meta = _metadata(out)
    assert meta["stage"] == "pose" and meta["input_size_hw"] == [64, 64] and meta["model"] == "hrnet_w18_small"


def test_pose_export_other_size_and_opset(pose_weights, tmp_path):
    out = tmp_path / "pose96x64.onnx"
    assert main(["export", "onnx", "--stage", "pose", "--weights", str(pose_weights), "--out", str(out),
                 "--size", "96", "64", "--opset", "13"]) == 0
    model = onnx.load(str(out))
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [13]
    assert _session(out).get_outputs()[0].shape == ["batch", 36, 24, 16]


@pytest.mark.parametrize("heatmaps,segments,keypoints", [(True, True, True), (False, False, False)])
def test_reid_export_matches_the_embedding(tmp_path, heatmaps, segments, keypoints):
    from pamtri.reid.weights import load as load_reid
    weights = _reid_weights(tmp_path / "reid.pt", heatmaps, segments, keypoints)
    out = tmp_path / "reid.onnx"
    assert main(["export", "onnx", "--stage", "reid", "--weights", str(weights), "--out", str(out)]) == 0
    channels = 3 + 36 * heatmaps + 13 * segments
    sess = _session(out)
    inputs = {i.name: i.shape for i in sess.get_inputs()}
    expected = {"images": ["batch", channels, 32, 48]}
    if keypoints:
        expected["keypoints"] = ["batch", 108]
    assert inputs == expected
    assert [(o.name, o.shape) for o in sess.get_outputs()] == [("embedding", ["batch", 64])]
    model, _ = load_reid(weights)
    x = torch.randn(3, channels, 32, 48)
    kv = torch.rand(3, 108) - 0.5
    feed = {"images": x.numpy(), **({"keypoints": kv.numpy()} if keypoints else {})}
    got = sess.run(None, feed)[0]
    with torch.no_grad():
        want = model.embed(x, kv if keypoints else None).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)
    meta = _metadata(out)
    assert meta["stage"] == "reid" and meta["input_channels"] == channels and meta["keypoints"] == keypoints


def test_a_mismatch_above_the_tolerance_is_an_error_and_writes_nothing(pose_weights, tmp_path, capsys):
    out = tmp_path / "pose.onnx"
    assert main(["export", "onnx", "--stage", "pose", "--weights", str(pose_weights), "--out", str(out),
                 "--tolerance", "-1"]) == 1
    assert "differs from PyTorch" in capsys.readouterr().err
    assert not out.exists()


def test_without_onnxruntime_the_export_is_written_unchecked(pose_weights, tmp_path, monkeypatch):
    from pamtri.pipeline.export import export_pose
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    report = export_pose(pose_weights, tmp_path / "pose.onnx")
    assert report.max_abs_diff is None and (tmp_path / "pose.onnx").stat().st_size > 0


def test_bad_size_and_options_are_one_line_errors(pose_weights, tmp_path):
    from pamtri.pipeline.export import export_pose
    with pytest.raises(PamtriError, match="multiples of 32"):
        export_pose(pose_weights, tmp_path / "p.onnx", size=(50, 64))
    assert main(["export", "onnx", "--stage", "reid", "--weights", str(pose_weights), "--out",
                 str(tmp_path / "r.onnx"), "--model", "hrnet_w32"]) == 1
    assert main(["export", "onnx", "--stage", "reid", "--weights", str(pose_weights), "--out",
                 str(tmp_path / "r.onnx")]) == 1  # a pose checkpoint is not a ReID one
    assert not (tmp_path / "r.onnx").exists()
