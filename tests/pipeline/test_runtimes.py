"""``--runtime``: both networks on onnxruntime / OpenVINO give the torch path's features (tiny models, fp32): the
per-stage graphs (``one_graph=False``) on images of any size, the one graph (the default) on images at its input
size (other sizes: tests/pipeline/test_pipeline_graph.py)."""
import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from pamtri.common.errors import ConfigError  # noqa: E402
from pamtri.pipeline.infer import Pipeline  # noqa: E402
from tests.conftest import write_tiny_pose_checkpoint, write_tiny_reid_checkpoint  # noqa: E402

# fp32 on both sides: the runtimes differ from torch by float rounding (~1e-6 on these features)
FEATURE_ATOL = 1e-4


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """(pose checkpoint: hrnet_w18_small at 64x64, ReID checkpoint: heatmaps + segments + keypoint vector)."""
    folder = tmp_path_factory.mktemp("weights")
    write_tiny_pose_checkpoint(folder / "pose.pt")
    write_tiny_reid_checkpoint(folder / "reid.pt", heatmaps=True, segments=True, keypoints=True, id_fc=64,
                               attr_fc=32)
    return folder / "pose.pt", folder / "reid.pt"


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (40 + 7 * i, 60 - 3 * i, 3), dtype=np.uint8) for i in range(5)]


def _embed(weights, images, runtime, one_graph=False):
    pipe = Pipeline.from_weights(*weights, device="cpu", precision="fp32", batch_size=3, runtime=runtime,
                                 one_graph=one_graph)
    return pipe.embed(images)


def _assert_same(got, want):
    np.testing.assert_allclose(got["keypoints"], want["keypoints"], atol=1e-3)
    np.testing.assert_allclose(got["features"], want["features"], atol=FEATURE_ATOL)
    np.testing.assert_array_equal(got["color"], want["color"])
    np.testing.assert_array_equal(got["type"], want["type"])


def test_onnxruntime_features_equal_the_torch_path(weights, images, one_torch_thread):
    want = _embed(weights, images, "torch")
    got = _embed(weights, images, "onnxruntime")
    assert got["features"].shape == want["features"].shape == (5, 64)
    _assert_same(got, want)


def test_openvino_features_equal_the_torch_path(weights, images, one_torch_thread):
    pytest.importorskip("openvino")
    _assert_same(_embed(weights, images, "openvino"), _embed(weights, images, "torch"))


# A fresh process: builds an OpenVINO pipeline (pose + ReID network), releases it, then takes a signal with a
# Python handler, as Ctrl-C, torch DataLoader's SIGCHLD or pytest-timeout's SIGALRM would.
_SIGNAL_AFTER_OPENVINO = """
import gc, os, signal, sys
import numpy as np
from pamtri.pipeline.infer import Pipeline
pipe = Pipeline.from_weights(sys.argv[1], sys.argv[2], device="cpu", precision="fp32", batch_size=2,
                             runtime="openvino")
pipe.embed([np.zeros((40, 60, 3), np.uint8)])
del pipe
gc.collect()
signal.signal(signal.SIGUSR1, lambda *_: print("handled"))
os.kill(os.getpid(), signal.SIGUSR1)
"""


def test_a_signal_after_an_openvino_pipeline_is_released_is_handled(weights):
    """Issue 15: each OpenVINO Core's CPU plugin swaps the thread's sigaltstack and puts the old one back when
    released; one Core per network left the main thread on a freed signal stack (rc -11 on the next signal)."""
    pytest.importorskip("openvino")
    import os
    import subprocess
    import sys
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", _SIGNAL_AFTER_OPENVINO, *map(str, weights)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert (proc.returncode, proc.stdout.split()[-1:]) == (0, ["handled"]), proc.stderr[-2000:]


def test_the_onnx_files_are_exported_once_per_weights(weights, images, one_torch_thread, monkeypatch):
    from pamtri.pipeline import export
    _embed(weights, images[:1], "onnxruntime")
    cached = sorted(p.name for p in (weights[0].parent / ".pamtri-onnx").iterdir())
    assert [n.split("-")[0] for n in cached if ".pipeline" not in n] == ["pose.pt.pose", "reid.pt.reid"]

    def fail(*args, **kwargs):
        raise AssertionError("exported again")
    monkeypatch.setattr(export, "export_pose", fail)
    monkeypatch.setattr(export, "export_reid", fail)
    _embed(weights, images[:1], "onnxruntime")  # the cached files, no export


def test_runtime_options_that_cannot_work_are_one_line_errors(weights):
    with pytest.raises(ConfigError, match="--compile applies to --runtime torch only"):
        Pipeline.from_weights(*weights, device="cpu", runtime="onnxruntime", compile=True)
    with pytest.raises(ConfigError, match="--runtime 'tensorflow'"):
        Pipeline.from_weights(*weights, device="cpu", runtime="tensorflow")


def test_embed_command_takes_the_runtime(weights, images, tmp_path, one_torch_thread):
    import cv2

    from pamtri.pipeline.cli import main
    (tmp_path / "img").mkdir()
    for i, im in enumerate(images[:3]):
        cv2.imwrite(str(tmp_path / "img" / f"{i}.png"), cv2.resize(im[..., ::-1], (64, 64)))
    outs = {}
    # onnxruntime: the one graph; crops at its input size (64 x 64: the ReID input, 32 x 32, widened to the pose
    # network's) give the torch path's features to float rounding
    for runtime in ("torch", "onnxruntime"):
        outs[runtime] = tmp_path / f"{runtime}.npz"
        assert main(["embed", "--pose-weights", str(weights[0]), "--reid-weights", str(weights[1]), "--images",
                     str(tmp_path / "img"), "--out", str(outs[runtime]), "--precision", "fp32",
                     "--runtime", runtime]) == 0
    np.testing.assert_allclose(np.load(outs["onnxruntime"])["features"], np.load(outs["torch"])["features"],
                               atol=FEATURE_ATOL)


def test_the_measured_runtime_is_the_recorded_fastest_never_slower_than_torch(tmp_path):
    from pamtri.pipeline.runtimes import fastest_runtime, measured_runtime, record_fastest
    assert fastest_runtime({"torch": 10.0, "onnxruntime": 9.0}) == "torch"
    assert fastest_runtime({"torch": 10.0, "onnxruntime": 9.0, "openvino": 12.0}) == "openvino"
    record = tmp_path / "runtime.json"
    assert measured_runtime("cpu A", record) == "torch"  # no record yet
    assert record_fastest({"torch": 10.0, "onnxruntime": 11.0}, "cpu A", record) == "onnxruntime"
    assert measured_runtime("cpu A", record) == "onnxruntime"
    assert measured_runtime("cpu B", record) == "torch"  # measured on another CPU model
    record.write_text("{not json")
    assert measured_runtime("cpu A", record) == "torch"


@pytest.mark.timeout(1500)  # four INT8 quantisations (per-stage and one graph; onnxruntime and NNCF)
def test_bench_runtime_rows_and_the_recorded_default(weights, tmp_path, monkeypatch, one_torch_thread):
    """The bench's own rows on tiny models: each runtime vs the torch path on the same images and batch; the
    runtime recorded for `--runtime auto` is one whose measured rate is at least torch's."""
    import json

    from pamtri.pipeline.bench.harness import timed
    from pamtri.pipeline.bench.inference import runtime_rows
    from pamtri.pose.weights import load as load_pose
    from pamtri.reid.weights import load as load_reid
    monkeypatch.setenv("PAMTRI_RUNTIME_RECORD", str(tmp_path / "runtime.json"))
    pose, (_, _) = load_pose(weights[0])
    reid, _ = load_reid(weights[1])
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(4)]
    torch_pipe = Pipeline.from_weights(*weights, device="cpu", batch_size=4, runtime="torch")
    torch_rate = 4 / timed(lambda: torch_pipe.embed_arrays(images), repeat=2)
    bounds = {"fp32": 0.01, "bf16": 0.005, "int8": 0.002}  # seconds per image: what attainable_share reads against
    rows = {r.name: r for r in runtime_rows(pose, reid, images, torch_rate, record=True, size=64, bounds=bounds)}
    per_stage = {"inference_onnxruntime"} | ({"inference_openvino"} if _installed("openvino") else set())
    graph = {n.replace("inference_", "inference_graph_") for n in per_stage}
    assert set(rows) == per_stage | graph | {"inference_int8", "inference_graph_int8"}
    for name in per_stage:
        assert rows[name].baseline == torch_rate and rows[name].ratio == pytest.approx(rows[name].ours / torch_rate)
        # the one graph against the same runtime's per-stage graphs, and against torch eager in its note
        assert rows[name.replace("inference_", "inference_graph_")].baseline == rows[name].ours
        assert "x torch eager" in rows[name.replace("inference_", "inference_graph_")].note
    for name in ("inference_int8", "inference_graph_int8"):
        assert "cosine" in rows[name].note and "top-10 agreement" in rows[name].note
    from pamtri.pipeline.bench.inference import runtime_precision
    for name, row in rows.items():
        runtime = name.rsplit("_", 1)[1]
        precision = "int8" if runtime == "int8" else runtime_precision(runtime)
        assert row.attainable_share == pytest.approx(row.ours * bounds[precision])
        assert f"per-layer {precision} bound" in row.note
    recorded = json.loads((tmp_path / "runtime.json").read_text())
    rates = recorded["images_per_s"]
    assert rates[recorded["runtime"]] >= rates["torch"] == torch_rate
    from pamtri.pipeline.runtimes import measured_runtime
    assert measured_runtime() == recorded["runtime"]


def _installed(name):
    import importlib.util
    return importlib.util.find_spec(name) is not None


def test_runtime_measured_follows_the_record_of_this_cpu_and_auto_never_does(weights, tmp_path, monkeypatch):
    from pamtri.pipeline.runtimes import OnnxNetwork, cpu_name, record_fastest
    monkeypatch.setenv("PAMTRI_RUNTIME_RECORD", str(tmp_path / "runtime.json"))
    assert Pipeline.from_weights(*weights, device="cpu", runtime="measured").graph is None
    record_fastest({"torch": 1.0, "onnxruntime": 2.0}, cpu_name())
    pipe = Pipeline.from_weights(*weights, device="cpu", runtime="measured")
    assert isinstance(pipe.graph, OnnxNetwork) and pipe.graph.runtime == "onnxruntime"  # the one graph
    # auto is one rule a user can predict: the machine's benchmark history does not change it
    assert Pipeline.from_weights(*weights, device="cpu", runtime="auto").graph is None


def test_the_runtime_rule_is_stated_for_each_choice():
    from pamtri.pipeline.runtimes import resolve_runtime
    assert resolve_runtime("auto", "cpu") == ("torch", resolve_runtime("auto", "cuda")[1])
    assert resolve_runtime("measured", "cuda")[0] == "torch"
    assert resolve_runtime("measured", "cpu", compile=True)[0] == "torch"
    assert resolve_runtime("openvino", "cpu") == ("openvino", "--runtime openvino")


def test_onnxruntime_providers_follow_the_device_and_what_onnxruntime_offers():
    from pamtri.pipeline.runtimes import onnxruntime_providers
    gpu = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert onnxruntime_providers(gpu, "cpu") == ["CPUExecutionProvider"]
    assert onnxruntime_providers(gpu, "cpu", tensorrt=True) == ["CPUExecutionProvider"]
    assert onnxruntime_providers(gpu, "cuda") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert onnxruntime_providers(gpu, "cuda:0", tensorrt=True) == gpu
    assert onnxruntime_providers(["CPUExecutionProvider"], "cuda", tensorrt=True) == ["CPUExecutionProvider"]


def test_the_cpu_path_keeps_the_cpu_provider_when_a_gpu_build_is_installed(weights, images, monkeypatch,
                                                                          one_torch_thread):
    """onnxruntime-gpu offering CUDA changes nothing for --device cpu: same providers, same features."""
    import onnxruntime as ort
    want = _embed(weights, images[:2], "onnxruntime")
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    pipe = Pipeline.from_weights(*weights, device="cpu", precision="fp32", batch_size=3, runtime="onnxruntime",
                                 one_graph=False)
    assert pipe.model.providers == pipe.predictor.model.providers == ["CPUExecutionProvider"]
    np.testing.assert_array_equal(pipe.embed(images[:2])["features"], want["features"])
    graph = Pipeline.from_weights(*weights, device="cpu", precision="fp32", runtime="onnxruntime").graph
    assert graph.providers == ["CPUExecutionProvider"]


def test_the_bench_has_no_cuda_rows_without_a_gpu(monkeypatch):
    import torch

    from pamtri.pipeline.bench.inference import cuda_rows
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cuda_rows("pose.pt", "reid.pt", [], 1.0) == []
