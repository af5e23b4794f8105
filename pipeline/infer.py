"""Two-stage inference: images -> pose stage -> pose channels in the image frame -> ReID features.

The pose network sees a crop (the image enlarged 1.25 and padded to its input aspect), so its heatmaps
live in crop cells. The ReID stage stacks pose channels onto the whole image, so heatmaps are resampled
into an image-frame grid (``heatmaps_to_image_frame``) on the batch, on the device, before they are
cached or stacked. That grid is the ReID model's ``data.heatmap_size`` cells per side (stored in its
checkpoint), the grid it was trained and evaluated on; caches record theirs (``pamtri cache build --grid``).
"""
from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from pamtri.common.checkpoint import file_sha256
from pamtri.common.config import from_dict
from pamtri.common.device import autocast, autocast_dtype, pick_device
from pamtri.common.errors import ConfigError
from pamtri.data.images import read_image
from pamtri.pose.predict import PosePredictor
from pamtri.pose.transforms import compose
from pamtri.pose.weights import load as load_pose
from pamtri.reid.config import DataConfig
from pamtri.reid.inputs import ReidInput
from pamtri.reid.pose_inputs import grid_to_source_cells
from pamtri.reid.weights import load as load_reid

from .runtimes import check_runtime, onnx_networks, pipeline_network, resolve_runtime

log = logging.getLogger(__name__)


def heatmaps_to_image_frame(heatmaps: torch.Tensor, cell_to_pixel: np.ndarray, image_sizes: np.ndarray,
                            out_size: tuple[int, int]) -> torch.Tensor:
    """Resample crop-frame heatmaps into a grid spanning each whole image.

    heatmaps (N, K, h, w) in crop cells; cell_to_pixel (N, 2, 3) maps crop cells to image pixels;
    image_sizes (N, 2) and out_size as (width, height) -> (N, K, Ho, Wo) where output cell (i, j) covers
    image pixels [j W / Wo, (j + 1) W / Wo) x [i H / Ho, (i + 1) H / Ho) (the centred cell convention of
    ``pose.codec.HeatmapCodec``). Zero outside the crop.
    """
    n, _, h, w = heatmaps.shape
    wo, ho = out_size
    dev = heatmaps.device
    # output cells -> image pixels -> crop cells, per image
    m = torch.as_tensor(grid_to_source_cells(cell_to_pixel, image_sizes, (wo, ho)), dtype=torch.float32,
                        device=dev)  # (N, 2, 3)
    j = torch.arange(wo, device=dev, dtype=torch.float32)[None, None, :]
    i = torch.arange(ho, device=dev, dtype=torch.float32)[None, :, None]
    cx = m[:, 0, 0, None, None] * j + m[:, 0, 1, None, None] * i + m[:, 0, 2, None, None]  # (N, Ho, Wo)
    cy = m[:, 1, 0, None, None] * j + m[:, 1, 1, None, None] * i + m[:, 1, 2, None, None]
    # align_corners=True: -1 and +1 are the centres of the first and last cells
    grid = torch.stack([cx / (w - 1) * 2 - 1, cy / (h - 1) * 2 - 1], dim=-1)
    return F.grid_sample(heatmaps.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=True)


@dataclass
class PoseBatch:
    """Pose stage output for a batch: keypoints (N, 36, 3) image pixels + confidence (numpy) and
    image-frame heatmaps (N, 36, g, g) float32 (torch, on the predictor's device)."""
    keypoints: np.ndarray
    heatmaps: torch.Tensor


def run_pose(predictor, images: Sequence[np.ndarray], grid: int) -> PoseBatch:
    """Run a pose.predict.PosePredictor on uint8 RGB images of any sizes; heatmaps end on a ``grid`` x ``grid``
    image-frame grid."""
    crops, inverses = zip(*(predictor.crop(im) for im in images))
    inverses = np.stack(inverses)
    hm = predictor.heatmaps(torch.from_numpy(np.stack(crops)))
    kps = predictor.keypoints(hm, inverses)
    sizes = np.array([[im.shape[1], im.shape[0]] for im in images], dtype=np.float32)
    cell_to_pixel = compose(inverses, predictor.codec.cells_to_input)
    return PoseBatch(keypoints=kps, heatmaps=heatmaps_to_image_frame(hm, cell_to_pixel, sizes, (grid, grid)))


class Pipeline:
    """Both stages chained on one device: images -> pose -> stacked channels -> ReID embeddings.

    Preprocessing is vectorised on the batch (resize of the stacked pose channels with F.interpolate,
    normalisation, keypoint vector); models run under ``torch.inference_mode``, channels-last, with
    bfloat16/float16 autocast where the device supports it. ``network`` runs the ReID forward in place of
    ``reid_model`` (whose config still says what to stack): an ONNX runtime's stand-in (pipeline.runtimes).
    ``graph`` (an OnnxNetwork of ``pipeline.export.PipelineGraph``) runs everything after the resize instead: the
    one-graph runtime.
    """

    def __init__(self, predictor, reid_model, data_cfg, batch_size: int = 32, channels_last: bool = True,
                 compile: bool = False, network: torch.nn.Module | None = None, graph=None):
        self.graph = graph
        self.predictor = predictor
        self.device = predictor.device
        self.model = (network if network is not None else reid_model).to(self.device).eval()
        self.cfg = reid_model.cfg
        self.height, self.width = int(data_cfg.height), int(data_cfg.width)
        self.dtype = predictor.dtype if predictor.dtype is not None else autocast_dtype(self.device, "fp32")
        self.batch_size = int(batch_size)
        self.channels_last = channels_last
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
            self.predictor.model = self.predictor.model.to(memory_format=torch.channels_last)
        self.compiled = compile
        if compile:
            # Inductor with freezing: the weights become constants, so BatchNorms fold into the convolutions and
            # oneDNN runs prepacked weights with fused epilogues. About 1.2x eager at paper sizes after ~140 s of
            # compiling (docs/perf.md), hence off by default. One compiled shape: embed_arrays pads short batches.
            self.model = torch.compile(self.model, options={"freezing": True})
            if not isinstance(self.predictor, _NoPose):
                self.predictor.model = torch.compile(self.predictor.model, options={"freezing": True})
        self.input = ReidInput.from_configs(data_cfg, self.cfg)  # the one definition of the network's input
        self.needs_pose = self.input.needs_pose

    @property
    def graph_input(self) -> ReidInput:
        """The one graph's input: the ReID input widened to the pose network's input where that is larger
        (``ReidInput.covering``, as ``pipeline.export.PipelineGraph`` defines it)."""
        if isinstance(self.predictor, _NoPose):
            return self.input
        return self.input.covering(self.predictor.codec.input_size)

    @property
    def grid(self) -> int:
        """Cells per side of the image-frame pose grid the model was trained on (the input's)."""
        return self.input.grid

    @grid.setter
    def grid(self, cells: int) -> None:
        self.input = dataclasses.replace(self.input, grid=int(cells))

    @classmethod
    def from_weights(cls, pose_weights: str | os.PathLike | None, reid_weights: str | os.PathLike,
                     device: str = "auto", precision: str = "auto", batch_size: int = 32,
                     flip_test: bool | None = None, compile: bool = False, runtime: str = "torch",
                     one_graph: bool = True) -> Pipeline:
        """Load a pose checkpoint (``pamtri pose train``) and a ReID checkpoint (``pamtri reid train``) to run on
        ``runtime`` (pipeline.runtimes.RUNTIMES, 'auto' or 'measured': ``runtimes.resolve_runtime``). On
        onnxruntime / openvino everything after the resize runs as one ONNX graph (``pipeline.export.
        PipelineGraph``); ``one_graph=False``: only the two networks run there, everything around them in torch
        (the per-stage graphs)."""
        reid_model, ckpt = load_reid(reid_weights)
        data = dict((ckpt.get("config") or {}).get("data") or {})
        data_cfg = from_dict(DataConfig, data, f"{reid_weights} (stored data config)")
        if reid_model.cfg.uses_pose and not pose_weights:
            raise ConfigError(f"{reid_weights}: this ReID model uses pose input; pass the pose weights too")
        if pose_weights:
            trained_with = ckpt.get("pose_weights_sha256")
            if trained_with and trained_with != file_sha256(pose_weights):
                log.warning("%s was trained on pose channels of other pose weights than %s; its features may "
                            "be worse than in evaluation", reid_weights, pose_weights)
            pose_model, (pose_cfg, codec) = load_pose(pose_weights)
            predictor = PosePredictor.from_config(pose_model, pose_cfg, codec, device=device, precision=precision,
                                                  flip_test=flip_test)
        else:
            predictor = _NoPose(device, precision)
        runtime, why = resolve_runtime(runtime, predictor.device.type, compile)
        log.info("runtime: %s (%s)", runtime, why)
        if runtime == "torch":
            return cls(predictor, reid_model, data_cfg, batch_size=batch_size, compile=compile)
        if one_graph:
            _check_onnx_runtime(runtime, compile, predictor.device)
            graph = pipeline_network(pose_weights, reid_weights, runtime, precision,
                                     (int(data_cfg.height), int(data_cfg.width)),
                                     predictor.flip_test if pose_weights else True, predictor.device)
            return cls(predictor, reid_model, data_cfg, batch_size=batch_size, channels_last=False, graph=graph)
        return cls(predictor, reid_model, data_cfg, batch_size=batch_size, channels_last=False,
                   network=_onnx_stand_ins(predictor, pose_weights, reid_weights, data_cfg, runtime, precision,
                                           compile))

    def reid_inputs(self, images: Sequence[np.ndarray], pose: PoseBatch | None
                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(N, C, H, W) normalised network input on the device and the (N, 108) keypoint vector (or None), as
        ``reid.inputs.ReidInput.batch`` builds them in the model's memory layout."""
        return self.input.batch(images, None if pose is None else pose.heatmaps,
                                None if pose is None else pose.keypoints, self.device, self.channels_last)

    @torch.inference_mode()
    def embed_arrays(self, images: Sequence[np.ndarray], cameras: Sequence[int] | None = None
                     ) -> dict[str, np.ndarray]:
        """uint8 RGB images -> {'features' (N, D), 'keypoints' (N, 36, 3), 'color' (N,), 'type' (N,)} (a model with
        parts adds 'part_features' (N, P, d) and 'part_visibility' (N, P));
        ``cameras`` (N,) 0-based camera ids for a ViT's SIE (-1 or None: unknown, no camera embedding)."""
        n = len(images)
        if self.compiled and 0 < n < self.batch_size:  # the compiled shape: pad with the last image, drop its rows
            pad = self.batch_size - n
            out = self.embed_arrays(list(images) + [images[-1]] * pad,
                                    None if cameras is None else list(cameras) + [-1] * pad)
            return {k: v[:n] for k, v in out.items()}
        if self.graph is not None:
            return self._graph_arrays(images, cameras)
        pose = run_pose(self.predictor, images, self.grid) if self.needs_pose else None
        x, kv = self.reid_inputs(images, pose)
        side = {} if cameras is None else {"cameras": torch.as_tensor(np.asarray(cameras, np.int64), device=x.device)}
        with autocast(self.device, self.dtype):
            out = self.model(x, kv, **side)
        result = {"features": out["embedding"].float().cpu().numpy(),
                  "keypoints": pose.keypoints if pose is not None else np.zeros((n, 36, 3), np.float32)}
        if "part_feature" in out:  # model.parts: what the co-visible distance needs beside the global feature
            result["part_features"] = out["part_feature"].float().cpu().numpy()
            result["part_visibility"] = out["part_visibility"].float().cpu().numpy()
        for head in ("color", "type"):
            result[head] = (out[head].argmax(1).cpu().numpy() if head in out else np.full(n, -1)).astype(np.int64)
        return result

    def _graph_arrays(self, images: Sequence[np.ndarray], cameras: Sequence[int] | None) -> dict[str, np.ndarray]:
        """embed_arrays on the one graph: the images resized to its input size (``graph_input``, ``ReidInput.resize``)
        in, the graph's unnormalised feature, keypoints (mapped back to the images' pixels), colour and type out."""
        if self.cfg.sie_cameras and cameras is not None and any(int(c) >= 0 for c in cameras):
            raise ConfigError("camera ids (the ViT's SIE) are no input of the one ONNX graph; use --runtime torch")
        source = self.graph_input
        out = dict(zip(self.graph.output_names, self.graph.run(source.graph_feed(images, self.graph.input_names))))
        n = len(images)
        sizes = np.array([[im.shape[1], im.shape[0]] for im in images], dtype=np.float32)
        result = {"features": np.asarray(out["feature"], np.float32),
                  "keypoints": source.from_input_pixels(out["keypoints"], sizes) if self.needs_pose
                  else np.zeros((n, 36, 3), np.float32)}
        for head in ("color", "type"):
            result[head] = (out[head].argmax(1) if head in out else np.full(n, -1)).astype(np.int64)
        return result

    def embed(self, images: Sequence[str | os.PathLike | np.ndarray], progress: bool = False,
              io_threads: int = 4, cameras: Sequence[int] | None = None) -> dict[str, np.ndarray]:
        """Embed image files or arrays in batches (decoding overlapped with compute) -> embed_arrays' dict;
        ``cameras`` (N,) as in ``embed_arrays``."""


        def load(item):
            return item if isinstance(item, np.ndarray) else read_image(item)

        chunks = [images[i:i + self.batch_size] for i in range(0, len(images), self.batch_size)]
        parts: list[dict] = []
        with ThreadPoolExecutor(max(1, io_threads)) as pool, tqdm(total=len(images), desc="embed", unit="img",
                                                                  disable=not progress) as bar:
            pending = pool.submit(lambda c: list(map(load, c)), chunks[0]) if chunks else None
            for i in range(len(chunks)):
                batch = pending.result()
                pending = pool.submit(lambda c: list(map(load, c)), chunks[i + 1]) if i + 1 < len(chunks) else None
                cams = None if cameras is None else cameras[i * self.batch_size:(i + 1) * self.batch_size]
                parts.append(self.embed_arrays(batch, cams))
                bar.update(len(batch))
        if not parts:
            raise ValueError("no images to embed")
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _onnx_stand_ins(predictor, pose_weights, reid_weights, data_cfg, runtime: str, precision: str,
                    compile: bool) -> torch.nn.Module:
    """Put the pose network of ``predictor`` on ``runtime`` and return the ReID network's stand-in."""
    _check_onnx_runtime(runtime, compile, predictor.device)
    pose_size = None
    if pose_weights:
        w, h = predictor.codec.input_size
        pose_size = (int(h), int(w))
    pose_net, reid_net = onnx_networks(pose_weights, reid_weights, runtime, precision, pose_size,
                                       (int(data_cfg.height), int(data_cfg.width)), predictor.device)
    if pose_net is not None:
        predictor.model = pose_net
    return reid_net


def _check_onnx_runtime(runtime: str, compile: bool, device: torch.device) -> None:
    """ConfigError / PamtriError when ``runtime`` cannot run here as asked (its package, --compile, the device)."""
    check_runtime(runtime)
    if compile:
        raise ConfigError(f"--compile applies to --runtime torch only, not {runtime}")
    if device.type != "cpu" and not (runtime == "onnxruntime" and device.type == "cuda"):
        raise ConfigError(f"--runtime {runtime} runs on the CPU (onnxruntime also on CUDA); pass --device cpu "
                          f"(or --runtime torch)")


class _NoPose:
    """Stands in for the pose predictor when the ReID model takes RGB only."""

    def __init__(self, device: str, precision: str):
        self.device = pick_device(device)
        self.dtype = autocast_dtype(self.device, precision)
        self.model = torch.nn.Identity()
