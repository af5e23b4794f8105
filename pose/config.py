"""The pose stage's typed config: defaults are the paper's (HRNet-W32 at 256x256, 64x64 heatmaps of sigma 2
cells, batch 32, Adam 1e-3 x0.1 at epochs 170 and 200 of 210); YAML and --set override them.

Shared names with the ReID config: ``optim`` (pamtri.common.schedule.OptimConfig), ``eval.every``,
``data.workers``, ``data.color_jitter`` and the top-level ``seed``, ``device``, ``precision``, ``threads`` and
``max_batches``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from pamtri.common.device import cpu_supports_bf16
from pamtri.common.errors import ConfigError
from pamtri.common.schedule import OptimConfig

from .codec import HeatmapCodec


@dataclass
class DataSource:
    """One labelled set: ``<root>/pose_label_<split>.csv`` with images under ``<root>/image_<split>/``.

    ``format``: ``pose_csv`` (the reference pose label CSV, real images) or ``synthetic`` (the same files
    written by ``pamtri synth``; records are marked synthetic). ``weight``: sampling ratio in a mix.
    ``labels`` / ``images`` override the default file and folder (relative to ``root``).
    """
    root: str = "data/VeRi"
    format: Literal["pose_csv", "synthetic"] = "pose_csv"
    split: str = "train"
    weight: float = 1.0
    labels: str = ""
    images: str = ""


@dataclass
class DataConfig:
    """What to train and validate on, and how crops are augmented (their size is the codec's)."""
    train: list[DataSource] = field(default_factory=lambda: [DataSource()])
    val: list[DataSource] = field(default_factory=lambda: [DataSource(split="test")])
    box_enlarge: float = 1.25
    scale: float = 0.25
    rotation: float = 30.0
    rotation_prob: float = 0.6
    flip_prob: float = 0.5
    color_jitter: float = 0.2
    epoch_size: int = 0  # training samples per epoch; 0 = the sum of the training sources' sizes
    max_val: int = 0  # validate on the first N images only; 0 = all
    # The global training batch (divided over processes under torchrun). Kept with the data, not in the
    # shared optim section: it is how the loader batches, as ReID's P x K batch is the sampler's.
    batch_size: int = 32
    workers: int = 4


@dataclass
class ModelConfig:
    """HRNet width (a timm name) and optional initial weights (a local ImageNet or PoseEstNet file)."""
    name: str = "hrnet_w32"
    weights: str = ""


@dataclass
class CodecConfig:
    """The heatmap codec (pose.codec.HeatmapCodec), declared once and used by the dataset's targets, the
    network's input size and heatmap grid, decoding and the flip test. A checkpoint stores the codec it was
    trained with, and inference reads it from there. ``input_size`` is (width, height) pixels; the heatmaps are
    input / 4 cells (HRNet's stride)."""
    input_size: tuple[int, int] = (256, 256)
    sigma: float = 2.0             # the Gaussian targets' sigma, in cells
    # How heatmap cells sit on input pixels (pose.transforms.input_to_heatmap). 'reference' only for
    # weights trained by the reference code (then also flip_shift: 1.0).
    cell_convention: Literal["centred", "reference"] = "centred"
    decode_method: Literal["dark", "reference"] = "dark"
    blur_sigma: float = 2.0        # DARK smoothing in cells
    flip_shift: float = 0.0        # cells; 0 is exact for pamtri's cell convention (see pose.heatmaps.flip_back)


@dataclass
class EvalConfig:
    """Validation and inference: how often, flip test, PCK threshold (x 0.25 box diagonal); decoding is the
    codec's."""
    every: int = 1  # validate every N epochs (and after the last); 0 = after the last only
    flip_test: bool = True
    batch_size: int = 32
    pck_threshold: float = 0.5


def _paper_optim() -> OptimConfig:
    """Adam 1e-3, weight decay 1e-4, 210 epochs, x0.1 at epochs 170 and 200."""
    return OptimConfig(name="adam", lr=1e-3, weight_decay=1e-4, epochs=210, milestones=[170, 200], gamma=0.1)


@dataclass
class PoseConfig:
    """The pose stage: how the run executes, data, model, optimiser, evaluation."""
    # Keys of the former ``train:`` section and other old names, refused with their new name.
    RENAMED: ClassVar[dict[str, str]] = {
        "train.epochs": "optim.epochs", "train.lr": "optim.lr", "train.weight_decay": "optim.weight_decay",
        "train.lr_steps": "optim.milestones", "train.lr_factor": "optim.gamma", "train.batch_size": "data.batch_size",
        "train.val_every": "eval.every", "train.max_steps": "max_batches", "train.seed": "seed",
        "train.device": "device", "train.precision": "precision", "train.threads": "threads",
        "data.num_workers": "data.workers", "data.colour_jitter": "data.color_jitter",
        # the heatmap codec's parameters, in one section since it owns them
        "data.input_size": "codec.input_size", "data.sigma": "codec.sigma",
        "model.cell_convention": "codec.cell_convention", "eval.decode": "codec.decode_method",
        "eval.blur_sigma": "codec.blur_sigma", "eval.flip_shift": "codec.flip_shift",
    }
    seed: int = 0
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    threads: int = 0  # torch CPU threads; 0 = torch's default
    max_batches: int = 0  # cap optimiser steps per epoch (smoke tests); 0 = a full epoch
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    codec: CodecConfig = field(default_factory=CodecConfig)
    optim: OptimConfig = field(default_factory=_paper_optim)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> None:
        """Reject impossible combinations with a ConfigError naming the key."""
        d, e = self.data, self.eval
        if not d.train:
            raise ConfigError("data.train: at least one training source is needed")
        for name, sources in (("data.train", d.train), ("data.val", d.val)):
            for i, s in enumerate(sources):
                if not s.root:
                    raise ConfigError(f"{name}[{i}].root: empty")
                if s.weight <= 0:
                    raise ConfigError(f"{name}[{i}].weight: must be > 0, got {s.weight}")
        w, h = self.codec.input_size
        if w <= 0 or h <= 0 or w % 32 or h % 32:
            raise ConfigError(f"codec.input_size: width and height must be positive multiples of 32 "
                              f"(HRNet's coarsest branch), got {list(self.codec.input_size)}")
        HeatmapCodec.from_config(self)  # the codec validates its own parameters (one place)
        if d.box_enlarge < 1:
            raise ConfigError(f"data.box_enlarge: must be >= 1, got {d.box_enlarge}")
        if not 0 <= d.scale < 1:
            raise ConfigError(f"data.scale: must be in [0, 1), got {d.scale}")
        for key in ("rotation_prob", "flip_prob"):
            if not 0 <= getattr(d, key) <= 1:
                raise ConfigError(f"data.{key}: must be a probability in [0, 1], got {getattr(d, key)}")
        if not 0 <= d.color_jitter < 1:
            raise ConfigError(f"data.color_jitter: must be in [0, 1), got {d.color_jitter}")
        if d.epoch_size < 0 or d.max_val < 0 or d.workers < 0:
            raise ConfigError("data.epoch_size, data.max_val and data.workers must be >= 0")
        if d.batch_size <= 0:
            raise ConfigError(f"data.batch_size: must be > 0, got {d.batch_size}")
        if e.every < 0 or self.max_batches < 0 or self.threads < 0:
            raise ConfigError("eval.every, max_batches and threads must be >= 0")
        if e.batch_size <= 0 or e.pck_threshold <= 0:
            raise ConfigError("eval.batch_size and eval.pck_threshold must be > 0")
        if self.precision == "bf16" and self.device == "cpu":
            if not cpu_supports_bf16():
                raise ConfigError("precision: bf16 was asked for on a CPU without bfloat16 support "
                                  "(use 'auto' or 'fp32')")
        if self.precision == "fp16" and self.device == "cpu":
            raise ConfigError("precision: fp16 autocast needs a GPU (use 'auto', 'fp32' or 'bf16' on CPU)")
