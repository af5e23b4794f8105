"""``pamtri export onnx --int8 --calibrate DIR``: static INT8 with an accuracy guard on held-out images."""
import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from pamtri.pipeline.cli import main  # noqa: E402
from pamtri.pipeline.quantize import keypoints_within, mean_cosine, split_images, topk_agreement  # noqa: E402
from tests.conftest import write_tiny_pose_checkpoint, write_tiny_reid_checkpoint  # noqa: E402


def _write_images(folder, images):
    import cv2
    folder.mkdir()
    for i, im in enumerate(images):
        cv2.imwrite(str(folder / f"{i:03d}.png"), im)
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """(calibration: 12 smooth random images, guard: 12 others, blank: 12 black images), 48x48 pixels."""
    import cv2
    root = tmp_path_factory.mktemp("int8")
    rng = np.random.default_rng(0)

    def smooth():
        return cv2.resize(rng.integers(0, 255, (6, 6, 3), dtype=np.uint8), (48, 48), interpolation=cv2.INTER_CUBIC)
    return (_write_images(root / "calib", [smooth() for _ in range(12)]),
            _write_images(root / "guard", [smooth() for _ in range(12)]),
            _write_images(root / "blank", [np.zeros((48, 48, 3), np.uint8) for _ in range(12)]))


@pytest.fixture(scope="module")
def reid_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("reid") / "reid.pt"
    write_tiny_reid_checkpoint(path, heatmaps=False, segments=False, keypoints=False, id_fc=64, attr_fc=32)
    return path


@pytest.fixture(scope="module")
def grey(tmp_path_factory):
    """12 blank images at the ImageNet mean colour: after normalisation the network sees zeros, so every range
    collected is the tiny one of the biases alone (black images no longer break onnxruntime's ranges: the
    convolution reading the input stays in float)."""
    return _write_images(tmp_path_factory.mktemp("grey") / "grey", [np.full((48, 48, 3), (104, 116, 124), np.uint8)
                                                                    for _ in range(12)])


def _int8(weights, out, calibrate, guard, *extra):
    return main(["export", "onnx", "--stage", "reid", "--weights", str(weights), "--out", str(out), "--int8",
                 "--calibrate", str(calibrate), "--guard", str(guard), *extra])


def test_a_calibration_on_blank_images_is_refused_and_writes_nothing(grey, folders, reid_weights, tmp_path, capsys,
                                                                     one_torch_thread):
    calib, guard, _ = folders
    assert _int8(reid_weights, tmp_path / "bad.onnx", grey, guard) == 1
    captured = capsys.readouterr()
    assert "guard: cosine to fp32 >= 0.99, top-10 agreement >= 0.95" in captured.out
    assert "INT8 reid model refused" in captured.err and "cosine to fp32" in captured.err
    assert not (tmp_path / "bad.onnx").exists()


def test_a_calibration_on_real_images_passes_and_writes_a_qdq_model(folders, reid_weights, tmp_path, capsys,
                                                                    one_torch_thread):
    import onnx
    calib, guard, _ = folders
    out = tmp_path / "int8.onnx"
    assert _int8(reid_weights, out, calib, guard) == 0  # measured: cosine 0.9996, top-10 agreement 0.99
    assert "INT8 reid ->" in capsys.readouterr().out
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_the_guard_set_must_be_disjoint_from_the_calibration_set(folders):
    calib, guard, _ = folders
    assert main(["export", "onnx", "--stage", "reid", "--weights", "x.pt", "--out", "y.onnx", "--int8",
                 "--calibrate", str(calib), "--guard", str(calib)]) == 1
    held_calib, held = split_images(calib)
    assert len(held_calib) == 9 and len(held) == 3 and not set(held_calib) & set(held)


def test_guard_measures():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20, 8)).astype(np.float32)
    assert mean_cosine(a, a) == pytest.approx(1.0) and mean_cosine(a, -a) == pytest.approx(-1.0)
    assert topk_agreement(a, a) == 1.0 and topk_agreement(a, rng.normal(size=(20, 8))) < 0.8
    kps = np.concatenate([rng.uniform(0, 50, (2, 36, 2)), np.full((2, 36, 1), 0.9)], -1)
    moved = kps.copy()
    moved[0, :9, 0] += 1.0  # a quarter of one image's keypoints moved by 1 px
    assert keypoints_within(kps, moved, 0.5) == pytest.approx(1 - 9 / 72)


@pytest.fixture(scope="module")
def pose_weights(tmp_path_factory):
    """hrnet_w18_small at 64x64, random weights."""
    return write_tiny_pose_checkpoint(tmp_path_factory.mktemp("pose") / "pose.pt")


def test_the_pose_guard_refuses_a_blank_calibration_and_passes_a_real_one(grey, folders, pose_weights, tmp_path,
                                                                           capsys, one_torch_thread):
    calib, guard, _ = folders
    base = ["export", "onnx", "--stage", "pose", "--weights", str(pose_weights), "--int8", "--guard", str(guard)]
    assert main([*base, "--out", str(tmp_path / "bad.onnx"), "--calibrate", str(grey)]) == 1
    assert "visible keypoints within 0.5 px of fp32 < 95%" in capsys.readouterr().err
    assert not (tmp_path / "bad.onnx").exists()
    # random weights give flat, fragile heatmaps: measured 82% within 0.5 px after a real calibration, 23% blank
    assert main([*base, "--out", str(tmp_path / "ok.onnx"), "--calibrate", str(calib), "--min-within", "0.7"]) == 0
    assert (tmp_path / "ok.onnx").stat().st_size > 0


def test_openvino_nncf_int8_passes_on_real_images_and_embed_runs_it(folders, reid_weights, tmp_path, capsys,
                                                                    one_torch_thread):
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    import openvino as ov

    from pamtri.pipeline.infer import Pipeline
    calib, guard, _ = folders
    out = tmp_path / "reid.int8.xml"
    assert _int8(reid_weights, out, calib, guard, "--runtime", "openvino") == 0  # measured: cosine 0.9997, 0.99
    printed = capsys.readouterr().out
    assert "INT8 reid ->" in printed and "cached for `pamtri embed --runtime openvino`" in printed
    assert out.with_suffix(".bin").stat().st_size > 0
    ops = {op.get_type_name() for op in ov.Core().read_model(str(out)).get_ops()}
    assert "FakeQuantize" in ops
    pipe = Pipeline.from_weights(None, reid_weights, device="cpu", runtime="openvino",
                                 one_graph=False)  # the per-stage graphs (the one graph: test_pipeline_graph.py)
    assert pipe.model.path.endswith(".int8.xml")  # the guarded INT8 model, not the fp32 graph
    asked_fp32 = Pipeline.from_weights(None, reid_weights, device="cpu", precision="fp32", runtime="openvino",
                                       one_graph=False)
    assert asked_fp32.model.path.endswith(".onnx")  # --precision fp32 gets the fp32 graph
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 255, (48, 48, 3), dtype=np.uint8) for _ in range(4)]
    fp32 = Pipeline.from_weights(None, reid_weights, device="cpu", precision="fp32", runtime="torch")
    assert mean_cosine(pipe.embed(images)["features"], fp32.embed(images)["features"]) > 0.99


def test_openvino_nncf_int8_refuses_a_blank_calibration(grey, folders, reid_weights, pose_weights, tmp_path, capsys,
                                                        one_torch_thread):
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    _, guard, _ = folders
    assert _int8(reid_weights, tmp_path / "bad.xml", grey, guard, "--runtime", "openvino") == 1
    assert "INT8 reid model refused" in capsys.readouterr().err  # measured: cosine 0.41, top-10 agreement 0.90
    assert not list(tmp_path.iterdir())
    base = ["export", "onnx", "--stage", "pose", "--weights", str(pose_weights), "--int8", "--guard", str(guard),
            "--runtime", "openvino", "--min-within", "0.7", "--out", str(tmp_path / "pose.xml")]
    assert main([*base, "--calibrate", str(grey)]) == 1  # measured: 37% within 0.5 px; 86% after a real one
    assert "visible keypoints within 0.5 px of fp32 < 70%" in capsys.readouterr().err
    assert not (tmp_path / "pose.xml").exists() and not (tmp_path / "pose.bin").exists()


def test_openvino_int8_needs_an_ir_path(folders, reid_weights, tmp_path, capsys):
    calib, guard, _ = folders
    assert _int8(reid_weights, tmp_path / "x.onnx", calib, guard, "--runtime", "openvino") == 1
    assert "give a .xml path" in capsys.readouterr().err


def test_openvino_int8_without_nncf_is_a_one_line_error(monkeypatch, tmp_path):
    import importlib.util

    from pamtri.common.errors import PamtriError
    from pamtri.pipeline.quantize import quantize_openvino
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nncf" else find_spec(name, *a))
    with pytest.raises(PamtriError, match=r"needs NNCF and OpenVINO: pip install 'pamtri\[openvino\]'"):
        quantize_openvino(tmp_path / "fp32.onnx", tmp_path / "int8.xml", [])


def _optimised_ops(path, tmp_path) -> dict:
    """Op type -> count in onnxruntime's optimised CPU graph of the model at ``path``."""
    from collections import Counter

    import onnx
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)


@pytest.mark.skipif(__import__("platform").machine().lower() not in ("x86_64", "amd64"), reason="x86 scheme")
def test_onnxruntime_runs_every_quantised_convolution_as_qlinearconv(folders, reid_weights, tmp_path, capsys,
                                                                     one_torch_thread):
    """The INT8 graph's convolutions run as onnxruntime's QLinearConv (u8 activations, s8 weights) except the one
    reading the graph's input (kept in float); with int8 activations on x86 they stayed float Convs fed by
    DequantizeLinear (0.62x fp32 in the bench), and Concat's inputs share one scale."""
    import onnx

    from pamtri.pipeline.quantize import int8_scheme
    calib, guard, _ = folders
    out = tmp_path / "int8.onnx"
    assert _int8(reid_weights, out, calib, guard) == 0
    assert int8_scheme()[0] == "uint8"
    fp32_convs = sum(n.op_type == "Conv" for n in onnx.load(str(out)).graph.node)
    ops = _optimised_ops(out, tmp_path)
    assert ops["Conv"] + ops.get("FusedConv", 0) == 1 and ops["QLinearConv"] == fp32_convs - 1 >= 5, ops


def test_shared_concat_scales_give_a_concat_group_the_union_of_its_ranges():
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from pamtri.pipeline.quantize import shared_concat_scales

    def qparams(name, scale, zero):
        return [numpy_helper.from_array(np.array(scale, np.float32), f"{name}_s"),
                numpy_helper.from_array(np.array(zero, np.uint8), f"{name}_z")]
    nodes = [helper.make_node("QuantizeLinear", [x, f"{x}_s", f"{x}_z"], [f"{x}_q"]) for x in ("a", "b")]
    nodes += [helper.make_node("DequantizeLinear", [f"{x}_q", f"{x}_s", f"{x}_z"], [f"{x}_d"]) for x in ("a", "b")]
    nodes += [helper.make_node("Concat", ["a_d", "b_d"], ["c"], axis=1),
              helper.make_node("QuantizeLinear", ["c", "c_s", "c_z"], ["c_q"])]
    inits = qparams("a", 0.01, 0) + qparams("b", 0.02, 128) + qparams("c", 0.02, 100)  # [0, 2.55], [-2.56, 2.54], ...
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, 2]) for x in "ab"],
                              [helper.make_tensor_value_info("c_q", TensorProto.UINT8, [1, 4])], inits)
    model = helper.make_model(graph)
    assert shared_concat_scales(model) == 1
    got = {i.name: float(numpy_helper.to_array(i)) for i in model.graph.initializer}
    lo, hi = -2.56, max(2.55, 2.54, 155 * 0.02)  # the union of the three ranges
    assert got["a_s"] == got["b_s"] == got["c_s"] == pytest.approx((hi - lo) / 255)
    assert got["a_z"] == got["b_z"] == got["c_z"] == round(-lo / ((hi - lo) / 255))
    onnx.checker.check_model(model)


@pytest.mark.parametrize("form", ["per-stage", "one graph"])
def test_int8_retrieval_compares_the_int8_model_with_fp32(form, folders, reid_weights, tmp_path, one_torch_thread):
    """The retrieval change runs the INT8 model it is given (features close to fp32 but not equal to them) on the
    labelled query / test splits; the per-stage form once ran the fp32 one graph on both sides."""
    from pamtri.pipeline.quantize import Thresholds, export_int8, int8_retrieval
    from tests.conftest import write_tiny_synth_tree
    calib, guard, _ = folders
    root = write_tiny_synth_tree(tmp_path / "data", ids=8)
    stage, out = ("reid", tmp_path / "reid.int8.onnx") if form == "per-stage" else ("pipeline", tmp_path / "g.onnx")
    measure = Thresholds(cosine=-1.0, top10=0.0, within=0.0)  # measured, not enforced
    report = export_int8(stage, reid_weights, out, calib, guard, thresholds=measure, heads=True)
    change = int8_retrieval(None, reid_weights, (None, report.path) if form == "per-stage" else report.path, root)
    assert change.queries > 0 and change.gallery > 0
    assert 0.9 < change.cosine < 1 - 1e-6  # the INT8 model ran (the same fp32 graph twice gives 1)
    assert 0.0 < change.fp32_map <= 1.0 and 0.0 < change.int8_map <= 1.0
    assert 0.0 <= change.top10 <= 1.0


def test_the_bench_measures_int8_on_a_demo_run(folders, tmp_path, one_torch_thread):
    """``inference_int8_trained`` (per-stage graphs) and ``inference_graph_int8_trained`` (the one graph, each INT8
    runtime) on a demo run's layout; the demo run's own folders get no INT8 model (the bench copies the weights)."""
    from pamtri.pipeline.bench.inference import int8_trained_row, latest_demo_run
    from tests.conftest import write_tiny_synth_tree
    run = tmp_path / "runs" / "20260101-000000"
    (run / "pose").mkdir(parents=True)
    (run / "reid_pose").mkdir()
    write_tiny_pose_checkpoint(run / "pose" / "best.pt")
    write_tiny_reid_checkpoint(run / "reid_pose" / "best.pt", heatmaps=True, segments=False, keypoints=True,
                               id_fc=64, attr_fc=32)
    write_tiny_synth_tree(run / "data", ids=8)
    assert latest_demo_run(tmp_path / "runs") == run
    rows = {r.name: r for r in int8_trained_row(run, calibration=8, guard=8, runtimes=("onnxruntime",))}
    assert set(rows) == {"inference_int8_trained", "inference_graph_int8_trained"}
    for row in rows.values():
        assert row.unit == "mAP" and 0.0 < row.ours <= 1.0 and 0.0 < row.baseline <= 1.0
        assert "guard cosine" in row.note and "queries x" in row.note
    assert "onnxruntime QDQ" in rows["inference_graph_int8_trained"].note
    assert not [p for p in run.rglob("*") if ".int8." in p.name or p.name == ".pamtri-onnx"]
