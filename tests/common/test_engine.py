"""The training engine on a toy stage (a small MLP with dropout and BatchNorm on 16 fixed samples): run folder,
best.pt by score, validation schedule, step cap, exact resume, refusals. Both real stages: tests/pose/test_train.py,
tests/reid/test_train_cli.py, tests/pipeline/test_distributed.py and test_reliability.py."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from pamtri.common.checkpoint import load_checkpoint
from pamtri.common.engine import Stage, fit, open_run
from pamtri.common.errors import PamtriError
from pamtri.common.schedule import OptimConfig
from pamtri.common.training import NonFiniteLossError

X = torch.linspace(-1, 1, 16 * 4).reshape(16, 4)
Y = X.sum(1, keepdim=True).sin()


class Samples(Dataset):
    def __len__(self):
        return 16

    def __getitem__(self, i):
        return {"x": X[i], "y": Y[i]}


class EpochOrder(Sampler):
    """A permutation of 16 indices that depends on the epoch only; records the epochs it was given."""

    def __init__(self):
        self.epoch, self.epochs = 0, []

    def set_epoch(self, epoch):
        self.epoch = epoch
        self.epochs.append(epoch)

    def __iter__(self):
        return iter(np.random.default_rng(self.epoch).permutation(16).tolist())

    def __len__(self):
        return 16


def toy_stage(scores=None, calls=None, nan_at_epoch=None, **kw) -> Stage:
    """A Stage whose validation returns the next of ``scores`` (None: no validation); ``calls`` records
    forward progress values and validations."""
    calls = {"progress": [], "validated": 0} if calls is None else calls
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(),
                                torch.nn.Dropout(0.5), torch.nn.Linear(8, 1))
    loader = DataLoader(Samples(), batch_size=4, sampler=EpochOrder())

    def forward(model, batch, progress):
        calls["progress"].append(progress)
        return model(batch["x"])

    def losses(out, batch):
        mse = torch.nn.functional.mse_loss(out.float(), batch["y"])
        if nan_at_epoch is not None and len(calls["progress"]) > 4 * (nan_at_epoch - 1):
            mse = mse * float("nan")
        return {"mse": mse, "total": mse}

    def validate(model):
        calls["validated"] += 1
        return {"score": scores.pop(0), "curve": [1.0, 2.0], "_private": 3.0}

    def weights_file(metrics):
        return {"model": model.state_dict(), "epoch": metrics["epoch"], "metrics": metrics}

    return Stage(model=model, loader=loader, forward=forward, losses=losses,
                 validate=validate if scores is not None else None, score="score", weights_file=weights_file,
                 state_extra={"kind": "toy"}, **kw)


def train_toy(out, epochs=3, resume=False, eval_every=1, max_batches=0, **stage_kw):
    """(Result, stage) of a toy run into ``out``."""
    optim = OptimConfig(lr=0.05, weight_decay=0.0, epochs=epochs, milestones=[1])
    with open_run(out, resume, seed=3, device="cpu", precision="fp32") as run:
        stage = toy_stage(**stage_kw)
        return fit(run, stage, optim, config=optim, eval_every=eval_every, max_batches=max_batches), stage


def rows(out) -> list[dict]:
    with open(out / "metrics.csv", newline="") as fh:
        return [{k: v for k, v in r.items() if k != "time_s"} for r in csv.DictReader(fh)]


def test_fit_writes_the_run_folder_and_keeps_the_best_scoring_weights(tmp_path):
    out = tmp_path / "run"
    result, _ = train_toy(out, scores=[0.5, 0.9, 0.7])
    assert {p.name for p in out.iterdir()} - {"tb"} == {"config.yaml", "last.pt", "best.pt", "metrics.csv"}
    assert (result.best, result.best_epoch, result.row["epoch"], result.validation) == \
        (0.9, 2, 3, {"score": 0.7, "curve": [1.0, 2.0]})
    table = rows(out)
    assert list(table[0]) == ["epoch", "lr", "loss_mse", "loss_total", "score"]
    assert [float(r["lr"]) for r in table] == pytest.approx([0.05, 0.005, 0.005])  # the rate each epoch trained at
    assert [r["loss_mse"] for r in table] == [r["loss_total"] for r in table]
    best, last = load_checkpoint(out / "best.pt"), load_checkpoint(out / "last.pt")
    assert best["epoch"] == 2 and best["metrics"]["score"] == 0.9 and best["metrics"]["curve"] == [1.0, 2.0]
    assert "_private" not in best["metrics"]
    assert (last["epoch"], last["best"], last["best_epoch"], last["kind"]) == (3, 0.9, 2, "toy")
    assert last["config"]["epochs"] == 3 and last["metrics"]["score"] == 0.7


def test_resume_continues_exactly(tmp_path):
    """Dropout (the RNG), BatchNorm buffers, Adam moments, the schedule: two halves equal one run."""
    train_toy(tmp_path / "straight", scores=[0.5, 0.9, 0.7])
    train_toy(tmp_path / "halves", epochs=1, scores=[0.5])
    result, _ = train_toy(tmp_path / "halves", resume=True, scores=[0.9, 0.7])
    assert (result.best, result.best_epoch) == (0.9, 2)
    a, b = load_checkpoint(tmp_path / "straight" / "last.pt"), load_checkpoint(tmp_path / "halves" / "last.pt")
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert a["scheduler"] == b["scheduler"]
    assert all(torch.equal(a["optimizer"]["state"][i]["exp_avg_sq"], b["optimizer"]["state"][i]["exp_avg_sq"])
               for i in a["optimizer"]["state"])
    assert rows(tmp_path / "straight") == rows(tmp_path / "halves")
    assert load_checkpoint(tmp_path / "halves" / "best.pt")["epoch"] == 2


@pytest.mark.parametrize("every, validated", [(2, 3), (0, 1), (1, 5)])
def test_validation_schedule_step_cap_and_progress(tmp_path, every, validated):
    calls = {"progress": [], "validated": 0}
    _, stage = train_toy(tmp_path / "run", epochs=5, eval_every=every, max_batches=2, scores=[0.1] * 5, calls=calls)
    assert calls["validated"] == validated  # every N epochs and after the last; 0: after the last only
    assert [r["epoch"] for r in rows(tmp_path / "run") if r.get("score")] == \
        {2: ["2", "4", "5"], 0: ["5"], 1: ["1", "2", "3", "4", "5"]}[every]
    assert calls["progress"] == pytest.approx([i / 10 for i in range(10)])  # 2 of the 4 batches per epoch
    assert stage.loader.sampler.epochs == [0, 1, 2, 3, 4]


def test_without_validation_best_holds_the_final_weights_and_done_is_written_when_asked(tmp_path):
    out = tmp_path / "run"
    result, _ = train_toy(out, epochs=2, done_marker=True)
    assert (result.best, result.best_epoch) == (None, None)
    best, last = load_checkpoint(out / "best.pt"), load_checkpoint(out / "last.pt")
    assert best["epoch"] == 2 and all(torch.equal(v, last["model"][k]) for k, v in best["model"].items())
    assert (out / "DONE").read_text() == "best score none at epoch None\n"
    result, _ = train_toy(tmp_path / "scored", epochs=2, scores=[0.25, 0.5], done_marker=True)
    assert (tmp_path / "scored" / "DONE").read_text() == "best score 0.500000 at epoch 2\n"


def test_refuses_to_overwrite_a_run_or_to_resume_nothing(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(PamtriError, match=r"nothing to resume \(no last.pt\)"):
        train_toy(out, resume=True)
    train_toy(out, epochs=1)
    before = (out / "last.pt").read_bytes()
    with pytest.raises(PamtriError, match=r"already holds a training run \(last.pt\); pass --resume"):
        train_toy(out, epochs=1)
    assert (out / "last.pt").read_bytes() == before and not (out / ".lock").exists()


def test_a_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match="loss term 'mse' is nan at epoch 2, step 0"):
        train_toy(out, nan_at_epoch=2)
    assert load_checkpoint(out / "last.pt")["epoch"] == 1 and len(rows(out)) == 1
    assert not (out / ".lock").exists()


@pytest.mark.parametrize("name", ["adam", "amsgrad"])
def test_adam_runs_fused_and_steps_as_the_unfused_update_does(name):
    from pamtri.common.schedule import build_optimizer
    torch.manual_seed(0)
    models = [torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3)) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    fused = build_optimizer(models[0], OptimConfig(name=name, lr=0.01, weight_decay=1e-4))
    plain = torch.optim.Adam(models[1].parameters(), lr=0.01, weight_decay=1e-4, amsgrad=name == "amsgrad")
    assert fused.defaults["fused"] is True
    x = torch.randn(8, 6)
    for _ in range(3):
        for model, opt in zip(models, (fused, plain)):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b)


def test_training_layout_rule():
    from pamtri.common.device import training_memory_format
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert training_memory_format(cpu, None) == torch.channels_last
    assert training_memory_format(cpu, torch.bfloat16) == torch.contiguous_format
    assert training_memory_format(gpu, torch.float16) == torch.channels_last
    assert training_memory_format(gpu, None) == torch.contiguous_format


def test_image_batches_and_conv_weights_go_channels_last_on_cpu():
    from pathlib import Path

    from pamtri.common.distributed import DistInfo
    from pamtri.common.engine import Run, to_device
    run = Run(Path("."), False, DistInfo(), torch.device("cpu"), None)
    assert run.memory_format == torch.channels_last
    batch = to_device({"image": torch.randn(2, 3, 8, 8), "ids": torch.arange(2), "mask": torch.ones(2, 1, 4, 4) > 0,
                       "name": "x"}, run.device, run.memory_format)
    assert batch["image"].is_contiguous(memory_format=torch.channels_last)
    assert not batch["image"].is_contiguous()  # really NHWC in memory, not a (1, 1) spatial special case
    assert batch["mask"].is_contiguous() and batch["name"] == "x"  # only floating images change layout


def test_fit_trains_a_convolution_in_channels_last(tmp_path):
    class Images(Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            return {"x": torch.full((3, 6, 6), i / 8.0), "y": torch.tensor([i / 8.0])}
    seen = []

    def forward(model, batch, progress):
        seen.append(batch["x"].is_contiguous(memory_format=torch.channels_last))
        return model(batch["x"])

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(4, 1))
    with open_run(tmp_path / "run", False, seed=0, device="cpu", precision="fp32") as run:
        stage = Stage(model=model, loader=DataLoader(Images(), batch_size=4), forward=forward,
                      losses=lambda out, b: {"total": (out - b["y"]).square().mean()}, validate=None, score="s",
                      weights_file=lambda m: {"model": model.state_dict()})
        optim = OptimConfig(epochs=1, milestones=[])
        fit(run, stage, optim, config=optim, eval_every=0)
    assert seen == [True, True] and model[0].weight.is_contiguous(memory_format=torch.channels_last)
