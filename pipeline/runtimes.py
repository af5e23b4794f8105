"""The runtimes the two networks of ``Pipeline`` can run on: PyTorch eager, ONNX Runtime, OpenVINO.

Only the networks change: each is exported to ONNX once (``pipeline.export``), cached next to its weights (or in
a private per-user folder when that folder is read-only or open to others) under the weights' SHA-256, and
checked on every use (the weights' SHA-256 in its metadata, its own SHA-256; a graph that fails is exported
again, with a warning), then wrapped in :class:`OnnxNetwork`,
a module called like the torch network it stands in for. Cropping, the flip test, decoding, heatmap
resampling, segments and the keypoint vector stay the torch code they are for ``--runtime torch``.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
import os
import platform
import stat
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pamtri.common.atomic import atomic_write_bytes, atomic_write_text
from pamtri.common.checkpoint import file_sha256
from pamtri.common.errors import ConfigError, PamtriError

from .export import export_pipeline, export_pose, export_reid

log = logging.getLogger(__name__)

RUNTIMES = ("torch", "onnxruntime", "openvino")


def check_runtime(runtime: str) -> str:
    """``runtime`` if it is one of RUNTIMES and its package imports; ConfigError / PamtriError naming the fix."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"--runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
    if runtime == "torch":
        return runtime
    if importlib.util.find_spec(runtime) is None:
        extra = "openvino" if runtime == "openvino" else "export"
        raise PamtriError(f"--runtime {runtime} needs the {runtime!r} package: pip install 'pamtri[{extra}]'")
    return runtime


def _private(folder: Path) -> bool:
    """Whether ``folder`` is a directory of this user that no one else may write (no group / other write bit)."""
    try:
        st = os.stat(folder, follow_symlinks=False)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def user_cache_folder() -> Path:
    """This user's private folder for exported graphs: $XDG_CACHE_HOME/pamtri/onnx (default ~/.cache), mode 0700;
    PamtriError when it cannot be made private (never a predictable shared path such as /tmp/pamtri-onnx)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    folder = base / "pamtri" / "onnx"
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        if os.stat(folder, follow_symlinks=False).st_uid == os.getuid():
            os.chmod(folder, 0o700)
    except OSError as exc:
        raise PamtriError(f"{folder}: cannot create the private ONNX cache ({exc.strerror}); set XDG_CACHE_HOME to "
                          "a folder of yours") from None
    if not _private(folder):
        raise PamtriError(f"{folder}: the ONNX cache folder belongs to another user or others may write it; set "
                          "XDG_CACHE_HOME to a folder of yours")
    return folder


def _cache_path(stage: str, weights: str | os.PathLike, size_hw: tuple[int, int], suffix: str) -> Path:
    """Where a model derived from ``weights`` lives: .pamtri-onnx/ next to them when this user may write there and
    no one else may (else :func:`user_cache_folder`), named by the weights' SHA-256 and the input size (H, W)."""
    name = f"{Path(weights).name}.{stage}-{file_sha256(weights)[:16]}-{size_hw[0]}x{size_hw[1]}{suffix}"
    folder = Path(weights).resolve().parent / ".pamtri-onnx"
    if not folder.exists() and os.access(folder.parent, os.W_OK):
        try:
            folder.mkdir(mode=0o755)
        except OSError:
            pass
    if not (_private(folder) and os.access(folder, os.W_OK)):
        folder = user_cache_folder()
    return folder / name


WEIGHTS_KEY, GRAPH_KEY = "pamtri.weights_sha256", "pamtri.graph_sha256"
_PLACEHOLDER = "0" * 64


def stamp_graph(path: Path, weights_sha256: str) -> None:
    """Rewrite the graph at ``path`` (atomically) with the weights' SHA-256 in its metadata and the SHA-256 of its
    own bytes (taken with that entry's value all zeros)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    for key, value in ((WEIGHTS_KEY, weights_sha256), (GRAPH_KEY, _PLACEHOLDER)):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    data = proto.SerializeToString()
    atomic_write_bytes(path, data.replace(_PLACEHOLDER.encode(), hashlib.sha256(data).hexdigest().encode(), 1))


def graph_problem(path: Path, weights_sha256: str) -> str | None:
    """What is wrong with the cached graph ``path`` for weights of ``weights_sha256``: unreadable, not stamped,
    of other weights, bytes changed since it was stamped, or tensors in external files; None when it fits."""
    import onnx
    try:
        data = path.read_bytes()
        proto = onnx.load_from_string(data)
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and friends: any unreadable graph
        return f"cannot be read as an ONNX graph ({type(exc).__name__})"
    meta = {p.key: p.value for p in proto.metadata_props}
    if meta.get(WEIGHTS_KEY) != weights_sha256:
        return f"was not exported from these weights (its weights SHA-256 {meta.get(WEIGHTS_KEY, 'missing')[:16]})"
    stored = meta.get(GRAPH_KEY, "")
    if len(stored) != 64 or data.count(stored.encode()) != 1 or hashlib.sha256(
            data.replace(stored.encode(), _PLACEHOLDER.encode())).hexdigest() != stored:
        return "its bytes changed since it was exported (SHA-256 mismatch)"
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
        return "it refers to tensors in external files"
    return None


def int8_cache_path(stage: str, weights: str | os.PathLike, size_hw: tuple[int, int]) -> Path:
    """The OpenVINO INT8 IR (.xml + .bin) of one stage that ``pamtri export onnx --int8 --runtime openvino``
    writes once its guard passes, and ``--runtime openvino`` runs in place of the fp32 graph when present."""
    return _cache_path(stage, weights, size_hw, ".int8.xml")


def cached_onnx(stage: str, weights: str | os.PathLike, size_hw: tuple[int, int]) -> Path:
    """The ONNX file of one stage's network at ``size_hw`` (H, W) pixels, exported on first use; the ReID graph
    outputs feature + colour + type logits (``export_reid(heads=True)``)."""

    def export(path):
        log.info("exporting the %s network of %s to %s", stage, weights, path)
        if stage == "pose":
            export_pose(weights, path, size=size_hw)
        else:
            export_reid(weights, path, size=size_hw, heads=True)
    return _cached(_cache_path(stage, weights, size_hw, ".onnx"), file_sha256(weights), export)


def _cached(path: Path, sha: str, export) -> Path:
    """``path`` after ``export(path)`` wrote and :func:`stamp_graph` stamped it with ``sha``, unless a graph
    stamped so is there (one that fails :func:`graph_problem` is exported again, with a warning)."""
    if path.is_file() and (problem := graph_problem(path, sha)) is not None:
        log.warning("%s: %s; exporting it again", path, problem)
        path.unlink()
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        export(path)
        stamp_graph(path, sha)
    return path


GRAPH_FORMAT = 2  # in the one graph's cache name. 2: the input covers the pose network's input, and a 'sizes' input
#                  lets the pose crop keep each crop's aspect (graphs cached before fed the pose network a stretched,
#                  upsampled copy of the ReID input: cosine 0.83 to the torch path on the demo's crops)


def pipeline_stage(pose_weights: str | os.PathLike | None, flip_test: bool = True) -> str:
    """The cache name of the one-graph export (``pipeline.export.PipelineGraph``) of a ReID checkpoint with
    ``pose_weights`` (its SHA-256 in the name) and the flip test on or off, for :func:`_cache_path` /
    :func:`int8_cache_path`."""
    pose = file_sha256(pose_weights)[:16] if pose_weights else "nopose"
    return f"pipeline{GRAPH_FORMAT}-{pose}" + ("" if flip_test else "-noflip")


def _pipeline_sha256(pose_weights, reid_weights) -> str:
    """One SHA-256 for the pair of checkpoints a one-graph export comes from (its cache stamp)."""
    pose = file_sha256(pose_weights) if pose_weights else ""
    return hashlib.sha256((file_sha256(reid_weights) + pose).encode()).hexdigest()


def cached_pipeline_onnx(pose_weights: str | os.PathLike | None, reid_weights: str | os.PathLike,
                         size_hw: tuple[int, int], flip_test: bool = True) -> Path:
    """The one-graph ONNX file of both checkpoints at ``size_hw`` (H, W), exported on first use (checked against
    the torch module with onnxruntime) and stamped like the stage graphs (:func:`cached_onnx`)."""
    def export(path):
        log.info("exporting %s and %s as one graph to %s", pose_weights, reid_weights, path)
        export_pipeline(pose_weights, reid_weights, path, size=size_hw, flip_test=flip_test)
    return _cached(_cache_path(pipeline_stage(pose_weights, flip_test), reid_weights, size_hw, ".onnx"),
                   _pipeline_sha256(pose_weights, reid_weights), export)


def pipeline_network(pose_weights: str | os.PathLike | None, reid_weights: str | os.PathLike, runtime: str,
                     precision: str, size_hw: tuple[int, int], flip_test: bool = True,
                     device: str | torch.device = "cpu") -> OnnxNetwork:
    """The one graph of both checkpoints on ``runtime``: on openvino the guarded INT8 IR when ``pamtri export onnx
    --stage pipeline --int8 --runtime openvino`` wrote one and ``precision`` is not 'fp32', else the cached fp32
    graph."""
    path = (written_int8(runtime, precision, pipeline_stage(pose_weights, flip_test), reid_weights, size_hw)
            or cached_pipeline_onnx(pose_weights, reid_weights, size_hw, flip_test))
    return OnnxNetwork(path, runtime, precision, device=device)


class OnnxNetwork(nn.Module):
    """An ONNX graph on onnxruntime (CPU, or CUDA / TensorRT: ``onnxruntime_providers``) or OpenVINO (CPU),
    called like the torch network it replaces: float32 tensors in (None inputs dropped), float32 tensors out on
    the inputs' device; one output as a tensor, several (``as_dict``) as a dict keyed by the graph's output
    names."""

    def __init__(self, path: str | os.PathLike, runtime: str, precision: str = "fp32", as_dict: bool = False,
                 device: str | torch.device = "cpu", tensorrt: bool = False):
        super().__init__()
        self.path, self.runtime, self.as_dict = str(path), runtime, as_dict
        threads = torch.get_num_threads()
        if runtime == "onnxruntime":
            import onnxruntime as ort
            self.providers = onnxruntime_providers(ort.get_available_providers(), device, tensorrt)
            self.input_names, self.output_names, self._session = _onnxruntime_session(self.path, threads,
                                                                                      self.providers)
        elif runtime == "openvino":
            self.input_names, self.output_names, self._session = _openvino_model(self.path, threads, precision)
        else:
            raise ConfigError(f"--runtime {runtime!r}: an ONNX network runs on onnxruntime or openvino")

    def run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The graph's outputs for a feed of named float32 arrays."""
        return self._session(feed)

    def forward(self, *inputs: torch.Tensor | None):
        feed = {name: np.ascontiguousarray(t.detach().float().cpu().numpy())
                for name, t in zip(self.input_names, inputs) if t is not None}
        device = next(t.device for t in inputs if t is not None)
        outs = [torch.from_numpy(np.asarray(o, dtype=np.float32)).to(device) for o in self.run(feed)]
        return dict(zip(self.output_names, outs)) if self.as_dict else outs[0]


def onnxruntime_providers(available: list[str], device: str | torch.device = "cpu", tensorrt: bool = False
                          ) -> list[str]:
    """onnxruntime's execution providers for ``device``, best first: on CUDA, TensorRT (only when ``tensorrt``
    is asked for: onnxruntime-gpu lists it whether or not TensorRT itself is installed, and it builds an
    engine per input shape, minutes on first use) then CUDA, each when ``available`` (from
    ``onnxruntime.get_available_providers()``) offers it; CPU always, last."""
    chosen = []
    if torch.device(device).type == "cuda":
        wanted = (["TensorrtExecutionProvider"] if tensorrt else []) + ["CUDAExecutionProvider"]
        chosen = [p for p in wanted if p in available]
    return [*chosen, "CPUExecutionProvider"]


def _onnxruntime_session(path: str, threads: int, providers: list[str]):
    """(input names, output names, feed dict -> list of arrays) of an onnxruntime session on ``providers``."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(path, options, providers=providers)
    return ([i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()],
            lambda feed: session.run(None, feed))


@functools.cache
def openvino_core():
    """The process's one OpenVINO Core, kept until exit. Each Core's CPU plugin points the thread that creates it
    at an alternate signal stack (sigaltstack) of its own and, when the plugin is released, puts back the one it
    found and frees its own. Two Cores released in the order they were made (the pose and the ReID network of a
    Pipeline) leave that thread on freed memory, and the next signal with a Python handler (Ctrl-C, the SIGCHLD
    handler of torch's DataLoader, pytest-timeout's SIGALRM) kills the process with SIGSEGV (issue 15)."""
    import openvino as ov
    return ov.Core()


def openvino_default_precision() -> str:
    """'bf16' or 'fp32': what OpenVINO's CPU plugin runs a float graph at when not told (its
    INFERENCE_PRECISION_HINT: bf16 on CPUs with AVX512_BF16 or AMX)."""
    hint = str(openvino_core().get_property("CPU", "INFERENCE_PRECISION_HINT"))
    return "bf16" if "bf" in hint.lower() else "fp32"


def _openvino_model(path: str, threads: int, precision: str):
    """(input names, output names, feed dict -> list of arrays) of an OpenVINO CPU model; ``precision`` 'fp32'
    forces f32 (OpenVINO otherwise runs bf16 on CPUs with AVX512_BF16 or AMX), 'bf16' asks for bf16, anything else
    its default, except that an INT8 model (FakeQuantize operations) runs its float parts at f32."""
    core = openvino_core()
    config = {"INFERENCE_NUM_THREADS": threads}
    model = core.read_model(path)
    hint = {"fp32": "f32", "bf16": "bf16"}.get(precision)
    if hint is None and any(op.get_type_name() == "FakeQuantize" for op in model.get_ops()):
        # an INT8 model: its float parts (the one graph's decoding and resampling) at f32, not at the CPU's bf16
        # default, whose 8-bit mantissa moved 35% of a trained pose model's keypoints beyond 0.5 px (f32: 10%)
        hint = "f32"
    if hint:
        config["INFERENCE_PRECISION_HINT"] = hint
    compiled = core.compile_model(model, "CPU", config)
    inputs = [_port_name(i) for i in compiled.inputs]
    outputs = [_port_name(o) for o in compiled.outputs]

    def run(feed):
        result = compiled(feed)
        return [result[o] for o in compiled.outputs]
    return inputs, outputs, run


def _port_name(port) -> str:
    """The graph's own name of an OpenVINO input / output: a tensor that is also an intermediate result carries
    the exporter's node-path name ('/Concat_3_output_0') too, and ``get_any_name`` may give that one."""
    names = sorted(port.get_names(), key=lambda n: (n.startswith("/"), n))
    return names[0] if names else port.get_any_name()


def network_file(stage: str, weights: str | os.PathLike, size_hw: tuple[int, int], runtime: str,
                 precision: str = "auto") -> Path:
    """The model file ``runtime`` runs for one stage: on openvino the guarded INT8 IR when one was written
    (:func:`written_int8`), else the cached fp32 ONNX graph."""
    return written_int8(runtime, precision, stage, weights, size_hw) or cached_onnx(stage, weights, size_hw)


def written_int8(runtime: str, precision: str, stage: str, weights, size_hw: tuple[int, int]) -> Path | None:
    """The guarded INT8 IR of ``stage`` (``int8_cache_path``) that ``--runtime openvino`` runs in place of the
    fp32 graph, when one was written and ``precision`` is not 'fp32' (asking for fp32 gets the fp32 graph);
    None otherwise."""
    if runtime != "openvino" or precision == "fp32":
        return None
    int8 = int8_cache_path(stage, weights, size_hw)
    if not (int8.is_file() and int8.with_suffix(".bin").is_file()):
        return None
    log.info("--runtime openvino: the INT8 %s model %s", stage, int8)
    return int8


def onnx_networks(pose_weights, reid_weights, runtime: str, precision: str, pose_size_hw: tuple[int, int] | None,
                  reid_size_hw: tuple[int, int], device: str | torch.device = "cpu"
                  ) -> tuple[OnnxNetwork | None, OnnxNetwork]:
    """(pose network or None without pose weights, ReID network) on ``runtime`` for ``device``, from the cached
    model files."""
    pose = None
    if pose_weights:
        pose = OnnxNetwork(network_file("pose", pose_weights, pose_size_hw, runtime, precision), runtime,
                           precision, device=device)
    reid = OnnxNetwork(network_file("reid", reid_weights, reid_size_hw, runtime, precision), runtime, precision,
                       as_dict=True, device=device)
    return pose, reid


def cpu_name() -> str:
    """The CPU model name (/proc/cpuinfo's, else platform.processor())."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def record_path() -> Path:
    """Where ``pamtri bench`` records the fastest runtime of this machine: $PAMTRI_RUNTIME_RECORD, or
    pamtri/runtime.json in the user's cache folder ($XDG_CACHE_HOME, default ~/.cache)."""
    if os.environ.get("PAMTRI_RUNTIME_RECORD"):
        return Path(os.environ["PAMTRI_RUNTIME_RECORD"])
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "pamtri" / "runtime.json"


def fastest_runtime(rates: dict[str, float]) -> str:
    """The runtime with the highest images/s among the fp32/bf16 ones measured; torch unless another beats it."""
    best = "torch"
    for runtime, rate in rates.items():
        if runtime in RUNTIMES and rate > rates.get(best, 0.0):
            best = runtime
    return best


def record_fastest(rates: dict[str, float], cpu: str, path: str | os.PathLike | None = None) -> str:
    """Write {"runtime": fastest, "cpu": cpu, "images_per_s": rates} to the record -> the fastest runtime."""

    best = fastest_runtime(rates)
    path = Path(path or record_path())
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"runtime": best, "cpu": cpu, "images_per_s": rates}, indent=1))
    return best


def measured_runtime(cpu: str | None = None, path: str | os.PathLike | None = None) -> str:
    """The runtime ``pamtri bench`` (full, not --quick) recorded as fastest on this CPU model, when its package
    imports; torch when there is no record, it is for another CPU, or it cannot be read (``--runtime measured``)."""
    try:
        record = json.loads(Path(path or record_path()).read_text())
        runtime = str(record["runtime"])
        if record.get("cpu") != (cpu or cpu_name()) or runtime not in RUNTIMES:
            return "torch"
        return check_runtime(runtime)
    except (OSError, ValueError, KeyError, TypeError, PamtriError):
        return "torch"


AUTO_RULE = "auto is torch on every device (one predictable rule; --runtime measured follows `pamtri bench`'s record)"


def resolve_runtime(requested: str, device_type: str, compile: bool = False) -> tuple[str, str]:
    """(runtime, why) for ``--runtime requested``: 'auto' -> torch; 'measured' -> the runtime the last full
    ``pamtri bench`` recorded fastest on this CPU model (torch on a GPU, with --compile, or without a record);
    any other name as given. The reason is printed when a run starts, so a run says what it ran on and why."""
    if requested == "auto":
        return "torch", AUTO_RULE
    if requested == "measured":
        if device_type != "cpu" or compile:
            return "torch", "--runtime measured: torch (the record is for the CPU runtimes without --compile)"
        runtime = measured_runtime()
        return runtime, f"--runtime measured: {runtime} (the record at {record_path()})"
    return requested, f"--runtime {requested}"
