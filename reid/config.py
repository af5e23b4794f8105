"""Typed configuration of a ReID experiment (defaults = PAMTRI's VeRi RS+MT+K+H row).

YAML files under ``configs/reid/`` override these defaults (``_base_`` inheritance) and ``--set`` overrides
the YAML. ``ReIDConfig.validate`` rejects impossible combinations with a message naming the keys.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pamtri.common.errors import ConfigError
from pamtri.common.schedule import OptimConfig
from pamtri.data.images import IMAGENET_MEAN, IMAGENET_STD
from pamtri.pose.keypoints import NUM_KEYPOINTS, NUM_SEGMENTS


@dataclass
class DataSource:
    """One training data set: its root, split, on-disk format, domain (real or synthetic) and pose cache."""
    root: str = ""
    split: str = "train"
    format: str = "auto"
    domain: Literal["real", "synthetic"] = "real"
    pose_cache: str = ""           # cache folder of this split (data.pose_source: cache)


@dataclass
class DataConfig:
    """Where the images come from, the input size, pose channels and augmentation."""
    train: list[DataSource] = field(default_factory=lambda: [DataSource(root="data/VeRi")])
    eval_root: str = ""            # data set root with query + test splits ("" = first training root)
    eval_format: str = "auto"
    query_split: str = "query"
    gallery_split: str = "test"
    test_size: int = 0             # VehicleID 800/1600/2400, VERI-Wild 3000/5000/10000 (0 = the smallest present)
    draws: int = 10                # VehicleID: gallery draws (one image per vehicle) that reid eval averages over
    draw_seed: int = 0             # VehicleID: seed of the draws (recorded in metrics.json)
    height: int = 256              # input size in pixels
    width: int = 256
    pose_source: Literal["none", "keypoints", "cache"] = "keypoints"
    query_cache: str = ""          # pose cache folders of the query / gallery split (pose_source: cache)
    gallery_cache: str = ""
    heatmap_size: int = 64         # cells per side of the pose channels' grid over the image, then resized to
                                   # it; pose caches (cache build --grid) and inference use the same grid
    heatmap_sigma: float = 2.0     # Gaussian sigma in heatmap cells
    segment_threshold: float = 0.5
    translate: bool = True         # enlarge by 1/8, then random crop back to (height, width)
    flip: bool = True              # horizontal flip with left/right swaps of keypoints and channels
    random_erasing: float = 0.0    # probability per image (image channels only)
    color_jitter: float = 0.0      # strength in [0, 1] of brightness/contrast/saturation jitter (image only)
    # torchvision's AutoAugment (ImageNet policy) or RandAugment on the RGB channels, photometric ops only (their
    # shear / translate / rotate are skipped: the pose channels and keypoints could not follow them)
    auto_augment: Literal["none", "autoaugment", "randaugment"] = "none"
    auto_augment_prob: float = 0.1  # probability per image (fast-reid SBS: INPUT.AUTOAUG.PROB 0.1)
    randaugment_ops: int = 2        # RandAugment's num_ops
    randaugment_magnitude: int = 9  # RandAugment's magnitude, 0-30
    mean: tuple[float, float, float] = IMAGENET_MEAN   # RGB in [0, 1]; the pose channels use their means
    std: tuple[float, float, float] = IMAGENET_STD
    workers: int = 2

    def validate(self) -> None:
        if self.height <= 0 or self.width <= 0:
            raise ConfigError(f"data.height/data.width must be positive, got {self.height}x{self.width}")
        if not 0.0 <= self.random_erasing <= 1.0:
            raise ConfigError(f"data.random_erasing is a probability in [0, 1], got {self.random_erasing}")
        if not 0.0 <= self.color_jitter <= 1.0:
            raise ConfigError(f"data.color_jitter must be in [0, 1], got {self.color_jitter}")
        if not 0.0 <= self.auto_augment_prob <= 1.0:
            raise ConfigError(f"data.auto_augment_prob is a probability in [0, 1], got {self.auto_augment_prob}")
        if self.randaugment_ops < 0 or not 0 <= self.randaugment_magnitude <= 30:
            raise ConfigError(f"data.randaugment_ops must be >= 0 and data.randaugment_magnitude in [0, 30], got "
                              f"{self.randaugment_ops} and {self.randaugment_magnitude}")
        if self.heatmap_size <= 0 or self.heatmap_sigma <= 0:
            raise ConfigError("data.heatmap_size and data.heatmap_sigma must be positive")
        if self.pose_source == "cache":
            for i, src in enumerate(self.train):
                if not src.pose_cache:
                    raise ConfigError(f"data.pose_source is 'cache' but data.train[{i}].pose_cache names no "
                                      f"folder (build one with: pamtri cache build --data {src.root or 'ROOT'} "
                                      f"--split {src.split} --out DIR)")
        if self.workers < 0:
            raise ConfigError("data.workers must be >= 0")
        if self.test_size < 0 or self.draws < 1:
            raise ConfigError(f"data.test_size must be >= 0 (0 = the smallest test set) and data.draws >= 1, got "
                              f"{self.test_size} and {self.draws}")


BACKBONES = ("densenet121", "resnet50", "resnet50_ibn_a")  # besides timm/<name>


def is_vit(backbone: str) -> bool:
    """True for the backbone names built as TransReID ViTs (``timm/vit_*``, reid/vit.py)."""
    return backbone.startswith("timm/vit_")


@dataclass
class ModelConfig:
    """The network: backbone, pooling, neck, input channels (H, S), keypoint vector (K) and heads."""
    backbone: str = "densenet121"  # densenet121 | resnet50 | resnet50_ibn_a | timm/<any timm model name>
    pretrained: str | None = None  # local ImageNet state dict (weights/densenet121.pth), "imagenet" (torchvision's
                                   # or timm's file through the torch hub cache) or None = random
    pooling: Literal["avg", "max", "gem"] = "avg"  # gem: generalised mean, learnable exponent initialised to 3
    last_stride: Literal[1, 2] = 2  # stride of the last stage (ResNet-style backbones); 1 doubles its resolution
    neck: Literal["fc", "bnneck"] = "fc"  # PAMTRI's FC + Leaky ReLU, or BNNeck (Luo et al. 2019): BN, bias frozen
    classifier: Literal["linear", "cosine"] = "linear"  # ID logits: x W^T + b, or cos(x, W) for loss.id_loss margins
    centers: bool = False          # learnable class centres (ids x D) for loss.center (optimiser: loss.center_lr)
    freeze_iters: int = 0          # backbone frozen (no gradient, BN statistics fixed) for the first N optimiser steps
    freeze_epochs: int = 0         # ... or for the first N epochs (fast-reid v0.2's FREEZE_ITERS, counted in epochs)
    non_local: bool = False        # fast-reid's non-local blocks (WITH_NL): after the last 2 blocks of layer2 and the
                                   # last 3 of layer3 (ResNet-50 placement [0, 2, 3, 0])
    heatmaps: bool = True          # H: 36 heatmap input channels
    segments: bool = False         # S: 13 segment input channels
    keypoints: bool = True         # K: 108-d keypoint vector concatenated to the pooled feature
    id_fc: int = 1024              # ReID FC width (Leaky ReLU); 0 = classifier directly on the pooled feature
    attr_fc: int = 512             # colour/type/orientation FC width; 0 = classifier directly on the feature
    id_head: bool = True           # vehicle-ID classifier
    color: bool = True
    type: bool = True
    orientation: bool = False
    orientation_bins: int = 6
    domain: bool = False           # real-vs-synthetic classifier behind a gradient reversal layer
    grl: Literal["ramp", "constant"] = "ramp"
    grl_coefficient: float = 1.0   # constant coefficient, or the ramp's final value
    # test feature: "auto" = "fc" with the FC neck, "after_bn" with BNNeck; "pool" = the pooled backbone feature;
    # "before_bn" = the BNNeck's input (pooled feature [+ keypoint vector])
    embedding: Literal["auto", "fc", "pool", "after_bn", "before_bn"] = "auto"
    num_colors: int = 0            # 0 = from the training labels (max + 1)
    num_types: int = 0
    # ViT (backbone timm/vit_*, TransReID, reid/vit.py); the feature is the CLS token, model.pooling stays avg
    input_size: tuple[int, int] = (0, 0)  # (H, W) the patch grid is built for; (0, 0) = data.height x data.width
    patch_stride: int = 12         # stride of the 16 x 16 patch convolution; 16 = timm's non-overlapping patches
    sie_cameras: int = 0           # SIE: N camera embeddings for the data set's camera ids 0..N-1 (VeRi c001-c020:
                                   # 21); -1 (unknown) adds nothing; 0 = off
    sie_views: int = 0             # SIE: M viewpoints (label: model.orientation_bins bins; pose: 8); 0 = off
    sie_coefficient: float = 3.0   # SIE weight (TransReID's sie_xishu)
    sie_view_source: Literal["label", "pose"] = "label"  # view ids: orientation labels, or the keypoints' visibility
    # joint: one (cameras x views, D) table indexed camera * views + view (TransReID's sie_embed); sum: a camera and
    # a view table added (cannot express camera-view interactions)
    sie_mode: Literal["sum", "joint"] = "sum"
    drop_path: float = 0.0         # stochastic depth of the ViT blocks, linear from 0 to this (TransReID: 0.1)
    # JPM (TransReID's jigsaw patch module): the last block twice, global + jpm_parts local branches over shifted
    # (jpm_shift) and shuffled (jpm_groups) patch tokens; test feature [global, local / 4 ...] (5 x D)
    jpm: bool = False
    jpm_shift: int = 5
    jpm_groups: int = 2
    jpm_parts: int = 4
    jpm_rearrange: bool = True
    # part features (issue 25, PVEN-style): the last feature map (ViT: the patch tokens) pooled inside each of the 13
    # body-part segments or inside 5 part groups (front, back, left side, right side, top), masks rasterised on the
    # feature grid from the keypoint vector; each part with its visibility (area x keypoint confidence x view gate)
    parts: Literal["none", "segments", "groups"] = "none"
    part_dim: int = 256            # width of each part feature (a shared Linear from the backbone's channels)
    part_view_gate: float = 0.5    # factor on the visibility of a face the pose-derived view does not name (1: off)

    def validate(self) -> None:
        if self.id_fc < 0 or self.attr_fc < 0:
            raise ConfigError("model.id_fc and model.attr_fc must be >= 0")
        if self.backbone not in BACKBONES and not (self.backbone.startswith("timm/") and len(self.backbone) > 5):
            raise ConfigError(f"model.backbone: unknown backbone {self.backbone!r} (expected one of "
                              f"{', '.join(BACKBONES)} or timm/<model name>)")
        if self.last_stride == 1 and self.backbone == "densenet121":
            raise ConfigError("model.last_stride: 1 applies to ResNet-style backbones, not densenet121")
        if self.neck == "bnneck":
            if self.id_fc:
                raise ConfigError(f"model.neck is 'bnneck' (BN on the pooled feature) but model.id_fc is {self.id_fc}; "
                                  "set model.id_fc: 0")
            if self.embedding_source == "fc":
                raise ConfigError("model.embedding 'fc' needs model.neck 'fc'; with bnneck use after_bn or before_bn")
        elif self.embedding_source in ("after_bn", "before_bn"):
            raise ConfigError(f"model.embedding '{self.embedding}' needs model.neck: bnneck")
        if self.embedding_source == "fc" and self.id_fc == 0:
            raise ConfigError("model.embedding is 'fc' but model.id_fc is 0 (no ReID FC layer); use embedding: pool")
        if self.freeze_iters < 0 or self.freeze_epochs < 0:
            raise ConfigError(f"model.freeze_iters / model.freeze_epochs must be >= 0, got {self.freeze_iters} and "
                              f"{self.freeze_epochs}")
        if self.orientation_bins < 2:
            raise ConfigError(f"model.orientation_bins must be >= 2, got {self.orientation_bins}")
        if self.parts != "none" and (self.part_dim < 1 or not 0.0 <= self.part_view_gate <= 1.0):
            raise ConfigError(f"model.part_dim must be >= 1 and model.part_view_gate in [0, 1], got {self.part_dim} "
                              f"and {self.part_view_gate}")
        if self.parts != "none" and self.jpm:
            raise ConfigError("model.parts and model.jpm are two kinds of local branch; turn one off")
        self._validate_vit()

    @property
    def uses_pose(self) -> bool:
        """Whether the network reads the pose stage: pose channels (H, S), the keypoint vector (K), or part masks
        rasterised from the keypoint vector (model.parts)."""
        return self.heatmaps or self.segments or self.keypoints or self.parts != "none"

    def _validate_vit(self) -> None:
        """The ViT keys: only with a timm/vit_* backbone, SIE sizes >= 0, the view count its source gives."""
        vit = is_vit(self.backbone)
        if not vit and (self.sie_cameras or self.sie_views):
            raise ConfigError(f"model.sie_cameras / model.sie_views need a ViT backbone (timm/vit_*), not "
                              f"{self.backbone}")
        if vit and (self.pooling != "avg" or self.last_stride != 2):
            raise ConfigError("model.pooling and model.last_stride apply to CNN backbones; the ViT's feature is its "
                              "CLS token (leave pooling: avg, last_stride: 2)")
        if not vit and (self.jpm or self.drop_path):
            raise ConfigError(f"model.jpm / model.drop_path need a ViT backbone (timm/vit_*), not {self.backbone}")
        if self.non_local and self.backbone not in ("resnet50", "resnet50_ibn_a"):
            raise ConfigError(f"model.non_local places fast-reid's blocks in a ResNet-50 (resnet50, resnet50_ibn_a), "
                              f"not {self.backbone}")
        if not 0 <= self.drop_path < 1 or self.jpm_parts < 1 or self.jpm_groups < 1 or self.jpm_shift < 0:
            raise ConfigError("model.drop_path must be in [0, 1), model.jpm_parts / jpm_groups >= 1, jpm_shift >= 0")
        if self.patch_stride < 1 or self.sie_cameras < 0 or self.sie_views < 0:
            raise ConfigError("model.patch_stride must be >= 1, model.sie_cameras and model.sie_views >= 0")
        if self.sie_views and self.sie_view_source == "pose" and self.sie_views != 8:
            raise ConfigError(f"model.sie_view_source 'pose' gives 8 views (reid/vit.py VIEW_NAMES); set "
                              f"model.sie_views: 8, not {self.sie_views}")
        if self.sie_views and self.sie_view_source == "label" and self.sie_views != self.orientation_bins:
            raise ConfigError(f"model.sie_views = {self.sie_views} with view labels: the labels are "
                              f"model.orientation_bins = {self.orientation_bins} bins; set both to the same number")

    @property
    def embedding_source(self) -> str:
        """Which feature is the embedding, model.embedding resolved: fc | pool | after_bn | before_bn ("auto"
        follows the neck)."""
        if self.embedding != "auto":
            return self.embedding
        return "after_bn" if self.neck == "bnneck" else "fc"

    @property
    def in_channels(self) -> int:
        return sum(self.input_groups)

    @property
    def input_groups(self) -> list[int]:
        """The input's channel groups in order: RGB, then the heatmaps and the segments when the model takes them."""
        return [3] + ([NUM_KEYPOINTS] if self.heatmaps else []) + ([NUM_SEGMENTS] if self.segments else [])


@dataclass
class LossConfig:
    """Loss terms and weights: PAMTRI's weighted sum or StRDAN's L_joint + w * L_disjoint."""
    objective: Literal["pamtri", "strdan"] = "pamtri"
    triplet: float = 1.0
    margin: float = 0.3
    soft_margin: bool = False
    # the triplet (and center) loss's feature with BNNeck: its input (BoT, TransReID) or output (fast-reid's
    # NECK_FEAT: after)
    triplet_feature: Literal["before", "after"] = "before"
    id: float = 1.0
    center: float = 0.0            # center loss (Wen et al. 2016) weight: mean ||f - c_y||^2 on the triplet's feature
    center_lr: float = 0.0         # > 0: the centres get their own SGD at this rate on the unweighted center-loss
                                   # gradient (BoT: 0.5); 0: the main optimiser trains them
    id_loss: Literal["softmax", "cosface", "arcface", "circle"] = "softmax"  # margins need model.classifier: cosine
    scale: float = 64.0            # s of the cosine logits (model.classifier: cosine)
    id_margin: float = 0.35        # m of CosFace (cos - m), ArcFace (angle + m, radians), Circle (relaxation)
    label_smoothing: float = 0.0
    color: float = 0.125
    type: float = 0.125
    orientation: float = 0.125
    domain: float = 1.0
    part_id: float = 1.0           # model.parts: the part heads' ID loss (mean over parts, visible parts only)
    part_triplet: float = 1.0      # model.parts: batch-hard triplet on the co-visible part distance
    # batch_hard: hardest positive / negative of the batch; view_aware (VANet's argument): hardest positive among the
    # anchor's other-view images and hardest negative among its same-view images (batch-hard where a batch has none)
    triplet_mining: Literal["batch_hard", "view_aware"] = "batch_hard"
    view_source: Literal["pose", "label"] = "pose"  # views for view_aware mining: pose_view of the keypoints, or labels
    disjoint_weight: float = 1.0   # StRDAN's w (colour, type, orientation)
    id_real_only: bool = False     # StRDAN authors' code: ID cross-entropy on real images only

    def validate(self) -> None:
        for name in ("triplet", "id", "center", "center_lr", "color", "type", "orientation", "domain",
                     "disjoint_weight", "margin", "part_id", "part_triplet"):
            if getattr(self, name) < 0:
                raise ConfigError(f"loss.{name} must be >= 0, got {getattr(self, name)}")
        if self.scale <= 0 or self.id_margin < 0:
            raise ConfigError(f"loss.scale must be positive and loss.id_margin >= 0, got {self.scale} and "
                              f"{self.id_margin}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"loss.label_smoothing must be in [0, 1), got {self.label_smoothing}")


@dataclass
class SamplerConfig:
    """Batch composition: P identities x K images, or StRDAN's n real + n synthetic identities x m images."""
    kind: Literal["identity", "domain"] = "identity"
    batch_size: int = 32
    k: int = 4                     # images per identity (K; StRDAN's m)
    # identity sampler's epoch: one pass over the identities' groups of K (BoT's and TransReID's
    # RandomIdentitySampler), or images // (batch size x ranks) batches drawn from consecutive passes (fast-reid's
    # NaiveIdentitySampler stream cut at len(dataset) // IMS_PER_BATCH iterations per epoch)
    epoch: Literal["pass", "images"] = "pass"

    @property
    def ids_per_batch(self) -> int:
        """P (identity sampler) or n per domain (domain sampler)."""
        per = self.batch_size // self.k
        return per // 2 if self.kind == "domain" else per

    def validate(self) -> None:
        if self.k <= 0 or self.batch_size <= 0:
            raise ConfigError("sampler.k and sampler.batch_size must be positive")
        if self.k > self.batch_size:
            raise ConfigError(f"sampler.k = {self.k} images per identity exceeds sampler.batch_size = "
                              f"{self.batch_size}")
        if self.batch_size % self.k:
            raise ConfigError(f"sampler.batch_size = {self.batch_size} is not a multiple of sampler.k = {self.k}")
        if self.kind == "domain" and (self.batch_size // self.k) % 2:
            raise ConfigError(f"sampler.kind 'domain' needs an even number of identities per batch "
                              f"(batch_size / k = {self.batch_size // self.k})")


def _reid_optim() -> OptimConfig:
    """Adam 3e-4, weight decay 5e-4, 60 epochs, x0.1 at epochs 20 and 40."""
    return OptimConfig(name="adam", lr=3e-4, weight_decay=5e-4, epochs=60, milestones=[20, 40], gamma=0.1)


@dataclass
class EvalConfig:
    """Test-time protocol: features (flip, query expansion, track averaging), distance, re-ranking, camera rule."""
    every: int = 10                # evaluate every N epochs (and after the last); 0 = only at the end
    metric: Literal["euclidean", "cosine"] = "euclidean"
    flip_feature: bool = False     # average each image's feature with its mirror's (pose channels swapped)
    query_expansion: bool = False  # alpha-QE over query + gallery before the distances (and re-ranking)
    qe_k: int = 5
    qe_alpha: float = 3.0
    track_file: str = ""           # CityFlow test_track.txt: gallery features averaged per track ("" = off)
    rerank: bool = False
    k1: int = 20
    k2: int = 6
    lambda_value: float = 0.3
    rerank_top: int = 1000         # k-NN re-ranking: candidates per query (the rest keep the original order after)
    # dense re-ranking (the published algorithm, every gallery image re-ranked) when its (Q+G)^2 float32 matrices fit
    # this many MiB; the k-NN lists of rerank_top candidates beyond it (the run logs and records which it used)
    rerank_memory_mib: int = 8192
    batch_size: int = 64
    ignore_cameras: bool = False   # keep same-id same-camera gallery images (data sets without cameras)
    max_rank: int = 50
    topk_map: int = 100
    # models with part features: distance = global + part_weight x co-visible part distance (docs/reid.md); 0: global
    part_weight: float = 1.0
    # also report the metrics over query-gallery pairs of different views only (the "cross_view" entry): same-view
    # gallery images are left out of each query's ranking; views from the keypoints (pose_view) or the view labels
    cross_view: bool = True

    def validate(self) -> None:
        if self.part_weight < 0:
            raise ConfigError(f"eval.part_weight must be >= 0, got {self.part_weight}")
        if self.every < 0 or self.batch_size <= 0:
            raise ConfigError("eval.every must be >= 0 and eval.batch_size positive")
        if self.qe_k < 1 or self.qe_alpha < 0:
            raise ConfigError(f"eval.qe_k must be >= 1 and eval.qe_alpha >= 0, got {self.qe_k} and {self.qe_alpha}")
        if self.rerank_memory_mib < 0:
            raise ConfigError(f"eval.rerank_memory_mib must be >= 0 (0: always k-NN lists), got "
                              f"{self.rerank_memory_mib}")
        if self.k1 < 1 or self.k2 < 1 or not 0 <= self.lambda_value <= 1 or self.rerank_top < 1:
            raise ConfigError("eval.k1, eval.k2 and eval.rerank_top must be >= 1 and eval.lambda_value in [0, 1]")


@dataclass
class ReIDConfig:
    """One ReID experiment."""
    name: str = "reid"
    seed: int = 0
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    threads: int = 0               # torch CPU threads; 0 = torch's default
    max_batches: int = 0           # per epoch; 0 = a full pass of the sampler (budgeted runs use a cap)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    optim: OptimConfig = field(default_factory=_reid_optim)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> None:
        m, d, loss, s = self.model, self.data, self.loss, self.sampler
        if (m.heatmaps or m.segments) and d.pose_source == "none":
            raise ConfigError("model.heatmaps/model.segments need pose channels but data.pose_source is 'none'")
        if m.keypoints and d.pose_source == "none":
            raise ConfigError("model.keypoints needs keypoints but data.pose_source is 'none'")
        if m.parts != "none" and d.pose_source == "none":
            raise ConfigError(f"model.parts '{m.parts}' rasterises its part masks from keypoints but data.pose_source "
                              "is 'none'")
        if not d.train:
            raise ConfigError("data.train lists no training data set")
        if m.sie_views and m.sie_view_source == "pose" and d.pose_source == "none":
            raise ConfigError("model.sie_view_source 'pose' needs keypoints but data.pose_source is 'none'")
        if any(m.input_size) and tuple(m.input_size) != (d.height, d.width):
            raise ConfigError(f"model.input_size {tuple(m.input_size)} differs from data.height x data.width "
                              f"({d.height}, {d.width}); set it to (0, 0) (= the data size) or to the same size")
        if loss.id > 0 and not m.id_head:
            raise ConfigError("loss.id > 0 but model.id_head is false (no ID classifier)")
        if (loss.id_loss != "softmax") != (m.classifier == "cosine"):
            raise ConfigError(f"loss.id_loss '{loss.id_loss}' and model.classifier '{m.classifier}' do not go "
                              "together: cosface / arcface / circle need classifier: cosine, softmax needs linear")
        if (loss.center > 0) != m.centers:
            raise ConfigError(f"loss.center = {loss.center} and model.centers = {m.centers}: the center loss needs the "
                              "model's class centres and the centres need the loss; set both or neither")
        if loss.center_lr > 0 and loss.center <= 0:
            raise ConfigError(f"loss.center_lr = {loss.center_lr} sets the centres' own SGD but loss.center is 0 "
                              "(no center loss); set loss.center or loss.center_lr: 0")
        if loss.triplet <= 0 and loss.id <= 0:
            raise ConfigError("loss.triplet and loss.id are both 0: nothing trains the ReID feature")
        if m.domain and loss.domain > 0 and len({src.domain for src in d.train}) < 2:
            raise ConfigError("model.domain is on but data.train has only one domain; add a synthetic (or real) "
                              "source or turn the domain head off")
        if s.kind == "domain" and len({src.domain for src in d.train}) < 2:
            raise ConfigError("sampler.kind 'domain' needs both a real and a synthetic training source")
        if loss.id_real_only and "real" not in {src.domain for src in d.train}:
            raise ConfigError("loss.id_real_only is set but no training source is real")
        if self.max_batches < 0 or self.threads < 0:
            raise ConfigError("max_batches and threads must be >= 0")
