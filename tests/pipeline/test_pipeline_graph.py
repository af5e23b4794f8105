"""The one deployable graph (``pamtri export onnx --stage pipeline``, ``pamtri export triton``): parity with
``Pipeline.embed`` for each ReID variant, the runtime switch, INT8 behind the guard, the Triton repository."""
import json
import re

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from pamtri.common.errors import ConfigError  # noqa: E402
from pamtri.pipeline.cli import main  # noqa: E402
from pamtri.pipeline.deploy import MIN_COSINE, generated_images, pipeline_parity  # noqa: E402
from pamtri.pipeline.infer import Pipeline  # noqa: E402
from tests.conftest import write_tiny_pose_checkpoint, write_tiny_reid_checkpoint  # noqa: E402

H, W = 32, 48
POSE = 64  # the tiny pose model's input side: the graph's input covers it (ReidInput.covering)
GH, GW = max(H, POSE), max(W, POSE)  # the graph's input (H, W) for the ReID input (H, W)
TINY = dict(id_fc=64, attr_fc=32)
VIT = dict(backbone="timm/vit_tiny_patch16_224", input_size=(32, 32), neck="bnneck", id_fc=0)
BOT = dict(backbone="resnet50", neck="bnneck", id_fc=0)
# (heatmaps, segments, keypoints, model options, input width): each ReID variant the graph composes
VARIANTS = {
    "rgb": (False, False, False, TINY, W),
    "heatmaps": (True, False, False, TINY, W),
    "segments": (False, True, False, TINY, W),
    "keypoints": (False, False, True, TINY, W),
    "bot_resnet50_k_h": (True, False, True, BOT, W),
    "vit_k_h": (True, False, True, VIT, 32),
    "k_h_parts": (True, False, True, {**TINY, "parts": "groups"}, W),  # the global embedding (issue 25's parts)
}


@pytest.fixture(scope="module")
def pose_weights(tmp_path_factory):
    return write_tiny_pose_checkpoint(tmp_path_factory.mktemp("pose") / "pose.pt")


@pytest.fixture(scope="module")
def hsk_weights(tmp_path_factory):
    """A DenseNet ReID checkpoint with every pose input: heatmaps, segments and the keypoint vector."""
    path = tmp_path_factory.mktemp("reid") / "reid.pt"
    write_tiny_reid_checkpoint(path, True, True, True, height=H, width=W, **TINY)
    return path


def _reid(path, variant):
    h, s, k, options, width = VARIANTS[variant]
    write_tiny_reid_checkpoint(path, h, s, k, height=H, width=width, **options)
    return path


def _metadata(path):
    return json.loads({p.key: p.value for p in onnx.load(str(path)).metadata_props}["pamtri"])


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_the_graph_gives_pipeline_embed_features_for_each_variant(variant, pose_weights, tmp_path, one_torch_thread):
    from pamtri.pipeline.deploy import export_checked
    reid = _reid(tmp_path / "reid.pt", variant)
    # the tiny pose model's random weights give flat heatmaps: a keypoint with two near-equal peaks may decode to
    # the other one on either side (float rounding), and through the keypoint vector move its image's feature, so
    # the gate here is the mean cosine and the share of keypoints in place (trained models: docs/deploy.md)
    report, parity = export_checked(pose_weights, reid, tmp_path / "m.onnx", min_cosine=0.99)
    width = VARIANTS[variant][4]
    dim = 192 if variant.startswith("vit") else 2048 + 108 if variant.startswith("bot") else 64
    assert report.inputs == {"images": ["batch", GH, max(width, POSE), 3], "sizes": ["batch", 2]}
    assert report.outputs == {"embedding": ["batch", dim], "keypoints": ["batch", 36, 3], "color": ["batch", 10],
                              "type": ["batch", 9], "feature": ["batch", dim]}
    assert parity.cosine_mean >= 0.9995 and parity.heads_agree == 1.0
    if variant != "rgb":  # the pose stage's keypoints too (RGB-only: Pipeline.embed runs no pose)
        assert parity.keypoints_within >= 0.97


def test_export_command_writes_the_graph_with_its_metadata(pose_weights, hsk_weights, tmp_path, capsys,
                                                         one_torch_thread):
    from pamtri.common.checkpoint import file_sha256
    out = tmp_path / "pamtri.onnx"
    assert main(["export", "onnx", "--stage", "pipeline", "--pose-weights", str(pose_weights), "--reid-weights",
                 str(hsk_weights), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "vs Pipeline.embed (PyTorch fp32) on 8 generated images: feature cosine min" in printed
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto, full_check=True)
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert proto.graph.output[0].name == "embedding"
    meta = _metadata(out)
    assert meta["input_layout"] == "NHWC" and meta["color_order"] == "RGB" and meta["value_range"] == [0, 255]
    assert meta["input_size_hw"] == [GH, GW] and meta["reid_input_size_hw"] == [H, W] and "cv2.resize" in meta["input"]
    assert meta["input_names"] == ["images", "sizes"]
    assert meta["reid_weights_sha256"] == file_sha256(hsk_weights)
    assert meta["pose_weights_sha256"] == file_sha256(pose_weights)
    assert meta["pamtri_version"] and meta["flip_test"] is True and meta["codec"]["decode_method"] == "dark"
    # a dynamic batch: 1 and 5 images, each row L2-normalised, the same rows whatever the batch
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    images = np.stack(generated_images(5, (GH, GW), seed=4))
    sizes = np.array([[GW, GH], [90, 50], [40, 70], [GW, GH], [128, 128]], np.float32)  # before the caller's resize
    five = sess.run(None, {"images": images, "sizes": sizes})
    one = sess.run(None, {"images": images[:1], "sizes": sizes[:1]})
    np.testing.assert_allclose(np.linalg.norm(five[0], axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(one[0][0], five[0][0], atol=1e-5)


def test_bad_pipeline_exports_are_one_line_errors(pose_weights, hsk_weights, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    # a pose-aware model without its pose weights; no ReID weights; opset before GridSample / the graph's ops
    assert main(["export", "onnx", "--stage", "pipeline", "--reid-weights", str(hsk_weights), "--out", str(out)]) == 1
    assert "pass --pose-weights too" in capsys.readouterr().err
    assert main(["export", "onnx", "--stage", "pipeline", "--pose-weights", str(pose_weights), "--out", str(out)]) == 1
    assert "needs --reid-weights" in capsys.readouterr().err
    assert main(["export", "onnx", "--stage", "pipeline", "--pose-weights", str(pose_weights), "--reid-weights",
                 str(hsk_weights), "--out", str(out), "--opset", "13"]) == 1
    assert "opset 16 or later" in capsys.readouterr().err
    assert main(["export", "onnx", "--stage", "reid", "--out", str(out)]) == 1
    assert "needs --weights" in capsys.readouterr().err
    assert not out.exists()


def test_a_graph_below_the_parity_is_refused_and_writes_nothing(pose_weights, hsk_weights, tmp_path,
                                                               one_torch_thread):
    from pamtri.pipeline.deploy import export_checked
    from pamtri.pipeline.export import ExportMismatchError
    with pytest.raises(ExportMismatchError, match="differ from Pipeline.embed"):
        export_checked(pose_weights, hsk_weights, tmp_path / "m.onnx", min_cosine=1.5)
    assert not (tmp_path / "m.onnx").exists()


def test_both_runtimes_run_the_one_graph_as_embed_does(pose_weights, hsk_weights, one_torch_thread):
    pytest.importorskip("openvino")
    images = generated_images(4, (GH, GW), seed=5)  # at the graph's input size: nothing to resize
    torch_pipe = Pipeline.from_weights(pose_weights, hsk_weights, device="cpu", precision="fp32")
    want = torch_pipe.embed(images)
    for runtime in ("onnxruntime", "openvino"):
        pipe = Pipeline.from_weights(pose_weights, hsk_weights, device="cpu", precision="fp32", runtime=runtime)
        assert pipe.graph is not None and ".pipeline2-" in pipe.graph.path
        got = pipe.embed(images)
        assert _cosines(got, want).mean() >= 0.9999  # unnormalised features, as torch's
        near = np.linalg.norm(got["keypoints"][..., :2] - want["keypoints"][..., :2], axis=-1) <= 0.5
        assert near.mean() >= 0.97  # flat random heatmaps: a near-tie may decode to the other peak
        np.testing.assert_array_equal(got["color"], want["color"])
    # crops of other sizes and aspects: resized once by the runtime, their sizes a graph input (the pose crop keeps
    # each crop's aspect, as torch's does), keypoints mapped back to their own pixels
    other = generated_images(4, (40, 150), seed=6) + generated_images(3, (120, 36), seed=7)
    got, want = pipe.embed(other), torch_pipe.embed(other)
    assert _cosines(got, want).mean() > 0.999
    assert got["keypoints"][:4, :, 0].max() > GW  # in the 150-pixel-wide crops' pixels
    assert pipeline_parity(pipe.graph.path, pose_weights, hsk_weights, runtime="openvino").cosine_min >= MIN_COSINE


def _cosines(a, b):
    x, y = a["features"], b["features"]
    return (x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)


def test_camera_ids_are_no_graph_input(pose_weights, tmp_path):
    reid = tmp_path / "vit.pt"
    write_tiny_reid_checkpoint(reid, True, False, True, height=32, width=32, sie_cameras=3, **VIT)
    pipe = Pipeline.from_weights(pose_weights, reid, device="cpu", precision="fp32", runtime="onnxruntime")
    images = generated_images(2, (32, 32))
    assert pipe.embed(images, cameras=[-1, -1])["features"].shape == (2, 192)
    with pytest.raises(ConfigError, match="camera ids"):
        pipe.embed(images, cameras=[0, 1])


def _write_images(folder, images):
    import cv2
    folder.mkdir()
    for i, im in enumerate(images):
        cv2.imwrite(str(folder / f"{i:02d}.png"), im[..., ::-1])
    return folder


def test_int8_of_the_one_graph_behind_the_guard(pose_weights, hsk_weights, tmp_path, capsys, one_torch_thread):
    calib = _write_images(tmp_path / "calib", generated_images(8, (H, W), seed=6))
    out = tmp_path / "m.int8.onnx"
    args = ["export", "onnx", "--stage", "pipeline", "--pose-weights", str(pose_weights), "--reid-weights",
            str(hsk_weights), "--out", str(out), "--int8", "--calibrate", str(calib), "--max-px", "2",
            "--min-within", "0.5"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert re.search(r"INT8 pipeline -> .*cosine 0\.99\d+, top-10 agreement .*visible keypoints within", printed)
    proto = onnx.load(str(out))
    assert sum(n.op_type == "QuantizeLinear" for n in proto.graph.node) > 10
    # only the two networks are quantised: the decoding, segments and resampling stay float
    assert not [n for n in proto.graph.node if n.op_type in ("ArgMax", "GatherElements")
                and any(i.endswith("DequantizeLinear_Output") for i in n.input)]
    assert main([*args[:-4], "--min-cosine", "1.01"]) == 1
    assert "INT8 pipeline model refused" in capsys.readouterr().err


def test_openvino_int8_of_the_one_graph_is_what_embed_runs(pose_weights, tmp_path, capsys, one_torch_thread):
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    reid = _reid(tmp_path / "reid.pt", "rgb")  # no pose: the graph is the ReID network, NNCF runs in seconds
    calib = _write_images(tmp_path / "calib", generated_images(8, (H, W), seed=7))
    out = tmp_path / "m.int8.xml"
    assert main(["export", "onnx", "--stage", "pipeline", "--reid-weights", str(reid), "--out", str(out), "--int8",
                 "--calibrate", str(calib), "--runtime", "openvino"]) == 0
    assert "cached for `pamtri embed --runtime openvino`" in capsys.readouterr().out
    pipe = Pipeline.from_weights(None, reid, device="cpu", runtime="openvino")
    assert pipe.graph.path.endswith(".int8.xml")
    asked_fp32 = Pipeline.from_weights(None, reid, device="cpu", precision="fp32", runtime="openvino")
    assert asked_fp32.graph.path.endswith(".onnx")  # --precision fp32 gets the fp32 graph, not the INT8 one
    images = generated_images(4, (H, W), seed=8)
    fp32 = Pipeline.from_weights(None, reid, device="cpu", precision="fp32").embed(images)["features"]
    from pamtri.pipeline.quantize import mean_cosine
    assert mean_cosine(pipe.embed(images)["features"], fp32) > 0.99


def _pbtxt(text):
    """A protobuf text-format message as nested dicts (repeated fields: lists): enough of the grammar for a
    Triton config (no tritonclient here)."""
    tokens = re.findall(r'"[^"]*"|[{}\[\]:,]|[^\s{}\[\]:,]+', text)
    pos = 0

    def value():
        nonlocal pos
        tok = tokens[pos]
        pos += 1
        if tok == "{":
            return message("}")
        if tok == "[":
            items = []
            while tokens[pos] != "]":
                items.append(value())
                pos += tokens[pos] == ","
            pos += 1
            return items
        return tok[1:-1] if tok.startswith('"') else int(tok) if re.fullmatch(r"-?\d+", tok) else tok

    def message(end):
        nonlocal pos
        out = {}
        while pos < len(tokens) and tokens[pos] != end:
            key = tokens[pos]
            pos += 1
            pos += tokens[pos] == ":"
            out.setdefault(key, []).append(value())
        pos += 1
        return {k: v[0] if len(v) == 1 else v for k, v in out.items()}
    return message(None)


def test_triton_repository_matches_the_graph(pose_weights, hsk_weights, tmp_path, capsys, one_torch_thread):
    repo = tmp_path / "models"
    assert main(["export", "triton", "--pose-weights", str(pose_weights), "--reid-weights", str(hsk_weights),
                 "--out", str(repo), "--max-batch", "16"]) == 0
    assert "feature cosine min" in capsys.readouterr().out
    config = _pbtxt((repo / "pamtri" / "config.pbtxt").read_text())
    graph = onnx.load(str(repo / "pamtri" / "1" / "model.onnx"))
    assert config["name"] == "pamtri" and config["platform"] == "onnxruntime_onnx"
    assert config["max_batch_size"] == 16 and config["dynamic_batching"]["preferred_batch_size"] == [4, 8, 16]
    types = {onnx.TensorProto.UINT8: "TYPE_UINT8", onnx.TensorProto.FLOAT: "TYPE_FP32"}
    for kind, values in (("input", graph.graph.input), ("output", graph.graph.output)):
        entries = config[kind]  # a list of messages
        assert [e["name"] for e in entries] == [v.name for v in values]
        for e, v in zip(entries, values):
            t = v.type.tensor_type
            assert e["data_type"] == types[t.elem_type]
            assert e["dims"] == [d.dim_value for d in t.shape.dim][1:]  # the batch axis is max_batch_size's
    assert config["input"][0]["dims"] == [GH, GW, 3] and config["output"][0]["name"] == "embedding"
    assert config["input"][1]["name"] == "sizes" and config["input"][1]["dims"] == [2]
    assert main(["export", "triton", "--reid-weights", str(hsk_weights), "--pose-weights", str(pose_weights),
                 "--out", str(repo), "--name", "a/b"]) == 1


def test_deploy_doc_names_the_graph_as_it_is(pose_weights, hsk_weights):
    from pathlib import Path
    doc = (Path(__file__).parents[2] / "docs" / "deploy.md").read_text()
    for needed in ("pamtri export onnx --stage pipeline", "pamtri export triton", "trtexec", "--minShapes=images:",
                   "--int8", "--fp16", "onnxFile", "inferDims", "reidType", "BoxMOT", "tritonclient",
                   "config.pbtxt"):
        assert needed in doc, needed


def test_boxmot_and_deepstream_inputs(pose_weights, hsk_weights, tmp_path, one_torch_thread):
    """BoxMOT's backends feed float32 NCHW crops normalised with the ImageNet mean/std and read the first output;
    DeepStream's tracker ReID feeds netScaleFactor * (x - offsets) = raw 0-255 floats, NHWC, one output. Both send
    one tensor: the graphs without the 'sizes' input, exact for crops at the input's aspect."""
    import cv2
    pytest.importorskip("openvino")
    from pamtri.pipeline.deploy import export_checked
    from pamtri.pipeline.runtimes import OnnxNetwork
    frames = [np.ascontiguousarray(im[..., ::-1]) for im in generated_images(3, (2 * GH, 2 * GW), seed=9)]  # BGR
    crops = [cv2.cvtColor(cv2.resize(f, (GW, GH), interpolation=cv2.INTER_LINEAR), cv2.COLOR_BGR2RGB)
             for f in frames]
    want = Pipeline.from_weights(pose_weights, hsk_weights, device="cpu", precision="fp32").embed(crops)["features"]
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    mean, std = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
    boxmot = ((np.stack(crops).astype(np.float32) / 255.0 - mean) / std).transpose(0, 3, 1, 2)  # get_crops
    deepstream = np.stack(crops).astype(np.float32) * 1.0 - 0.0
    for layout, batch, extra in (("nchw-float", boxmot, {}), ("nhwc-float", deepstream, {"embedding_only": True})):
        extra = {**extra, "sizes": False}
        out = tmp_path / f"{layout}.onnx"
        report, parity = export_checked(pose_weights, hsk_weights, out, input_layout=layout, **extra)
        assert parity.cosine_min >= MIN_COSINE
        assert list(report.inputs["images"][1:]) == list(batch.shape[1:])
        assert list(report.inputs) == ["images"]
        assert (list(report.outputs) == ["embedding"]) == ("embedding_only" in extra)
        for runtime in ("onnxruntime", "openvino"):
            first = OnnxNetwork(out, runtime, "fp32").run({"images": np.ascontiguousarray(batch)})[0]
            assert ((first * want).sum(1) >= MIN_COSINE).all(), (layout, runtime)
