"""BoT's own SGD for the class centres (loss.center_lr): the step it takes, the main optimiser leaving the centres
out, and an exact --resume."""
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from pamtri.common.checkpoint import load_checkpoint
from pamtri.common.config import load_config
from pamtri.common.distributed import DistInfo
from pamtri.common.engine import Run, Stage, parameters_of, train_one_epoch
from pamtri.common.errors import ConfigError
from pamtri.common.schedule import OptimConfig, build_optimizer
from pamtri.pipeline.cli import main
from pamtri.reid.config import ReIDConfig
from pamtri.reid.losses import center_loss
from pamtri.reid.train import center_optimizer
from tests.conftest import write_tiny_reid_config, write_tiny_synth_tree

WEIGHT, LR = 5e-4, 0.5


class Toy(torch.nn.Module):
    """A linear feature (4 -> 3) and 2 class centres."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(4, 3)
        self.centers = torch.nn.Parameter(torch.randn(2, 3))


def _total(model, batch):
    f = model.fc(batch["x"])
    return f.square().mean() + WEIGHT * center_loss(f, batch["y"], model.centers)


def test_centres_move_by_the_sgd_step_of_the_unweighted_gradient():
    model = Toy()
    cfg = load_config(ReIDConfig, None, ["model.centers=true", f"loss.center={WEIGHT}", f"loss.center_lr={LR}"])
    side = center_optimizer(model, cfg)
    main_opt = build_optimizer(model, OptimConfig(lr=0.1), exclude=parameters_of(side))
    assert {id(p) for g in main_opt.param_groups for p in g["params"]} == {id(model.fc.weight), id(model.fc.bias)}
    batch = {"x": torch.randn(6, 4), "y": torch.tensor([0, 1, 0, 1, 1, -1])}
    before = model.centers.detach().clone()
    grad = torch.autograd.grad(_total(model, batch), model.centers)[0]  # = WEIGHT * d(center loss)/dc
    stage = Stage(model=model, loader=DataLoader([batch], batch_size=None), forward=lambda m, b, t: b,
                  losses=lambda out, b: {"total": _total(model, b)}, validate=None, score="mAP",
                  weights_file=dict, side_optimizer=side)
    run = Run(Path("."), False, DistInfo(), torch.device("cpu"), None)
    train_one_epoch(model, stage, main_opt, torch.amp.GradScaler("cpu", enabled=False), run, 0, 1, 1)
    assert torch.allclose(model.centers.detach(), before - LR * grad / WEIGHT, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(model.centers.detach(), before)


def test_no_side_optimizer_without_center_lr_and_center_lr_needs_the_center_loss():
    model = Toy()
    cfg = load_config(ReIDConfig, None, ["model.centers=true", f"loss.center={WEIGHT}"])
    assert center_optimizer(model, cfg) is None
    with pytest.raises(ConfigError, match="loss.center_lr"):
        load_config(ReIDConfig, None, ["loss.center_lr=0.5"])


def test_resume_equals_a_straight_run_with_the_centre_optimiser(tmp_path):
    root = write_tiny_synth_tree(tmp_path / "data", ids=8)
    cfg = write_tiny_reid_config(tmp_path / "tiny.yaml", root, epochs=2, batches=2, every=0)
    sets = [a for s in ("model.neck=bnneck", "model.id_fc=0", "model.centers=true", "loss.center=0.0005",
                        "loss.center_lr=0.5", "optim.name=sgd", "optim.lr=0.01") for a in ("--set", s)]
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    assert main(["reid", "train", "--config", str(cfg), "--out", str(run_a), *sets]) == 0
    assert main(["reid", "train", "--config", str(cfg), "--out", str(run_b), *sets, "--set", "optim.epochs=1"]) == 0
    first = load_checkpoint(run_b / "last.pt")
    assert main(["reid", "train", "--config", str(cfg), "--out", str(run_b), *sets, "--resume"]) == 0
    a, b = load_checkpoint(run_a / "last.pt"), load_checkpoint(run_b / "last.pt")
    assert a["side_optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.5 / 0.0005)
    assert not torch.equal(first["model"]["centers"], a["model"]["centers"])
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
