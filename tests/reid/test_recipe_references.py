"""Each anchor recipe resolved through `pamtri reid train --print-config` against a table of its reference's values,
each with the reference file it comes from, so that no later edit drifts silently; and the resolved learning-rate
schedule against the reference schedulers' formulas, epoch by epoch."""
import bisect
import math

import pytest
import yaml

from pamtri.common.schedule import OptimConfig, lr_factor
from pamtri.pipeline.cli import main
from tests.reid.test_baseline_configs import CONFIGS

BOT = "michuanhaohao/reid-strong-baseline@4bd21788 configs/softmax_triplet_with_center.yml"
BOT_DEFAULTS = "michuanhaohao/reid-strong-baseline config/defaults.py"
FR_VERI = "JDAI-CV/fast-reid@16655448 configs/VeRi/sbs_R50-ibn.yml"
FR_SBS = "JDAI-CV/fast-reid@07b8251c configs/Base-SBS.yml"
FR_BOT = "JDAI-CV/fast-reid@07b8251c configs/Base-bagtricks.yml"
FR_DEFAULTS = "JDAI-CV/fast-reid@15e1729a fastreid/config/defaults.py"
FR_RESNET = "JDAI-CV/fast-reid fastreid/modeling/backbones/resnet.py"
TR = "damo-cv/TransReID@6227ebdb configs/VeRi/vit_transreid_stride.yml"
TR_DEFAULTS = "damo-cv/TransReID@4adbe303 config/defaults.py"
TR_SCHED = "damo-cv/TransReID@c27e6bc9 solver/scheduler_factory.py"

# (our key, reference value, source: file and key)
REFERENCE = {
    "veri_bot_r50": [
        ("model.backbone", "resnet50", f"{BOT_DEFAULTS} MODEL.NAME resnet50"),
        ("model.last_stride", 1, f"{BOT_DEFAULTS} MODEL.LAST_STRIDE"),
        ("model.neck", "bnneck", f"{BOT_DEFAULTS} MODEL.NECK"),
        ("model.embedding", "after_bn", f"{BOT} TEST.NECK_FEAT after"),
        ("eval.metric", "cosine", f"{BOT} TEST.FEAT_NORM yes"),
        ("loss.label_smoothing", 0.1, f"{BOT} MODEL.IF_LABELSMOOTH on (epsilon 0.1)"),
        ("model.centers", True, f"{BOT} MODEL.IF_WITH_CENTER yes"),
        ("loss.center", 0.0005, f"{BOT} SOLVER.CENTER_LOSS_WEIGHT"),
        ("loss.center_lr", 0.5, f"{BOT} SOLVER.CENTER_LR"),
        ("loss.margin", 0.3, f"{BOT_DEFAULTS} SOLVER.MARGIN"),
        ("loss.soft_margin", False, f"{BOT_DEFAULTS} triplet with margin"),
        ("loss.triplet_feature", "before", f"{BOT_DEFAULTS} the triplet sees the global feature"),
        ("data.flip", True, f"{BOT} INPUT.PROB 0.5"),
        ("data.random_erasing", 0.5, f"{BOT} INPUT.RE_PROB"),
        ("sampler.batch_size", 64, f"{BOT} SOLVER.IMS_PER_BATCH"),
        ("sampler.k", 4, f"{BOT} DATALOADER.NUM_INSTANCE"),
        ("sampler.epoch", "pass", f"{BOT} DATALOADER.SAMPLER softmax_triplet (RandomIdentitySampler)"),
        ("optim.name", "adam", f"{BOT} SOLVER.OPTIMIZER_NAME"),
        ("optim.lr", 0.00035, f"{BOT} SOLVER.BASE_LR"),
        ("optim.weight_decay", 0.0005, f"{BOT} SOLVER.WEIGHT_DECAY"),
        ("optim.bias_lr_factor", 1.0, f"{BOT} SOLVER.BIAS_LR_FACTOR"),
        ("optim.epochs", 120, f"{BOT} SOLVER.MAX_EPOCHS"),
        ("optim.schedule", "step", f"{BOT_DEFAULTS} WarmupMultiStepLR"),
        ("optim.milestones", [40, 70], f"{BOT} SOLVER.STEPS"),
        ("optim.gamma", 0.1, f"{BOT} SOLVER.GAMMA"),
        ("optim.warmup_epochs", 10, f"{BOT} SOLVER.WARMUP_ITERS (epochs)"),
        ("optim.warmup_factor", 0.01, f"{BOT} SOLVER.WARMUP_FACTOR"),
        ("optim.epoch_offset", 1, "reid-strong-baseline engine/trainer.py scheduler.step() at EPOCH_STARTED"),
        ("precision", "fp32", "reid-strong-baseline engine/trainer.py (no mixed precision)"),
        ("eval.every", 40, f"{BOT} SOLVER.EVAL_PERIOD"),
    ],
    "veri_sbs_r50ibn": [
        ("model.backbone", "resnet50_ibn_a", f"{FR_VERI} MODEL.BACKBONE.WITH_IBN True"),
        ("model.non_local", True, f"{FR_SBS} MODEL.BACKBONE.WITH_NL True"),
        ("model.last_stride", 1, f"{FR_BOT} MODEL.BACKBONE.LAST_STRIDE"),
        ("model.neck", "bnneck", f"{FR_BOT} MODEL.HEADS.WITH_BNNECK"),
        ("model.pooling", "gem", f"{FR_SBS} MODEL.HEADS.POOL_LAYER GeneralizedMeanPoolingP"),
        ("model.classifier", "cosine", f"{FR_SBS} MODEL.HEADS.CLS_LAYER CircleSoftmax"),
        ("loss.id_loss", "circle", f"{FR_SBS} MODEL.HEADS.CLS_LAYER CircleSoftmax"),
        ("loss.scale", 64.0, f"{FR_SBS} MODEL.HEADS.SCALE"),
        ("loss.id_margin", 0.35, f"{FR_SBS} MODEL.HEADS.MARGIN"),
        ("loss.label_smoothing", 0.1, f"{FR_SBS} MODEL.LOSSES.CE.EPSILON"),
        ("loss.soft_margin", True, f"{FR_SBS} MODEL.LOSSES.TRI.MARGIN 0.0 (soft margin)"),
        ("loss.triplet_feature", "after", f"{FR_SBS} MODEL.HEADS.NECK_FEAT after"),
        ("loss.center", 0.0, f"{FR_SBS} MODEL.LOSSES.NAME (CE, Triplet)"),
        ("model.embedding", "after_bn", "fast-reid EmbeddingHead: the test feature is the BN output"),
        ("eval.metric", "cosine", f"{FR_DEFAULTS} TEST.METRIC cosine"),
        ("data.height", 256, f"{FR_VERI} INPUT.SIZE_TRAIN"),
        ("data.width", 256, f"{FR_VERI} INPUT.SIZE_TRAIN"),
        ("data.auto_augment", "autoaugment", f"{FR_SBS} INPUT.AUTOAUG.ENABLED"),
        ("data.auto_augment_prob", 0.1, f"{FR_SBS} INPUT.AUTOAUG.PROB"),
        ("data.random_erasing", 0.5, f"{FR_BOT} INPUT.REA.PROB"),
        ("data.flip", True, f"{FR_BOT} INPUT.FLIP.ENABLED"),
        ("sampler.batch_size", 64, f"{FR_VERI} SOLVER.IMS_PER_BATCH"),
        ("sampler.k", 16, f"{FR_SBS} DATALOADER.NUM_INSTANCE"),
        ("sampler.epoch", "images", "fast-reid NaiveIdentitySampler, iters_per_epoch = len(dataset) // IMS_PER_BATCH"),
        ("optim.name", "sgd", f"{FR_VERI} SOLVER.OPT SGD"),
        ("optim.lr", 0.01, f"{FR_VERI} SOLVER.BASE_LR"),
        ("optim.momentum", 0.9, f"{FR_DEFAULTS} SOLVER.MOMENTUM"),
        ("optim.nesterov", True, f"{FR_DEFAULTS} SOLVER.NESTEROV"),
        ("optim.weight_decay", 0.0005, f"{FR_SBS} SOLVER.WEIGHT_DECAY"),
        ("optim.weight_decay_bias", 0.0, f"{FR_DEFAULTS} SOLVER.WEIGHT_DECAY_BIAS"),
        ("optim.bias_lr_factor", 1.0, f"{FR_DEFAULTS} SOLVER.BIAS_LR_FACTOR"),
        ("optim.epochs", 60, f"{FR_VERI} SOLVER.MAX_ITER (epochs)"),
        ("optim.schedule", "cosine", f"{FR_SBS} SOLVER.SCHED CosineAnnealingLR"),
        ("optim.delay_epochs", 30, f"{FR_VERI} SOLVER.DELAY_ITERS (epochs)"),
        ("optim.warmup_prefix", False, "fast-reid: the delay counts from iteration 0, the warm-up inside it"),
        ("optim.min_lr", 7.7e-5, f"{FR_VERI} SOLVER.ETA_MIN_LR"),
        ("optim.warmup_epochs", 10, f"{FR_VERI} SOLVER.WARMUP_ITERS (epochs)"),
        ("optim.warmup_factor", 0.1, f"{FR_SBS} SOLVER.WARMUP_FACTOR"),
        ("model.freeze_epochs", 10, f"{FR_VERI} SOLVER.FREEZE_ITERS (epochs)"),
        ("model.freeze_iters", 0, f"{FR_VERI} (the freeze is counted in epochs)"),
        ("eval.every", 20, f"{FR_VERI} TEST.EVAL_PERIOD"),
        ("precision", "fp16", f"{FR_SBS} SOLVER.AMP.ENABLED"),
    ],
    "veri_vit_sie": [
        ("model.backbone", "timm/vit_base_patch16_224.orig_in21k_ft_in1k",
         f"{TR} MODEL.PRETRAIN_PATH jx_vit_base_p16_224-80ecf9dd.pth"),
        ("model.patch_stride", 12, f"{TR} MODEL.STRIDE_SIZE [12, 12]"),
        ("model.sie_coefficient", 3.0, f"{TR} MODEL.SIE_COE"),
        ("model.sie_views", 8, f"{TR} MODEL.SIE_VIEW True (VeRi: 8 orientations)"),
        ("model.sie_mode", "joint", "damo-cv/TransReID model/backbones/vit_pytorch.py sie_embed (camera x view)"),
        ("model.drop_path", 0.1, f"{TR_DEFAULTS} MODEL.DROP_PATH"),
        ("model.jpm", True, f"{TR} MODEL.JPM"),
        ("model.jpm_shift", 8, f"{TR} MODEL.SHIFT_NUM"),
        ("model.jpm_groups", 2, f"{TR_DEFAULTS} MODEL.SHUFFLE_GROUP"),
        ("model.jpm_parts", 4, f"{TR_DEFAULTS} MODEL.DEVIDE_LENGTH"),
        ("model.jpm_rearrange", True, f"{TR} MODEL.RE_ARRANGE"),
        ("model.neck", "bnneck", f"{TR_DEFAULTS} MODEL.NECK"),
        ("model.embedding", "before_bn", f"{TR} TEST.NECK_FEAT before"),
        ("eval.metric", "cosine", f"{TR} TEST.FEAT_NORM yes"),
        ("loss.id_loss", "softmax", f"{TR_DEFAULTS} MODEL.ID_LOSS_TYPE"),
        ("loss.label_smoothing", 0.0, f"{TR} MODEL.IF_LABELSMOOTH off"),
        ("loss.soft_margin", True, f"{TR} MODEL.NO_MARGIN True"),
        ("loss.triplet_feature", "before", "damo-cv/TransReID model/make_model.py: the triplet sees global_feat"),
        ("loss.id", 1.0, f"{TR_DEFAULTS} MODEL.ID_LOSS_WEIGHT"),
        ("loss.triplet", 1.0, f"{TR_DEFAULTS} MODEL.TRIPLET_LOSS_WEIGHT"),
        ("loss.center", 0.0, f"{TR} MODEL.IF_WITH_CENTER no"),
        ("data.height", 256, f"{TR} INPUT.SIZE_TRAIN"),
        ("data.width", 256, f"{TR} INPUT.SIZE_TRAIN"),
        ("data.mean", [0.5, 0.5, 0.5], f"{TR} INPUT.PIXEL_MEAN"),
        ("data.std", [0.5, 0.5, 0.5], f"{TR} INPUT.PIXEL_STD"),
        ("data.random_erasing", 0.5, f"{TR} INPUT.RE_PROB"),
        ("data.flip", True, f"{TR} INPUT.PROB 0.5"),
        ("sampler.batch_size", 64, f"{TR} SOLVER.IMS_PER_BATCH"),
        ("sampler.k", 4, f"{TR} DATALOADER.NUM_INSTANCE"),
        ("sampler.epoch", "pass", f"{TR} DATALOADER.SAMPLER softmax_triplet (RandomIdentitySampler)"),
        ("optim.name", "sgd", f"{TR} SOLVER.OPTIMIZER_NAME"),
        ("optim.lr", 0.01, f"{TR} SOLVER.BASE_LR"),
        ("optim.momentum", 0.9, f"{TR_DEFAULTS} SOLVER.MOMENTUM"),
        ("optim.nesterov", False, "damo-cv/TransReID solver/make_optimizer.py torch.optim.SGD(momentum=...)"),
        ("optim.weight_decay", 0.0001, f"{TR} SOLVER.WEIGHT_DECAY"),
        ("optim.weight_decay_bias", 0.0001, f"{TR} SOLVER.WEIGHT_DECAY_BIAS"),
        ("optim.bias_lr_factor", 2.0, f"{TR} SOLVER.BIAS_LR_FACTOR"),
        ("optim.epochs", 120, f"{TR} SOLVER.MAX_EPOCHS"),
        ("optim.schedule", "cosine", f"{TR_SCHED} CosineLRScheduler"),
        ("optim.warmup_epochs", 5, f"{TR_DEFAULTS} SOLVER.WARMUP_EPOCHS"),
        ("optim.warmup_factor", 0.01, f"{TR_SCHED} warmup_lr_init = 0.01 * BASE_LR"),
        ("optim.min_lr", 2e-5, f"{TR_SCHED} lr_min = 0.002 * BASE_LR"),
        ("optim.warmup_prefix", False, f"{TR_SCHED} timm's cosine counts from epoch 0"),
        ("optim.epoch_offset", 1, "damo-cv/TransReID processor/processor.py scheduler.step(epoch), epochs from 1"),
        ("eval.every", 120, f"{TR} SOLVER.EVAL_PERIOD"),
        ("precision", "fp16", "damo-cv/TransReID@1075dd5e processor/processor.py amp.autocast + GradScaler"),
    ],
}
# the pose variants change only the pose inputs
POSE = {"veri_bot_r50_k_h": ("veri_bot_r50", {"data.pose_source": "keypoints", "model.heatmaps": True,
                                              "model.keypoints": True}),
        "veri_sbs_r50ibn_k_h": ("veri_sbs_r50ibn", {"data.pose_source": "keypoints", "model.heatmaps": True,
                                                    "model.keypoints": True}),
        "veri_vit_sie_pose": ("veri_vit_sie", {"data.pose_source": "keypoints", "model.heatmaps": True,
                                               "model.keypoints": True, "model.sie_view_source": "pose"})}
ANCHORS = {"veri_bot_r50": "78.3 mAP / 95.8 rank-1", "veri_sbs_r50ibn": "81.9 mAP / 97.0 rank-1",
           "veri_vit_sie": "82.1 mAP / 97.4 rank-1"}


def _resolved(name, capsys, tmp_path, monkeypatch) -> dict:
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["reid", "train", "--config", str(CONFIGS / f"{name}.yaml"), "--out", str(tmp_path / "run"),
                 "--print-config"]) == 0
    return yaml.safe_load(capsys.readouterr().out)


def _get(cfg: dict, key: str):
    for part in key.split("."):
        cfg = cfg[part]
    return cfg


def _flat(cfg: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in cfg.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_recipe_equals_its_reference_value_by_value(name, capsys, tmp_path, monkeypatch):
    cfg = _resolved(name, capsys, tmp_path, monkeypatch)
    wrong = [f"{key} = {_get(cfg, key)!r}, reference {value!r} ({source})" for key, value, source in REFERENCE[name]
             if (_get(cfg, key) != pytest.approx(value) if isinstance(value, float) else _get(cfg, key) != value)]
    assert not wrong, "\n".join(wrong)
    text = (CONFIGS / f"{name}.yaml").read_text()
    assert ANCHORS[name] in text and "Reference" in text and "Differences" in text


@pytest.mark.parametrize("name", sorted(POSE))
def test_pose_variant_changes_only_the_pose_inputs(name, capsys, tmp_path, monkeypatch):
    base, changes = POSE[name]
    a = _flat(_resolved(base, capsys, tmp_path, monkeypatch))
    b = _flat(_resolved(name, capsys, tmp_path, monkeypatch))
    diff = {k for k in a if a[k] != b[k]} - {"name"}
    assert diff == set(changes) and all(b[k] == v for k, v in changes.items())


def _bot_factor(epoch: int) -> float:
    """reid-strong-baseline solver/lr_scheduler.py WarmupMultiStepLR at scheduler step epoch + 1 (stepped at each
    epoch's start): warm-up 0.01 (1 - a) + a, a = step / 10, times 0.1 ** bisect_right([40, 70], step)."""
    step = epoch + 1
    warm = 0.01 * (1 - step / 10) + step / 10 if step < 10 else 1.0
    return warm * 0.1 ** bisect.bisect_right([40, 70], step)


def _transreid_lr(epoch: int) -> float:
    """timm CosineLRScheduler as TransReID's create_scheduler builds it, at t = epoch + 1."""
    t, base = epoch + 1, 0.01
    if t < 5:
        return 0.01 * base + t * (base - 0.01 * base) / 5
    return 0.002 * base + 0.5 * (base - 0.002 * base) * (1 + math.cos(math.pi * min(t, 120) / 120))


def _fastreid_lr(epoch: int) -> float:
    """fast-reid at the start of each epoch: warm-up from 0.1 over 10 epochs, constant to 30, cosine to 7.7e-5 at 60."""
    base = 0.01
    if epoch < 10:
        return base * (0.1 + 0.9 * epoch / 10)
    if epoch < 30:
        return base
    return 7.7e-5 + 0.5 * (base - 7.7e-5) * (1 + math.cos(math.pi * (epoch - 30) / 30))


@pytest.mark.parametrize("name, reference", [("veri_bot_r50", lambda e: 0.00035 * _bot_factor(e)),
                                             ("veri_vit_sie", _transreid_lr), ("veri_sbs_r50ibn", _fastreid_lr)])
def test_schedule_follows_the_reference_scheduler(name, reference, capsys, tmp_path, monkeypatch):
    o = _resolved(name, capsys, tmp_path, monkeypatch)["optim"]
    cfg = OptimConfig(**o)
    ours = [cfg.lr * lr_factor(e, cfg) for e in range(cfg.epochs)]
    assert ours == pytest.approx([reference(e) for e in range(cfg.epochs)], rel=1e-9)
    if name == "veri_bot_r50":  # the decay at the 40th epoch (index 39), not one epoch late
        assert ours[38] == pytest.approx(0.00035) and ours[39] == pytest.approx(0.000035)
