"""ONNX export of each stage's network, checked against PyTorch with onnxruntime when it is installed.

- pose: normalised RGB crops (N, 3, H, W) -> raw heatmaps (N, 36, H/4, W/4); cropping, flip test and
  peak decoding stay outside the graph (see pose.predict.PosePredictor).
- reid: the stacked normalised input (N, 3 [+36] [+13], H, W) and, when the model uses it, the keypoint
  vector (N, 108) in [-0.5, 0.5] -> the test-time embedding (N, D) of ``ReIDNet.embed``; preparing the
  input stays outside (see reid.inputs.ReidInput.batch).

The batch axis is dynamic; the image size is fixed at export. The ONNX file carries the preprocessing
facts a deployer needs (input size, mean/std, cell convention ...) as JSON in its metadata ``pamtri``.
"""
from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pamtri.common.atomic import atomic_write_bytes
from pamtri.common.config import to_dict
from pamtri.common.errors import ConfigError, PamtriError
from pamtri.pose.weights import load as load_pose
from pamtri.reid.inputs import ReidInput
from pamtri.reid.model import KEYPOINT_DIM
from pamtri.reid.weights import load as load_reid

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
# max abs difference ONNX vs PyTorch (fp32 on CPU differs by ~1e-6 .. 1e-5), relative to the output's largest
# magnitude where that exceeds 1: float32 rounding scales with it (random-weight HRNet-W32 heatmaps reach 1e6)
DEFAULT_TOLERANCE = 1e-3


class ExportMismatchError(PamtriError):
    """The exported ONNX model's output differs from PyTorch's by more than the tolerance."""


@dataclass
class ExportReport:
    """What was written: input/output names and shapes ('batch' = dynamic), the ONNX-vs-PyTorch check."""
    path: str
    inputs: dict[str, list]
    outputs: dict[str, list]
    max_abs_diff: float | None  # None: onnxruntime not installed, not checked
    tolerance: float


class _Embedding(nn.Module):
    """ReIDNet's test-time path only: (images, keypoints) -> embedding, no classifier logits."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, keypoints: torch.Tensor | None = None) -> torch.Tensor:
        return self.model.embed(images, keypoints)


class _FeatureAndHeads(nn.Module):
    """What two-stage inference needs of ReIDNet: (images, keypoints) -> (feature, colour logits, type logits),
    the heads the model has, in ``keys`` order."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.keys = ["embedding"] + [h for h in ("color", "type") if getattr(model, f"{h}_classifier") is not None]

    def forward(self, images: torch.Tensor, keypoints: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        out = self.model(images, keypoints)
        return tuple(out[k] for k in self.keys)


def _require_onnx():
    try:
        import onnx
    except ImportError:
        raise PamtriError("ONNX export needs the 'onnx' package: pip install 'pamtri[export]' "
                          "(onnx, plus onnxruntime for the check against PyTorch)") from None
    return onnx


def export_pose(weights: str | os.PathLike, out: str | os.PathLike, size: tuple[int, int] | None = None,
                opset: int = DEFAULT_OPSET, model_name: str | None = None, check: bool = True,
                tolerance: float = DEFAULT_TOLERANCE) -> ExportReport:
    """Export a pose checkpoint's HRNet; ``size`` (H, W) pixels, default the checkpoint's input size."""
    _require_onnx()
    model, (cfg, codec) = load_pose(weights, model_name)
    h, w = size if size else (int(cfg.codec.input_size[1]), int(cfg.codec.input_size[0]))
    _check_size(h, w, 32, weights)
    meta = {"stage": "pose", "weights": os.path.basename(os.fspath(weights)), "model": cfg.model.name,
            "input": "RGB crop normalised with the ImageNet mean/std (pose.transforms.normalise)",
            "input_size_hw": [h, w], "stride": int(model.stride), "eval_config": to_dict(cfg.eval),
            "cell_convention": codec.cell_convention, "codec": codec.to_dict(), "box_enlarge": cfg.data.box_enlarge}
    example = {"image": torch.randn(2, 3, h, w)}
    return _export(model, example, ["heatmaps"], out, opset, meta, check, tolerance)


def export_reid(weights: str | os.PathLike, out: str | os.PathLike, size: tuple[int, int] | None = None,
                opset: int = DEFAULT_OPSET, check: bool = True, tolerance: float = DEFAULT_TOLERANCE,
                heads: bool = False) -> ExportReport:
    """Export a ReID checkpoint's embedding path; ``size`` (H, W) pixels, default the stored data config's.
    ``heads``: outputs 'embedding', 'color', 'type' (those the model has) as ``ReIDNet.forward`` names them, the
    graph ``pamtri embed --runtime`` runs, instead of the single 'embedding'."""

    _require_onnx()
    model, ckpt = load_reid(weights)
    if model.num_parts:
        raise ConfigError(f"{weights}: a model with part features (model.parts {model.cfg.parts}) is not exported yet "
                          "(its part outputs have no ONNX graph); run it with --runtime torch")
    spec = ReidInput.from_checkpoint(ckpt, model.cfg, os.fspath(weights))
    h, w = size if size else (spec.height, spec.width)
    _check_size(h, w, 1, weights)
    spec = dataclasses.replace(spec, height=h, width=w)
    mc = model.cfg
    meta = {"stage": "reid", "weights": os.path.basename(os.fspath(weights)), "backbone": mc.backbone,
            "embedding_dim": model.embedding_dim, **spec.metadata(),
            "input": "channels RGB [+36 heatmaps] [+13 segments] resized to the image size, as "
                     "reid.inputs.ReidInput.batch builds them"}
    example = {"images": torch.randn(2, mc.in_channels, h, w)}
    if mc.keypoints:
        example["keypoints"] = torch.rand(2, KEYPOINT_DIM) - 0.5
    if heads:
        net = _FeatureAndHeads(model)
        return _export(net, example, net.keys, out, opset, meta, check, tolerance)
    return _export(_Embedding(model), example, ["embedding"], out, opset, meta, check, tolerance)


def _check_size(h: int, w: int, multiple: int, weights) -> None:
    if h <= 0 or w <= 0 or h % multiple or w % multiple:
        what = f"multiples of {multiple} pixels" if multiple > 1 else "positive"
        raise ConfigError(f"--size {h} {w} (H W) for {weights}: both must be {what}")


def _export(model: nn.Module, example: dict[str, torch.Tensor], output_names: list[str], out, opset: int,
            meta: dict, check: bool, tolerance: float) -> ExportReport:
    """Trace ``model`` on ``example`` (dynamic batch), add metadata, check with onnxruntime, write atomically."""
    onnx = _require_onnx()
    model = model.float().eval().cpu()
    names = list(example)
    dynamic = {n: {0: "batch"} for n in names + output_names}
    buf = io.BytesIO()
    # The TorchScript-based ("legacy", dynamo=False) exporter: torch's default dynamo exporter needs the
    # onnxscript package, which the [export] extra does not pull in, and both networks here are static
    # graphs that tracing captures exactly. The check below runs batch 3 on a graph traced at batch 2, so
    # a size frozen by tracing (e.g. a len() in forward) fails there instead of shipping.
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(model, tuple(example.values()), buf, input_names=names, output_names=output_names,
                          dynamic_axes=dynamic, opset_version=int(opset), do_constant_folding=True, dynamo=False)
    proto = onnx.load_from_string(buf.getvalue())
    entry = proto.metadata_props.add()
    entry.key, entry.value = "pamtri", json.dumps(meta)
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    diff = verify(data, model, example, tolerance) if check else None
    atomic_write_bytes(out, data)

    def shapes(values):
        return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}
    return ExportReport(str(out), shapes(proto.graph.input), shapes(proto.graph.output), diff, tolerance)


def verify(onnx_bytes: bytes, model: nn.Module, example: dict[str, torch.Tensor], tolerance: float) -> float | None:
    """Max abs difference of onnxruntime vs PyTorch on random input (batch 3, not the traced 2), over every
    output, each divided by its largest PyTorch magnitude where that exceeds 1; None without onnxruntime;
    ExportMismatchError above ``tolerance``."""
    try:
        import onnxruntime as ort
    except ImportError:
        log.warning("onnxruntime is not installed: the ONNX model was not checked against PyTorch")
        return None
    gen = torch.Generator().manual_seed(0)
    inputs = {}
    for name, t in example.items():
        x = torch.randn((3, *t.shape[1:]), generator=gen)
        inputs[name] = x.clamp(-0.5, 0.5) if name == "keypoints" else x
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    got = session.run(None, {k: v.numpy() for k, v in inputs.items()})
    with torch.no_grad():
        want = model(*inputs.values())
    want = [t.numpy() for t in (want if isinstance(want, tuple) else (want,))]
    for g, w in zip(got, want):
        if g.shape != w.shape:
            raise ExportMismatchError(f"ONNX output shape {g.shape} differs from PyTorch's {w.shape}")
    diff = max(float(np.abs(g - w).max()) / max(1.0, float(np.abs(w).max())) for g, w in zip(got, want))
    if not diff <= tolerance:
        raise ExportMismatchError(f"ONNX output differs from PyTorch by {diff:.3g} (max abs) > tolerance "
                                  f"{tolerance:g}; nothing written")
    return diff
