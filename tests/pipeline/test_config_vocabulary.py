"""One config vocabulary for both stages: shared names, one OptimConfig, old pose names refused with the new one."""
from __future__ import annotations

import typing
from pathlib import Path

import pytest

from pamtri.common.config import load_config
from pamtri.common.errors import ConfigError
from pamtri.common.schedule import OptimConfig
from pamtri.pipeline.cli import main
from pamtri.pose.config import PoseConfig
from pamtri.reid.config import ReIDConfig

DEMO_YAML = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"
SHARED = ("seed", "device", "precision", "threads", "max_batches", "data.workers", "data.color_jitter",
          "eval.every", "eval.batch_size", "optim.name", "optim.lr", "optim.weight_decay", "optim.momentum",
          "optim.epochs", "optim.milestones", "optim.gamma", "optim.warmup_epochs", "optim.warmup_factor")


def _get(cfg, dotted: str):
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def test_both_stages_share_the_optim_class_with_their_own_defaults():
    assert typing.get_type_hints(PoseConfig)["optim"] is typing.get_type_hints(ReIDConfig)["optim"] is OptimConfig
    pose, reid = PoseConfig().optim, ReIDConfig().optim
    assert (pose.name, pose.lr, pose.weight_decay, pose.epochs, pose.milestones, pose.gamma) == \
        ("adam", 1e-3, 1e-4, 210, [170, 200], 0.1)
    assert (reid.name, reid.lr, reid.weight_decay, reid.epochs, reid.milestones, reid.gamma) == \
        ("adam", 3e-4, 5e-4, 60, [20, 40], 0.1)
    # a partial optim section keeps the stage's defaults for the rest
    assert load_config(PoseConfig, None, ["optim.lr=0.002"]).optim.milestones == [170, 200]
    assert load_config(ReIDConfig, None, ["optim.lr=0.002"]).optim.milestones == [20, 40]


@pytest.mark.parametrize("key", SHARED)
def test_both_stages_name_the_same_things_the_same_way(key):
    for cls in (PoseConfig, ReIDConfig):
        _get(cls(), key)  # AttributeError when a stage spells it differently


@pytest.mark.parametrize("old, new", sorted(PoseConfig.RENAMED.items()))
def test_every_old_pose_name_is_refused_with_a_new_name_that_exists(old, new):
    _get(PoseConfig(), new)
    with pytest.raises(ConfigError) as e:
        load_config(PoseConfig, None, [f"{old}=1"])
    assert str(e.value) == f"--set: {old} was renamed {new}"


def test_old_names_through_the_cli_are_one_line_errors(tmp_path, capsys):
    cfg = tmp_path / "old.yaml"
    cfg.write_text("data:\n  num_workers: 0\ntrain:\n  epochs: 2\n  lr_steps: [1]\n")
    assert main(["pose", "train", "--config", str(cfg), "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"pamtri: error: {cfg}: data.num_workers was renamed data.workers"]
    cfg.write_text("model: {name: hrnet_w18_small}\n")
    assert main(["pose", "train", "--config", str(cfg), "--set", "train.lr_steps=[1]", "--print-config"]) == 1
    assert capsys.readouterr().err.strip() == "pamtri: error: --set: train.lr_steps was renamed optim.milestones"
    assert not (tmp_path / "run").exists()


def test_demo_refuses_old_pose_names_in_its_overrides():
    from pamtri.pipeline.demo import DemoConfig
    with pytest.raises(ConfigError, match=r"^pose_overrides: train.val_every was renamed eval.every$"):
        load_config(DemoConfig, DEMO_YAML, ['pose_overrides=["train.val_every=1"]'])
    assert load_config(DemoConfig, DEMO_YAML, ['pose_overrides=["eval.every=1"]']).pose_overrides


def test_pose_weights_with_a_config_of_the_old_names_still_load(tmp_path):
    """Checkpoints an older pamtri wrote store the old names: they are read with the new ones."""
    import torch

    from pamtri.common.checkpoint import save_checkpoint
    from pamtri.common.config import to_dict
    from pamtri.pose.weights import build_pose_model
    from pamtri.pose.weights import load as load_pose
    old = to_dict(PoseConfig())
    for key in ("seed", "device", "precision", "threads", "max_batches", "optim"):
        del old[key]
    old["model"]["name"] = "hrnet_w18_small"
    old["data"]["num_workers"] = old["data"].pop("workers")
    old["data"]["colour_jitter"] = old["data"].pop("color_jitter")
    old["train"] = {"epochs": 7, "batch_size": 8, "lr_steps": [5], "precision": "fp32", "val_every": 2}
    torch.manual_seed(0)
    path = tmp_path / "old.pt"
    save_checkpoint({"model": build_pose_model("hrnet_w18_small").state_dict(), "config": old}, path)
    _, (cfg, _) = load_pose(path)
    assert (cfg.optim.epochs, cfg.data.batch_size, cfg.optim.milestones, cfg.precision, cfg.eval.every) == \
        (7, 8, [5], "fp32", 2)
    assert cfg.optim.lr == 1e-3  # not in the old file: the pose default
