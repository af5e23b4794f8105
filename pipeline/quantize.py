"""INT8 export: post-training static quantisation with an accuracy guard, for ONNX Runtime (its quantiser, QDQ
ONNX) or OpenVINO (NNCF, an OpenVINO IR).

Calibration runs the fp32 ONNX graph on the inputs the network sees in two-stage inference (pose: the
normalised crops and their mirror images, as the flip test feeds them; ReID: the stacked RGB + pose channels
and keypoint vector built by ``Pipeline.reid_inputs`` from the fp32 pose stage). The guard runs both graphs on
other images than the calibration ones and refuses to write the INT8 model when it falls below the thresholds:
ReID: mean cosine to the fp32 features and top-10 agreement of the rankings among the guard images;
pose: the share of visible keypoints (fp32 confidence >= 0.5) decoded within 0.5 px (image pixels) of fp32.
Both graphs run on the runtime the model is for: the fp32 one in fp32, the INT8 one as ``--runtime`` runs it.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import platform
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pamtri.common.atomic import atomic_write_bytes
from pamtri.common.device import cpu_flags
from pamtri.common.errors import ConfigError, PamtriError
from pamtri.data.images import list_images, read_image
from pamtri.data.readers import read_split
from pamtri.pose.predict import PosePredictor
from pamtri.pose.weights import load as load_pose
from pamtri.reid.distance import pairwise_distance
from pamtri.reid.inputs import ReidInput
from pamtri.reid.metrics import metrics_from_features

from .export import NETWORK_SCOPES, export_pipeline, export_pose, export_reid, graph_metadata
from .infer import Pipeline, run_pose
from .runtimes import OnnxNetwork, int8_cache_path, openvino_core, pipeline_stage

log = logging.getLogger(__name__)

VISIBLE_CONFIDENCE = 0.5  # a keypoint counts as visible in the pose guard at this fp32 confidence or above


class Int8Refused(PamtriError):
    """The INT8 model falls below the accuracy guard's thresholds; nothing was written."""


@dataclass
class Thresholds:
    """The guard's minimums: ReID mean cosine and top-10 agreement; pose share of keypoints within ``max_px``."""
    cosine: float = 0.99
    top10: float = 0.95
    max_px: float = 0.5
    within: float = 0.95


@dataclass
class Int8Report:
    """What the guard measured on ``n_guard`` images (calibrated on ``n_calibration``); None: not this stage's."""
    path: str
    stage: str
    n_calibration: int
    n_guard: int
    thresholds: Thresholds
    cosine: float | None = None
    top10: float | None = None
    within: float | None = None
    failures: list[str] = field(default_factory=list)
    cached: str | None = None  # openvino: the copy in the cache ``--runtime openvino`` reads


def split_images(calibrate: str | os.PathLike, guard: str | os.PathLike | None = None) -> tuple[list[str], list[str]]:
    """(calibration image paths, guard image paths): the folders' images, or every 4th calibration image held
    out as the guard set when no ``guard`` folder is given; ConfigError when they overlap or one is empty."""

    def paths(folder):
        if not Path(folder).is_dir():
            raise ConfigError(f"{folder}: not a folder of images")
        return [str(Path(folder) / n) for n in list_images(folder, recursive=True)]
    calib = paths(calibrate)
    if guard is None:
        calib, held = [p for i, p in enumerate(calib) if i % 4 != 3], calib[3::4]
    else:
        held = paths(guard)
        shared = {os.path.realpath(p) for p in calib} & {os.path.realpath(p) for p in held}
        if shared:
            raise ConfigError(f"--guard {guard}: {len(shared)} images are also in --calibrate {calibrate}; the guard "
                              f"needs images disjoint from the calibration set")
    if not calib or len(held) < 2:
        raise ConfigError(f"--calibrate {calibrate}: need calibration images and at least 2 guard images "
                          f"(found {len(calib)} and {len(held)})")
    return calib, held


class _Feeds:
    """onnxruntime's CalibrationDataReader over a list of feed dicts."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self._it = iter(feeds)

    def get_next(self):
        return next(self._it, None)


def int8_scheme() -> tuple[str, bool]:
    """(activation type "uint8" / "int8", reduce_range) of onnxruntime INT8 on this CPU. x86: uint8 activations
    with int8 weights (U8S8): its int8 dot products (VPDPBUSD, VPMADDUBSW) multiply u8 by s8, and onnxruntime fuses
    DequantizeLinear -> Conv -> QuantizeLinear into QLinearConv on x86 only for u8 activations (with int8 ones it
    left 113 of DenseNet121's 120 convolutions in float, dequantising their weights on every call); 7-bit weights
    (reduce_range) without VNNI, where VPMADDUBSW's 16-bit sums can saturate. Elsewhere (ARM): int8 both."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return "int8", False
    return "uint8", not ({"avx512_vnni", "avx_vnni", "amx_int8"} & cpu_flags())


def shared_concat_scales(model) -> int:
    """Give every tensor a Concat joins (its inputs' DequantizeLinear, its output's QuantizeLinear, transitively:
    a DenseNet block's feature maps) one scale and zero point, covering the union of their calibrated ranges, in a
    QDQ ``onnx.ModelProto`` (in place) -> the number of groups. onnxruntime's QLinearConcat then copies its inputs
    instead of requantising each through a lookup table (15% of the DenseNet's INT8 time before)."""
    from onnx import numpy_helper

    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    parent: dict[tuple[str, str], tuple[str, str]] = {}

    def root(x):
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x
    for n in graph.node:
        ins = [producer.get(i) for i in n.input]
        outs = [q for q in consumers.get(n.output[0], []) if q.op_type == "QuantizeLinear"] if n.output else []
        if n.op_type != "Concat" or len(outs) != 1 or not all(d is not None and d.op_type == "DequantizeLinear"
                                                             for d in ins):
            continue
        for d in ins:
            parent[root(tuple(d.input[1:3]))] = root(tuple(outs[0].input[1:3]))
    groups: dict = {}
    for key in list(parent):
        groups.setdefault(root(key), []).append(key)
    inits = {i.name: i for i in graph.initializer}
    groups = [g for g in groups.values() if len(g) > 1]
    for members in groups:
        ranges = []
        for scale, zero in members:
            s, z = float(numpy_helper.to_array(inits[scale])), numpy_helper.to_array(inits[zero])
            info = np.iinfo(z.dtype)
            ranges.append(((info.min - int(z)) * s, (info.max - int(z)) * s))
        lo, hi = min(0.0, *(r[0] for r in ranges)), max(0.0, *(r[1] for r in ranges))
        scale = np.float32((hi - lo) / (info.max - info.min) or 1.0)
        zero = np.array(np.clip(round(info.min - lo / scale), info.min, info.max), z.dtype)
        for s_name, z_name in members:
            inits[s_name].CopyFrom(numpy_helper.from_array(np.array(scale, np.float32), s_name))
            inits[z_name].CopyFrom(numpy_helper.from_array(zero, z_name))
    return len(groups)


def _input_convolutions(model) -> list[str]:
    """Names of the Conv nodes of an ``onnx.ModelProto`` that read one of the graph's inputs directly."""
    inputs = {i.name for i in model.graph.input}
    return [n.name for n in model.graph.node if n.op_type == "Conv" and n.input[0] in inputs]


def quantize_onnx(fp32_path: str | os.PathLike, int8_path: str | os.PathLike, feeds: list[dict[str, np.ndarray]],
                  prefixes: tuple[str, ...] | None = None) -> None:
    """Static INT8 quantisation for onnxruntime's CPU kernels: QDQ, per-channel int8 weights, activations of
    :func:`int8_scheme` with min-max ranges from ``feeds``, on the graph after onnxruntime's pre-processing
    (constant folding, Identity nodes removed: an exported graph that shares one bias tensor between
    convolutions through Identity nodes kept all of them in float), with one scale per Concat group
    (:func:`shared_concat_scales`). The convolutions reading the graph's input directly stay in float (the pose
    network's first; the ReID network's is split by input group at export instead, ``reid.model.SplitInputConv``:
    one uint8 scale over RGB and 36 heatmap channels had taken the trained demo model's guard from cosine 0.9932 /
    top-10 0.955 to 0.9884 / 0.927). Symbolic shape inference is skipped (it fails on
    HRNet). ``prefixes``: quantise only the nodes whose names start with one of them (the one graph's two
    networks, not the steps between them); None: every node."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    activations, reduce_range = int8_scheme()
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantiser warns on the root logger about every pre-activation BatchNorm
    try:
        with tempfile.TemporaryDirectory(prefix="pamtri-int8-pre-") as tmp:
            pre = str(Path(tmp) / "pre.onnx")
            quant_pre_process(str(fp32_path), pre, skip_symbolic_shape=True)
            pre_model = onnx.load(pre, load_external_data=False)
            quantize_static(pre, str(int8_path), _Feeds(feeds), quant_format=QuantFormat.QDQ, per_channel=True,
                            reduce_range=reduce_range, weight_type=QuantType.QInt8,
                            nodes_to_quantize=_nodes_named(pre_model, prefixes),
                            nodes_to_exclude=_input_convolutions(pre_model),
                            activation_type=QuantType.QUInt8 if activations == "uint8" else QuantType.QInt8)
    finally:
        root.setLevel(level)
    model = onnx.load(str(int8_path))
    shared_concat_scales(model)
    atomic_write_bytes(int8_path, model.SerializeToString())


def quantize_openvino(fp32_path: str | os.PathLike, int8_path: str | os.PathLike,
                      feeds: list[dict[str, np.ndarray]], prefixes: tuple[str, ...] | None = None) -> None:
    """Static INT8 quantisation with NNCF (OpenVINO's default: symmetric int8 weights and activations, ranges
    from ``feeds``, fast bias correction) of the fp32 ONNX graph -> OpenVINO IR ``int8_path`` (.xml + .bin)."""
    if importlib.util.find_spec("nncf") is None or importlib.util.find_spec("openvino") is None:
        raise PamtriError("INT8 for --runtime openvino needs NNCF and OpenVINO: pip install 'pamtri[openvino]'")
    import nncf
    import openvino as ov

    logging.getLogger("nncf").setLevel(logging.WARNING)
    model = openvino_core().read_model(str(fp32_path))
    scope = {}
    if prefixes is not None:  # OpenVINO names its operations after the ONNX nodes they come from (+ a suffix)
        scope["ignored_scope"] = nncf.IgnoredScope(names=[op.get_friendly_name() for op in model.get_ordered_ops()
                                                          if not op.get_friendly_name().startswith(prefixes)],
                                                   validate=False)
    model = nncf.quantize(model, nncf.Dataset(feeds), subset_size=len(feeds), **scope)
    ov.save_model(model, str(int8_path), compress_to_fp16=False)


def quantize(runtime: str, fp32_path, int8_path, feeds: list[dict[str, np.ndarray]],
             prefixes: tuple[str, ...] | None = None) -> None:
    """INT8 ``int8_path`` from the fp32 ONNX graph with ``runtime``'s quantiser (quantize_onnx /
    quantize_openvino); ``prefixes``: quantise only the nodes whose names start so (None: all)."""
    (quantize_openvino if runtime == "openvino" else quantize_onnx)(fp32_path, int8_path, feeds, prefixes)


def _nodes_named(model, prefixes: tuple[str, ...] | None) -> list[str] | None:
    """The names of an ``onnx.ModelProto``'s nodes that start with one of ``prefixes`` (None: None, every node)."""
    if prefixes is None:
        return None
    return [n.name for n in model.graph.node if n.name.startswith(prefixes)]


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over rows of the cosine similarity of (N, D) ``a`` and ``b``."""
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    return float(np.mean((a * b).sum(1) / np.maximum(na * nb, 1e-12)))


def topk_agreement(a: np.ndarray, b: np.ndarray, k: int = 10) -> float:
    """Each row of (N, D) ``a`` / ``b`` as a query against the others (Euclidean): mean share of the top-k
    neighbours the two rankings have in common (k capped at N - 1)."""
    k = min(k, len(a) - 1)

    def top(f):
        d = ((f[:, None, :] - f[None, :, :]) ** 2).sum(-1)
        np.fill_diagonal(d, np.inf)
        return np.argsort(d, axis=1, kind="stable")[:, :k]
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(top(a), top(b))]))


def keypoints_within(a: np.ndarray, b: np.ndarray, max_px: float) -> float:
    """Share of the visible keypoints of (N, 36, 3) ``a`` (confidence >= VISIBLE_CONFIDENCE; all when none is)
    whose (x, y) in ``b`` lies within ``max_px`` pixels."""
    visible = a[..., 2] >= VISIBLE_CONFIDENCE
    if not visible.any():
        visible = np.ones_like(visible)
    dist = np.linalg.norm(a[..., :2] - b[..., :2], axis=-1)
    return float(np.mean(dist[visible] <= max_px))


def _batches(arrays: dict[str, np.ndarray], size: int = 8) -> list[dict[str, np.ndarray]]:
    n = len(next(iter(arrays.values())))
    return [{k: np.ascontiguousarray(v[i:i + size]) for k, v in arrays.items()} for i in range(0, n, size)]


def _pose_guard(weights, fp32_path, int8_path, calib, held, thresholds: Thresholds, report: Int8Report,
                runtime: str) -> None:
    """Calibrate the pose graph on crops (and their mirrors) of ``calib``; measure keypoints on ``held``."""


    model, (cfg, codec) = load_pose(weights)
    predictor = PosePredictor.from_config(model, cfg, codec, device="cpu", precision="fp32")
    crops = np.stack([predictor.crop(read_image(p))[0] for p in calib])
    quantize(runtime, fp32_path, int8_path, _batches({"image": np.concatenate([crops, crops[..., ::-1]])}))
    images = [read_image(p) for p in held]
    kps = {}
    for name, path, precision in (("fp32", fp32_path, "fp32"), ("int8", int8_path, "auto")):
        predictor.model = OnnxNetwork(path, runtime, precision)
        with torch.inference_mode():
            kps[name] = predictor.predict_arrays(images)[0]
    report.within = keypoints_within(kps["fp32"], kps["int8"], thresholds.max_px)
    if report.within < thresholds.within:
        report.failures.append(f"{100 * report.within:.1f}% of visible keypoints within {thresholds.max_px:g} px "
                               f"of fp32 < {100 * thresholds.within:g}%")


def _reid_feeds(pipe, paths: list[str]) -> dict[str, np.ndarray]:
    """The ReID graph's inputs for image files, built by the fp32 torch pipeline."""


    images = [read_image(p) for p in paths]
    with torch.inference_mode():
        pose = run_pose(pipe.predictor, images, pipe.grid) if pipe.needs_pose else None
        x, kv = pipe.reid_inputs(images, pose)
    return {"images": x.contiguous().numpy(), **({"keypoints": kv.numpy()} if kv is not None else {})}


def _reid_guard(weights, pose_weights, fp32_path, int8_path, calib, held, thresholds: Thresholds,
                report: Int8Report, runtime: str) -> None:
    """Calibrate the ReID graph on pipeline inputs of ``calib``; compare features on ``held``."""
    pipe = Pipeline.from_weights(pose_weights, weights, device="cpu", precision="fp32")
    quantize(runtime, fp32_path, int8_path, _batches(_reid_feeds(pipe, calib)))
    guard = _batches(_reid_feeds(pipe, held))
    feats = {}
    for name, path, precision in (("fp32", fp32_path, "fp32"), ("int8", int8_path, "auto")):
        net = OnnxNetwork(path, runtime, precision)
        feats[name] = np.concatenate([net.run(feed)[0] for feed in guard])
    report.cosine = mean_cosine(feats["fp32"], feats["int8"])
    report.top10 = topk_agreement(feats["fp32"], feats["int8"], 10)
    if report.cosine < thresholds.cosine:
        report.failures.append(f"cosine to fp32 {report.cosine:.4f} < {thresholds.cosine:g}")
    if report.top10 < thresholds.top10:
        report.failures.append(f"top-10 agreement {report.top10:.3f} < {thresholds.top10:g}")


def _pipeline_guard(weights, pose_weights, fp32_path, int8_path, calib, held, thresholds: Thresholds,
                    report: Int8Report, runtime: str) -> None:
    """Calibrate the one graph (only its two networks are quantised) on ``calib`` resized to its input; compare
    its features (cosine, top-10 agreement) and keypoints (the pose guard's share within ``max_px``) on
    ``held``."""
    fp32 = OnnxNetwork(fp32_path, runtime, "fp32")
    spec = ReidInput(*graph_metadata(fp32_path)["input_size_hw"])

    def feeds(paths):
        return _batches(spec.graph_feed([read_image(p) for p in paths], fp32.input_names))
    quantize(runtime, fp32_path, int8_path, feeds(calib), NETWORK_SCOPES)
    guard = feeds(held)
    outs = {}
    for name, net in (("fp32", fp32), ("int8", OnnxNetwork(int8_path, runtime, "auto"))):
        runs = [dict(zip(net.output_names, net.run(feed))) for feed in guard]
        outs[name] = {k: np.concatenate([r[k] for r in runs]) for k in ("embedding", "keypoints")}
    report.cosine = mean_cosine(outs["fp32"]["embedding"], outs["int8"]["embedding"])
    report.top10 = topk_agreement(outs["fp32"]["embedding"], outs["int8"]["embedding"], 10)
    if pose_weights:
        report.within = keypoints_within(outs["fp32"]["keypoints"], outs["int8"]["keypoints"], thresholds.max_px)
    within = f"share of keypoints within {thresholds.max_px:g} px"
    for measured, minimum, what in ((report.cosine, thresholds.cosine, "cosine to fp32"),
                                    (report.top10, thresholds.top10, "top-10 agreement"),
                                    (report.within, thresholds.within, within)):
        if measured is not None and measured < minimum:
            report.failures.append(f"{what} {measured:.4f} < {minimum:g}")


def export_int8(stage: str, weights: str | os.PathLike, out: str | os.PathLike, calibrate: str | os.PathLike,
                guard: str | os.PathLike | None = None, pose_weights: str | os.PathLike | None = None,
                thresholds: Thresholds | None = None, heads: bool = False, runtime: str = "onnxruntime",
                **export_kw) -> Int8Report:
    """Export ``stage``'s network to ONNX, quantise it to INT8 for ``runtime`` (onnxruntime: a QDQ .onnx;
    openvino: an IR .xml + .bin, also put in the cache ``--runtime openvino`` reads) on ``calibrate`` images
    and write it to ``out`` only when the guard on the ``guard`` images (default: every 4th calibration image,
    held out) passes; Int8Refused (nothing written) otherwise. ``heads``: the ReID graph with colour/type
    outputs."""
    if runtime not in ("onnxruntime", "openvino"):
        raise ConfigError(f"--runtime {runtime!r}: INT8 is for onnxruntime or openvino")
    if runtime == "openvino" and Path(out).suffix != ".xml":
        raise ConfigError(f"--out {out}: an OpenVINO INT8 model is an IR (NAME.xml + NAME.bin); give a .xml path")
    thresholds = thresholds or Thresholds()
    calib, held = split_images(calibrate, guard)
    report = Int8Report(str(out), stage, len(calib), len(held), thresholds)
    with tempfile.TemporaryDirectory(prefix="pamtri-int8-") as tmp:
        fp32_path = Path(tmp) / "fp32.onnx"
        int8_path = Path(tmp) / ("int8.xml" if runtime == "openvino" else "int8.onnx")
        if stage == "pose":
            export_pose(weights, fp32_path, **export_kw)
            _pose_guard(weights, fp32_path, int8_path, calib, held, thresholds, report, runtime)
        elif stage == "pipeline":
            export_pipeline(pose_weights, weights, fp32_path, split_stem=True, **export_kw)
            _pipeline_guard(weights, pose_weights, fp32_path, int8_path, calib, held, thresholds, report, runtime)
        else:
            export_reid(weights, fp32_path, heads=heads, split_stem=True, **export_kw)
            _reid_guard(weights, pose_weights, fp32_path, int8_path, calib, held, thresholds, report, runtime)
        if report.failures:
            raise Int8Refused(f"INT8 {stage} model refused, nothing written to {out}: {'; '.join(report.failures)} "
                              f"(on {len(held)} guard images; calibrated on {len(calib)} from {calibrate})")
        _write_model(int8_path, out)
        if runtime == "openvino":
            report.cached = str(_int8_cache(stage, weights, pose_weights, fp32_path, export_kw.get("flip_test")))
            _write_model(int8_path, report.cached)
    return report


def _int8_cache(stage: str, weights, pose_weights, fp32_path: Path, flip_test: bool | None) -> Path:
    """Where ``--runtime openvino`` looks for the INT8 IR of this export (``runtimes.int8_cache_path``)."""
    if stage != "pipeline":
        return int8_cache_path(stage, weights, _input_size(fp32_path))
    meta = graph_metadata(fp32_path)
    return int8_cache_path(pipeline_stage(pose_weights, meta.get("flip_test", True)), weights,
                           tuple(meta["input_size_hw"]))


def _write_model(model: Path, out: str | os.PathLike) -> None:
    """Copy the model file ``model`` (and, for an OpenVINO .xml, its .bin) to ``out`` atomically."""
    atomic_write_bytes(out, model.read_bytes())
    if model.suffix == ".xml":
        atomic_write_bytes(Path(out).with_suffix(".bin"), model.with_suffix(".bin").read_bytes())


def _input_size(onnx_path: Path) -> tuple[int, int]:
    """(H, W) of the first input of an ONNX graph with a fixed image size."""
    import onnx
    dims = onnx.load(str(onnx_path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    return int(dims[2].dim_value), int(dims[3].dim_value)


@dataclass
class RetrievalChange:
    """INT8 against fp32 on a labelled query / gallery set: each pipeline's mAP and rank-1, the mean cosine of
    the features and the top-10 agreement of the query -> gallery rankings."""
    queries: int
    gallery: int
    fp32_map: float
    int8_map: float
    fp32_rank1: float
    int8_rank1: float
    cosine: float
    top10: float


def _top10_agreement(query: dict[str, np.ndarray], gallery: dict[str, np.ndarray]) -> float:
    """Mean share of each query's 10 nearest gallery features that the fp32 and INT8 rankings share."""
    tops = [np.argsort(pairwise_distance(torch.from_numpy(query[k]), torch.from_numpy(gallery[k])).numpy(),
                       axis=1, kind="stable")[:, :10] for k in ("fp32", "int8")]
    return float(np.mean([len(set(a) & set(b)) / len(a) for a, b in zip(*tops)]))


def int8_retrieval(pose_weights, reid_weights, int8: str | os.PathLike | tuple, root: str | os.PathLike,
                   fmt: str = "auto", batch: int = 32, runtime: str = "onnxruntime") -> RetrievalChange:
    """INT8 against fp32 for the same checkpoints on ``runtime``, on the query and test splits of the data set at
    ``root``: mAP and rank-1 (cameras as the data set gives them), cosine, top-10 agreement. ``int8``: the one
    graph's INT8 model, or (pose INT8 graph, ReID INT8 graph) of the per-stage path; the fp32 side is the same
    path (one graph, or per-stage graphs) at fp32."""
    query, gallery = read_split(root, "query", fmt), read_split(root, "test", fmt)
    feats: dict[str, dict[str, np.ndarray]] = {"query": {}, "gallery": {}}
    scores = {}
    for name in ("fp32", "int8"):
        pipe = int8_or_fp32_pipeline(pose_weights, reid_weights, int8 if name == "int8" else None,
                                     isinstance(int8, tuple), runtime, batch)
        for split, records in (("query", query), ("gallery", gallery)):
            feats[split][name] = pipe.embed([r.path for r in records])["features"]
        scores[name] = metrics_from_features(
            feats["query"][name], feats["gallery"][name], np.array([r.vehicle_id for r in query]),
            np.array([r.vehicle_id for r in gallery]), np.array([r.camera_id for r in query]),
            np.array([r.camera_id for r in gallery]))
    cosine = mean_cosine(np.concatenate([feats[s]["fp32"] for s in feats]),
                         np.concatenate([feats[s]["int8"] for s in feats]))
    return RetrievalChange(len(query), len(gallery), scores["fp32"]["mAP"], scores["int8"]["mAP"],
                           float(scores["fp32"]["cmc"][0]), float(scores["int8"]["cmc"][0]), cosine,
                           _top10_agreement(feats["query"], feats["gallery"]))


def int8_or_fp32_pipeline(pose_weights, reid_weights, int8, per_stage: bool, runtime: str, batch: int,
                          precision: str = "fp32") -> Pipeline:
    """The ``precision`` pipeline on ``runtime`` (one graph, or per-stage graphs with ``per_stage``), with the INT8
    model(s) ``int8`` (a path, or (pose, ReID) paths) in place of its graph(s) when given."""
    pipe = Pipeline.from_weights(pose_weights, reid_weights, device="cpu", precision=precision, batch_size=batch,
                                 runtime=runtime, one_graph=not per_stage)
    if int8 is not None and per_stage:
        if int8[0] is not None:  # (None, ReID graph): a ReID model without pose inputs
            pipe.predictor.model = OnnxNetwork(int8[0], runtime, "auto")
        pipe.model = OnnxNetwork(int8[1], runtime, "auto", as_dict=True)
    elif int8 is not None:
        pipe.graph = OnnxNetwork(int8, runtime, "auto")
    return pipe
