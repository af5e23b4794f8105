"""The pose stage's typed config: defaults are the paper's (SPEC section 2); YAML and --set override them."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pamtri.common.errors import ConfigError

from .heatmaps import DECODE_METHODS

DATA_FORMATS = ("pose_csv", "synthetic")


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
    """What to train and validate on, and how crops are made (input_size is width, height in pixels)."""
    train: list[DataSource] = field(default_factory=lambda: [DataSource()])
    val: list[DataSource] = field(default_factory=lambda: [DataSource(split="test")])
    input_size: tuple[int, int] = (256, 256)
    sigma: float = 2.0
    box_enlarge: float = 1.25
    scale: float = 0.25
    rotation: float = 30.0
    rotation_prob: float = 0.6
    flip_prob: float = 0.5
    colour_jitter: float = 0.2
    epoch_size: int = 0  # training samples per epoch; 0 = the sum of the training sources' sizes
    max_val: int = 0  # validate on the first N images only; 0 = all
    num_workers: int = 4


@dataclass
class ModelConfig:
    """HRNet width (a timm name) and optional initial weights (a local ImageNet or PoseEstNet file)."""
    name: str = "hrnet_w32"
    weights: str = ""
    # How heatmap cells sit on input pixels (pose.transforms.input_to_heatmap). 'reference' only for
    # weights trained by the reference code (then also eval.flip_shift: 1.0).
    cell_convention: Literal["centred", "reference"] = "centred"


@dataclass
class TrainConfig:
    """Optimisation (paper: batch 32, Adam 1e-3, x0.1 at 170 and 200 of 210 epochs, weight decay 1e-4)."""
    epochs: int = 210
    batch_size: int = 32  # global batch; divided over processes under torchrun
    lr: float = 1e-3
    weight_decay: float = 1e-4
    lr_steps: list[int] = field(default_factory=lambda: [170, 200])
    lr_factor: float = 0.1
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    device: str = "auto"
    seed: int = 0
    val_every: int = 1  # validate every N epochs (and after the last)
    max_steps: int = 0  # cap optimiser steps per epoch (smoke tests); 0 = no cap
    threads: int = 0  # torch CPU threads; 0 = torch's default


@dataclass
class EvalConfig:
    """Inference: flip test, decoding rule and PCK threshold (fraction of 0.25 x box diagonal)."""
    flip_test: bool = True
    flip_shift: float = 0.0  # cells; 0 is exact for pamtri's cell convention (see pose.heatmaps.flip_back)
    decode: Literal["dark", "reference"] = "dark"
    blur_sigma: float = 2.0  # DARK smoothing in cells
    batch_size: int = 32
    pck_threshold: float = 0.5


@dataclass
class PoseConfig:
    """The pose stage: data, model, train, eval."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> None:
        """Reject impossible combinations with a ConfigError naming the key."""
        d, t, e = self.data, self.train, self.eval
        if not d.train:
            raise ConfigError("data.train: at least one training source is needed")
        for name, sources in (("data.train", d.train), ("data.val", d.val)):
            for i, s in enumerate(sources):
                if not s.root:
                    raise ConfigError(f"{name}[{i}].root: empty")
                if s.weight <= 0:
                    raise ConfigError(f"{name}[{i}].weight: must be > 0, got {s.weight}")
        w, h = d.input_size
        if w <= 0 or h <= 0 or w % 32 or h % 32:
            raise ConfigError(f"data.input_size: width and height must be positive multiples of 32 "
                              f"(HRNet's coarsest branch), got {list(d.input_size)}")
        if d.sigma <= 0:
            raise ConfigError(f"data.sigma: must be > 0, got {d.sigma}")
        if d.box_enlarge < 1:
            raise ConfigError(f"data.box_enlarge: must be >= 1, got {d.box_enlarge}")
        if not 0 <= d.scale < 1:
            raise ConfigError(f"data.scale: must be in [0, 1), got {d.scale}")
        for key in ("rotation_prob", "flip_prob"):
            if not 0 <= getattr(d, key) <= 1:
                raise ConfigError(f"data.{key}: must be a probability in [0, 1], got {getattr(d, key)}")
        if not 0 <= d.colour_jitter < 1:
            raise ConfigError(f"data.colour_jitter: must be in [0, 1), got {d.colour_jitter}")
        if d.epoch_size < 0 or d.max_val < 0 or d.num_workers < 0:
            raise ConfigError("data.epoch_size, data.max_val and data.num_workers must be >= 0")
        if t.epochs <= 0 or t.batch_size <= 0 or t.lr <= 0:
            raise ConfigError("train.epochs, train.batch_size and train.lr must be > 0")
        if list(t.lr_steps) != sorted(t.lr_steps) or any(s <= 0 for s in t.lr_steps):
            raise ConfigError(f"train.lr_steps: must be increasing positive epochs, got {list(t.lr_steps)}")
        if t.val_every <= 0:
            raise ConfigError(f"train.val_every: must be >= 1, got {t.val_every}")
        if e.decode not in DECODE_METHODS:
            raise ConfigError(f"eval.decode: one of {DECODE_METHODS}, got {e.decode!r}")
        if e.batch_size <= 0 or e.blur_sigma < 0 or e.pck_threshold <= 0:
            raise ConfigError("eval.batch_size and eval.pck_threshold must be > 0, eval.blur_sigma >= 0")
        if t.precision == "bf16" and t.device == "cpu":
            from pamtri.common.runtime import cpu_supports_bf16
            if not cpu_supports_bf16():
                raise ConfigError("train.precision: bf16 was asked for on a CPU without bfloat16 support "
                                  "(use 'auto' or 'fp32')")
        if t.precision == "fp16" and t.device == "cpu":
            raise ConfigError("train.precision: fp16 autocast needs a GPU (use 'auto', 'fp32' or 'bf16' on CPU)")
