"""The one deployable graph (``pipeline.export.PipelineGraph``): its parity with ``Pipeline.embed`` and a Triton
model repository around it (docs/deploy.md).

Parity: the graph runs on onnxruntime (or OpenVINO) in fp32 on generated vehicle crops (``pipeline.synth``)
resized to the input size as ``pamtri embed`` resizes them; ``Pipeline.embed`` (PyTorch, fp32) runs on the same
crops; the features must agree within a cosine of ``MIN_COSINE`` for every image, else the export is an error and
nothing is written.
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pamtri.common.atomic import atomic_write_bytes, atomic_write_text
from pamtri.common.errors import ConfigError

from .export import ExportMismatchError, ExportReport, export_pipeline, graph_metadata, layout_input
from .infer import Pipeline
from .runtimes import OnnxNetwork
from .synth.render import render_sample

MIN_COSINE = 0.999
PARITY_IMAGES = 8


@dataclass
class Parity:
    """The graph against ``Pipeline.embed`` on ``n`` images: cosine of the features (lowest, mean), the largest
    keypoint distance in pixels among keypoints of confidence >= 0.5 (all when none is; None: the model takes no
    pose), the share of colour / type predictions that agree (None: no such head) and the share of all keypoints
    within half a pixel (a keypoint whose heatmap has two near-equal peaks may decode to the other one)."""
    n: int
    cosine_min: float
    cosine_mean: float
    keypoint_px: float | None
    heads_agree: float | None
    keypoints_within: float | None = None


def generated_images(n: int, size_hw: tuple[int, int], seed: int = 0) -> list[np.ndarray]:
    """``n`` generated vehicle crops (uint8 RGB) resized to ``size_hw`` (H, W) with OpenCV bilinear, no padding:
    what a caller feeds the one graph."""
    h, w = size_hw
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        bgr = render_sample(rng, size=max(h, w))[0]
        out.append(cv2.resize(np.ascontiguousarray(bgr[..., ::-1]), (w, h), interpolation=cv2.INTER_LINEAR))
    return out


def pipeline_parity(graph_path: str | os.PathLike, pose_weights, reid_weights, images: list[np.ndarray] | None = None,
                    runtime: str = "onnxruntime", flip_test: bool | None = None) -> Parity:
    """Run the graph at ``graph_path`` (fp32 on ``runtime``) and ``Pipeline.embed`` (PyTorch fp32, CPU) on
    ``images`` (default: :func:`generated_images` at the graph's input size) and compare them."""
    net = OnnxNetwork(graph_path, runtime, "fp32")
    pipe = Pipeline.from_weights(pose_weights, reid_weights, device="cpu", precision="fp32", flip_test=flip_test,
                                 runtime="torch")
    meta = graph_metadata(graph_path)
    h, w = meta["input_size_hw"]
    reid_h, reid_w = meta.get("reid_input_size_hw", (h, w))  # the ReID network's own input
    pipe.input = dataclasses.replace(pipe.input, height=reid_h, width=reid_w)
    pipe.height, pipe.width = reid_h, reid_w
    images = images if images is not None else generated_images(PARITY_IMAGES, (h, w))
    want = pipe.embed_arrays(images)
    layout = meta.get("input_layout_option", "nhwc-uint8")
    feed = dataclasses.replace(pipe.input, height=h, width=w).graph_feed(images, net.input_names)
    feed["images"] = layout_input(feed["images"], layout)
    got = dict(zip(net.output_names, net.run(feed)))
    a, b = want["features"], got["embedding"]
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    px = within = None
    if pipe.needs_pose and "keypoints" in got:
        sure = want["keypoints"][..., 2] >= 0.5
        dist = np.linalg.norm(want["keypoints"][..., :2] - got["keypoints"][..., :2], axis=-1)
        px = float(dist[sure].max() if sure.any() else dist.max())
        within = float(np.mean(dist <= 0.5))
    heads = [h for h in ("color", "type") if h in got]
    agree = float(np.mean([np.mean(got[h].argmax(1) == want[h]) for h in heads])) if heads else None
    return Parity(len(images), float(cos.min()), float(cos.mean()), px, agree, within)




def export_checked(pose_weights, reid_weights, out: str | os.PathLike, min_cosine: float = MIN_COSINE,
                   **export_kw) -> tuple[ExportReport, Parity | None]:
    """``export_pipeline`` to ``out`` with the parity check (when ``check``): ExportMismatchError (nothing written)
    when a feature's cosine to ``Pipeline.embed``'s is below ``min_cosine``."""
    check = export_kw.get("check", True)
    with tempfile.TemporaryDirectory(prefix="pamtri-graph-") as tmp:
        path = Path(tmp) / "graph.onnx"
        report = export_pipeline(pose_weights, reid_weights, path, **export_kw)
        parity = None
        if report.max_abs_diff is not None and check:
            parity = pipeline_parity(path, pose_weights, reid_weights, flip_test=export_kw.get("flip_test"))
            if not parity.cosine_min >= min_cosine:
                raise ExportMismatchError(f"the one graph's features differ from Pipeline.embed's: cosine "
                                          f"{parity.cosine_min:.5f} < {min_cosine:g} on {parity.n} generated "
                                          f"images; nothing written to {out}")
        atomic_write_bytes(out, path.read_bytes())
    return dataclasses.replace(report, path=str(out)), parity


TRITON_TYPES = {1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 6: "TYPE_INT32", 7: "TYPE_INT64", 10: "TYPE_FP16"}


def triton_config(name: str, graph_path: str | os.PathLike, max_batch: int = 32) -> str:
    """config.pbtxt (protobuf text) of a Triton model ``name`` serving the ONNX graph with the onnxruntime
    backend and dynamic batching; inputs / outputs named, typed and shaped as the graph's (without the batch
    axis, which ``max_batch_size`` stands for)."""
    import onnx
    proto = onnx.load(str(graph_path), load_external_data=False)

    def tensors(values, kind):
        items = []
        for v in values:
            t = v.type.tensor_type
            dims = [d.dim_value for d in t.shape.dim][1:]
            if not all(dims):
                raise ConfigError(f"{graph_path}: {kind} {v.name!r} has a dynamic axis besides the batch axis")
            items.append(f'  {{\n    name: "{v.name}"\n    data_type: {TRITON_TYPES[t.elem_type]}\n'
                         f'    dims: [ {", ".join(map(str, dims))} ]\n  }}')
        return f"{kind} [\n" + ",\n".join(items) + "\n]\n"
    preferred = sorted({b for b in (max_batch // 4, max_batch // 2, max_batch) if b >= 1})
    return (f'name: "{name}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: {int(max_batch)}\n'
            + tensors(proto.graph.input, "input") + tensors(proto.graph.output, "output")
            + f"dynamic_batching {{\n  preferred_batch_size: [ {', '.join(map(str, preferred))} ]\n"
              f"  max_queue_delay_microseconds: 2000\n}}\n"
            + 'instance_group [\n  {\n    count: 1\n    kind: KIND_CPU\n  }\n]\n')


def write_triton_repository(pose_weights, reid_weights, repository: str | os.PathLike, name: str = "pamtri",
                            max_batch: int = 32, **export_kw) -> tuple[Path, Parity | None]:
    """A Triton model repository: ``repository``/``name``/config.pbtxt and ``name``/1/model.onnx (the one graph,
    parity-checked as ``export_checked``) -> (the model folder, the parity)."""
    if max_batch < 1:
        raise ConfigError(f"--max-batch {max_batch}: must be >= 1")
    if not name or any(c in name for c in "/\\ \"") or name.startswith("."):
        raise ConfigError(f"--name {name!r}: a Triton model name without slashes, spaces or quotes")
    folder = Path(repository) / name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    report, parity = export_checked(pose_weights, reid_weights, folder / "1" / "model.onnx", **export_kw)
    atomic_write_text(folder / "config.pbtxt", triton_config(name, report.path, max_batch))
    return folder, parity
