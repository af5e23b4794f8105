"""ONNX export of each stage's network, checked against PyTorch with onnxruntime when it is installed.

- pose: normalised RGB crops (N, 3, H, W) -> raw heatmaps (N, 36, H/4, W/4); cropping, flip test and
  peak decoding stay outside the graph (see pose.predict.PosePredictor).
- reid: the stacked normalised input (N, 3 [+36] [+13], H, W) and, when the model uses it, the keypoint
  vector (N, 108) in [-0.5, 0.5] -> the test-time embedding (N, D) of ``ReIDNet.embed``; preparing the
  input stays outside (see reid.inputs.ReidInput.batch).

- pipeline (``PipelineGraph``): both stages and every step between them in one graph: uint8 RGB crops
  (N, H, W, 3), resized to the graph's input (the ReID input widened to the pose network's), and their sizes before
  the resize (N, 2) -> the L2-normalised embedding (N, D), keypoints (N, 36, 3) in the input's pixels and the
  colour / type logits (docs/deploy.md).

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
import torch.nn.functional as F
from torch import nn

from pamtri import __version__
from pamtri.common.atomic import atomic_write_bytes
from pamtri.common.checkpoint import file_sha256
from pamtri.common.config import to_dict
from pamtri.common.errors import ConfigError, PamtriError
from pamtri.pose.codec import HeatmapCodec
from pamtri.pose.keypoints import NUM_KEYPOINTS
from pamtri.pose.predict import PosePredictor
from pamtri.pose.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    bilinear_weights,
    invert,
    sample_positions,
)
from pamtri.pose.weights import load as load_pose
from pamtri.reid.inputs import ReidInput
from pamtri.reid.model import KEYPOINT_DIM, split_first_conv
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


HEADS = ("color", "type")
# the one graph's input: uint8 0-255 NHWC (default); float32 0-255 NHWC (DeepStream's tracker ReID with
# netScaleFactor 1, offsets 0); float32 NCHW normalised with the ImageNet mean / std (BoxMOT's ReID backends)
INPUT_LAYOUTS = ("nhwc-uint8", "nhwc-float", "nchw-float")
NETWORK_SCOPES = ("/pose/", "/reid/")  # ONNX node name prefixes of the two networks in a PipelineGraph export
WARP_SUBPIXEL_BITS = 5  # cv2.warpAffine's INTER_BITS: source positions on a 1/32-pixel grid


class PipelineGraph(nn.Module):
    """Two-stage inference as one traceable module for images already resized to its input (H, W) (``source``:
    the ReID input, widened to the pose network's input where that is larger, ``ReidInput.covering``):
    uint8 RGB (N, H, W, 3) -> (L2-normalised embedding (N, D), keypoints (N, 36, 3) in the input's pixels +
    confidence, the colour and type logits (those the model has), the embedding before normalisation (N, D), as
    ``Pipeline.embed`` returns it): ``output_names``.

    Every step is the torch code ``Pipeline`` runs (pose.predict.PosePredictor's crop box and flip test,
    pose.codec's decoding, reid.inputs.ReidInput's channels and keypoint vector, the networks), with tensor forms
    where that code is numpy / cv2: the crop and the heatmap resampling as bilinear sampling matrices
    (``pose.transforms.sample_positions`` / ``bilinear_weights``), the segments by ``pose.segments.rasterise_tensor``,
    the RGB resized to the ReID input (where the input is larger) as OpenCV's bilinear resize of uint8 does. With
    ``sizes`` the graph takes a second input, each crop's (width, height) before the caller's resize, and builds the
    sampling matrices per image, so that the pose crop keeps the original crop's aspect as ``Pipeline.embed``'s
    does; without it, one set for crops already at the input's aspect. Without a pose predictor (an
    RGB-only model exported without pose weights) the keypoints are zeros, as ``Pipeline.embed`` gives them."""

    def __init__(self, predictor: PosePredictor | None, reid_model: nn.Module, spec: ReidInput,
                 input_layout: str = "nhwc-uint8", embedding_only: bool = False, sizes: bool = True):
        super().__init__()
        if input_layout not in INPUT_LAYOUTS:
            raise ConfigError(f"--input-layout {input_layout!r}: one of {', '.join(INPUT_LAYOUTS)}")
        self.spec = spec
        self.source = spec if predictor is None else spec.covering(predictor.codec.input_size)
        self.input_layout = input_layout
        self.reid = reid_model
        self.heads = [h for h in HEADS if getattr(reid_model, f"{h}_classifier", None) is not None]
        self.embedding_only = embedding_only
        self.output_names = ["embedding"] if embedding_only else ["embedding", "keypoints", *self.heads, "feature"]
        self.predictor = predictor
        self.pose = predictor.model if predictor is not None else None
        self.input_names = ["images", "sizes"] if sizes and predictor is not None else ["images"]
        self.register_buffer("imagenet_mean", torch.from_numpy(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("imagenet_std", torch.from_numpy(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if predictor is None:
            return
        # the ReID grid's cells -> source pixels, and the pose crop's pixels -> its heatmap cells
        self.grid_to_pixel = HeatmapCodec(input_size=(self.source.width, self.source.height),
                                          heatmap_size=(spec.grid, spec.grid)).cells_to_input
        self.pixel_to_cell = invert(predictor.codec.cells_to_input)

    def pixels(self, images: torch.Tensor) -> torch.Tensor:
        """The graph's input in its layout -> (N, 3, H, W) float RGB, 0 .. 255."""
        if self.input_layout == "nchw-float":
            return (images.float() * self.imagenet_std + self.imagenet_mean) * 255.0
        return images.permute(0, 3, 1, 2).float()

    def sampling(self, sizes: torch.Tensor | None):
        """(crop rows, crop columns^T, heatmap-to-grid rows, columns^T, crop pixels -> input pixels), per image from
        the crops' original (N, 2) ``sizes`` (width, height): the pose crop box of the original crop (its aspect
        kept), carried through the caller's plain resize (``PosePredictor.crop_to_source_tensor``); without
        ``sizes``, for crops already at the input's size (one set of matrices, constants in the exported graph)."""
        if sizes is None:
            sizes = torch.tensor([[float(self.source.width), float(self.source.height)]])
        scale, offset = self.predictor.crop_to_source_tensor(sizes, (self.source.width, self.source.height))
        (pw, ph), (hw, hh) = self.predictor.codec.input_size, self.predictor.codec.heatmap_size
        crop_rows = bilinear_weights(sample_positions(scale[:, 1], offset[:, 1], ph, WARP_SUBPIXEL_BITS),
                                     self.source.height)[:, None]
        crop_cols = bilinear_weights(sample_positions(scale[:, 0], offset[:, 0], pw, WARP_SUBPIXEL_BITS),
                                     self.source.width)[:, None]
        m, k = self.grid_to_pixel.tolist(), self.pixel_to_cell.tolist()  # grid cell -> pixel -> crop -> cell
        grid = torch.arange(self.spec.grid, dtype=torch.float32)
        cells = [k[a][a] * ((m[a][a] * grid + m[a][2])[None] - offset[:, a, None]) / scale[:, a, None] + k[a][2]
                 for a in (0, 1)]
        grid_cols = bilinear_weights(cells[0], hw)[:, None]
        grid_rows = bilinear_weights(cells[1], hh)[:, None]
        return (crop_rows, crop_cols.transpose(-1, -2), grid_rows, grid_cols.transpose(-1, -2),
                lambda xy: xy * scale[:, None] + offset[:, None])

    def reid_rgb(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) RGB 0 .. 255 at the graph's input -> at the ReID input: OpenCV's bilinear resize of uint8
        (half-pixel centres, no antialiasing, rounded half up), as ``ReidInput.resize`` does from the same image."""
        if (self.source.height, self.source.width) == (self.spec.height, self.spec.width):
            return x
        size = (self.spec.height, self.spec.width)
        return torch.floor(F.interpolate(x, size=size, mode="bilinear", align_corners=False) + 0.5)

    def reid_pixels(self, keypoints: torch.Tensor) -> torch.Tensor:
        """(N, 36, 3) keypoints in the graph input's pixels -> in the ReID input's (``ReidInput.to_input_pixels``:
        pixel centres map to pixel centres)."""
        if (self.source.height, self.source.width) == (self.spec.height, self.spec.width):
            return keypoints
        scale = torch.tensor([self.spec.width / self.source.width, self.spec.height / self.source.height])
        return torch.cat([(keypoints[..., :2] + 0.5) * scale - 0.5, keypoints[..., 2:]], dim=-1)

    def forward(self, images: torch.Tensor, sizes: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        x = self.pixels(images)
        maps, kv = [], None
        if self.predictor is None:
            keypoints = torch.zeros((images.shape[0], NUM_KEYPOINTS, 3), device=x.device)
        else:
            crop_rows, crop_cols_t, grid_rows, grid_cols_t, to_source = self.sampling(sizes)
            # cv2.warpAffine of the uint8 image, rounded half up as cv2 does (floor(v + 0.5): OpenVINO's CPU plugin
            # fails to compile Round between a MatMul and per-channel arithmetic), then pose.transforms.normalise
            crop = torch.floor(crop_rows @ x @ crop_cols_t + 0.5)
            hm = self.predictor.heatmaps((crop / 255.0 - self.imagenet_mean) / self.imagenet_std)
            decoded = self.predictor.codec.decode_tensor(hm)
            keypoints = torch.cat([to_source(decoded[..., :2]), decoded[..., 2:]], dim=-1)
            at_reid = self.reid_pixels(keypoints)
            if self.spec.heatmaps:
                maps.append(grid_rows @ hm @ grid_cols_t)
            if self.spec.segments:
                maps.append(self.spec.segments_tensor(at_reid))
            if self.spec.keypoints:
                kv = self.spec.keypoint_vector(at_reid)
        net_input = self.spec.normalise_rgb(self.reid_rgb(x) / 255.0)
        if maps:
            net_input = torch.cat([net_input, self.spec.pose_planes(maps)], dim=1)
        out = self.reid(net_input, kv)
        feature = out["embedding"].float()
        if self.embedding_only:
            return F.normalize(feature, dim=1)
        return (F.normalize(feature, dim=1), keypoints, *(out[h] for h in self.heads), feature)


def graph_metadata(path: str | os.PathLike) -> dict:
    """The JSON metadata ``pamtri`` of an exported graph; ConfigError naming the file when it has none."""
    onnx = _require_onnx()
    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    if "pamtri" not in meta:
        raise ConfigError(f"{path}: not a pamtri ONNX export (no 'pamtri' metadata)")
    return json.loads(meta["pamtri"])


def layout_input(images: np.ndarray, layout: str) -> np.ndarray:
    """uint8 RGB crops (N, H, W, 3) -> the one graph's input in ``layout`` (INPUT_LAYOUTS)."""
    if layout == "nhwc-uint8":
        return np.ascontiguousarray(images, dtype=np.uint8)
    if layout == "nhwc-float":
        return np.ascontiguousarray(images, dtype=np.float32)
    x = (np.asarray(images, np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def _layout_metadata(layout: str) -> dict:
    if layout == "nchw-float":
        return {"input_layout": "NCHW", "input_dtype": "float32",
                "value_range": "normalised: (x / 255 - mean) / std with the ImageNet mean and std",
                "input_mean": IMAGENET_MEAN.tolist(), "input_std": IMAGENET_STD.tolist()}
    return {"input_layout": "NHWC", "input_dtype": "uint8" if layout == "nhwc-uint8" else "float32",
            "value_range": [0, 255]}


def pipeline_graph(pose_weights: str | os.PathLike | None, reid_weights: str | os.PathLike,
                   size: tuple[int, int] | None = None, flip_test: bool | None = None,
                   input_layout: str = "nhwc-uint8", embedding_only: bool = False, split_stem: bool = False,
                   sizes: bool = True) -> tuple[PipelineGraph, dict]:
    """(the fp32 CPU ``PipelineGraph`` of two checkpoints at ``size`` (H, W), default the ReID checkpoint's input
    size; its ONNX metadata). ``pose_weights`` may be None only for an RGB-only ReID model. ``split_stem``: the
    ReID network's first convolution as one per input group (``reid.model.split_first_conv``; the INT8 export).
    ``sizes``: with pose, a second input 'sizes' (N, 2) float32, each crop's original width and height, from
    which the pose crop keeps the crop's aspect as ``Pipeline.embed`` does (without it, exact only for crops
    already at the input's aspect)."""
    model, spec = _reid_for_export(reid_weights, size, split_stem)
    if spec.needs_pose and not pose_weights:
        raise ConfigError(f"{reid_weights}: this ReID model uses pose input; pass --pose-weights too")
    predictor, pose_meta = None, {}
    if pose_weights:
        pose_model, (pose_cfg, codec) = load_pose(pose_weights)
        predictor = PosePredictor.from_config(pose_model, pose_cfg, codec, device="cpu", precision="fp32",
                                              flip_test=flip_test)
        pose_meta = {"pose_weights": os.path.basename(os.fspath(pose_weights)),
                     "pose_weights_sha256": file_sha256(pose_weights), "pose_model": pose_cfg.model.name,
                     "pose_input_size_wh": list(codec.input_size), "codec": codec.to_dict(),
                     "flip_test": predictor.flip_test, "box_enlarge": predictor.enlarge}
    graph = PipelineGraph(predictor, model.float().eval(), spec, input_layout, embedding_only, sizes).eval()
    meta = {"stage": "pipeline", "pamtri_version": __version__,
            "input": f"RGB crops ({input_layout}), each resized by the caller to W x H with OpenCV bilinear "
                     "(cv2.resize(crop, (W, H), interpolation=cv2.INTER_LINEAR)), no padding, as `pamtri embed` "
                     "resizes; the rest of the normalisation happens inside the graph",
            "input_name": "images", "input_names": graph.input_names,
            "sizes": "float32 (N, 2): each crop's width and height before the resize (the pose crop keeps its aspect)"
                     if "sizes" in graph.input_names else "no such input: crops are taken at the input's aspect",
            "input_layout_option": input_layout, **_layout_metadata(input_layout),
            "color_order": "RGB",
            "outputs": {"embedding": "L2-normalised ReID feature (N, D)",
                        "keypoints": "(N, 36, 3): x, y in the input's pixels (pixel centres at integers), "
                                     "confidence" + ("" if predictor else "; zeros: exported without pose"),
                        **{hd: f"{hd} logits" for hd in graph.heads},
                        "feature": "the embedding before the L2 normalisation (what `pamtri embed` stores)"}
            if not embedding_only else {"embedding": "L2-normalised ReID feature (N, D), the only output"},
            "reid_weights": os.path.basename(os.fspath(reid_weights)), "reid_weights_sha256": file_sha256(reid_weights),
            "backbone": model.cfg.backbone, "embedding_dim": model.embedding_dim, **spec.metadata(),
            "input_size_hw": [graph.source.height, graph.source.width],
            "reid_input_size_hw": [spec.height, spec.width], **pose_meta}
    return graph, meta


def export_pipeline(pose_weights: str | os.PathLike | None, reid_weights: str | os.PathLike,
                    out: str | os.PathLike, size: tuple[int, int] | None = None, opset: int = DEFAULT_OPSET,
                    check: bool = True, tolerance: float = DEFAULT_TOLERANCE, flip_test: bool | None = None,
                    input_layout: str = "nhwc-uint8", embedding_only: bool = False, split_stem: bool = False,
                    sizes: bool = True) -> ExportReport:
    """Export both checkpoints as one ``PipelineGraph`` ONNX file (inputs 'images' uint8 (N, H, W, 3) and, with
    ``sizes`` and pose weights, 'sizes' float32 (N, 2); outputs
    'embedding', 'keypoints', 'color', 'type', 'feature'), checked against the module with onnxruntime (``verify``; the
    parity with ``Pipeline.embed`` is ``pipeline.deploy.pipeline_parity``)."""
    _require_onnx()
    if int(opset) < 16:
        raise ConfigError(f"--opset {opset}: the pipeline graph needs opset 16 or later (default {DEFAULT_OPSET})")
    graph, meta = pipeline_graph(pose_weights, reid_weights, size, flip_test, input_layout, embedding_only,
                                 split_stem, sizes)
    h, w = graph.source.height, graph.source.width
    pixels = torch.randint(0, 256, (2, h, w, 3), dtype=torch.uint8).numpy()
    example = {"images": torch.from_numpy(layout_input(pixels, input_layout))}
    if "sizes" in graph.input_names:  # a wide and a tall crop, so that tracing keeps the per-image arithmetic
        example["sizes"] = torch.tensor([[1.6 * w, 0.8 * h], [0.7 * w, 1.3 * h]], dtype=torch.float32)
    return _export(graph, example, graph.output_names, out, opset, meta, check, tolerance)


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
                heads: bool = False, split_stem: bool = False) -> ExportReport:
    """Export a ReID checkpoint's embedding path; ``size`` (H, W) pixels, default the stored data config's.
    ``heads``: outputs 'embedding', 'color', 'type' (those the model has) as ``ReIDNet.forward`` names them, the
    graph ``pamtri embed --runtime`` runs, instead of the single 'embedding'. ``split_stem``: the first
    convolution as one per input group (``reid.model.split_first_conv``; the INT8 export)."""

    _require_onnx()
    model, spec = _reid_for_export(weights, size, split_stem)
    h, w = spec.height, spec.width
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


def _reid_for_export(weights: str | os.PathLike, size: tuple[int, int] | None, split_stem: bool
                     ) -> tuple[nn.Module, ReidInput]:
    """(the ReID checkpoint's model, its input contract at ``size`` (H, W), default the stored one); with
    ``split_stem`` the first convolution as one per input group (``reid.model.split_first_conv``, INT8 exports)."""
    model, ckpt = load_reid(weights)
    if split_stem:
        split_first_conv(model)
    spec = ReidInput.from_checkpoint(ckpt, model.cfg, os.fspath(weights))
    h, w = size if size else (spec.height, spec.width)
    _check_size(h, w, 1, weights)
    return model, dataclasses.replace(spec, height=h, width=w)


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
    _fix_output_dims(proto, model, example)
    entry = proto.metadata_props.add()
    entry.key, entry.value = "pamtri", json.dumps(meta)
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    diff = verify(data, model, example, tolerance) if check else None
    atomic_write_bytes(out, data)

    def shapes(values):
        return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}
    return ExportReport(str(out), shapes(proto.graph.input), shapes(proto.graph.output), diff, tolerance)


def _fix_output_dims(proto, model: nn.Module, example: dict[str, torch.Tensor]) -> None:
    """Write the outputs' fixed sizes (all but the batch axis) into the graph where the exporter left a symbolic
    name (after a normalisation or a cast), from a PyTorch run on ``example``: a serving config or a TensorRT
    profile reads them from there."""
    with torch.no_grad():
        outs = model(*example.values())
    outs = outs if isinstance(outs, tuple) else (outs,)
    for value, out in zip(proto.graph.output, outs):
        for d, size in list(zip(value.type.tensor_type.shape.dim, out.shape))[1:]:
            if d.dim_param:
                d.dim_value = int(size)


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
        if t.dtype == torch.uint8 or getattr(model, "input_layout", None) == "nhwc-float":  # images: random pixels
            inputs[name] = torch.randint(0, 256, (3, *t.shape[1:]), generator=gen, dtype=torch.uint8).to(t.dtype)
            continue
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
