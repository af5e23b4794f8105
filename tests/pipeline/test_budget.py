"""The demo's wall-clock budget: schedules scaled to the time left, from timed optimiser steps."""
import time
from pathlib import Path

import pytest
import torch

import pamtri.pipeline.budget as budget_module
from pamtri.common.config import load_config
from pamtri.common.schedule import OptimConfig
from pamtri.common.training import optimiser_step
from pamtri.pipeline.budget import (
    Budget,
    plan,
    pose_step_seconds,
    reid_step_seconds,
    scaled_schedule,
    steps_per_epoch,
    training_set_size,
)
from pamtri.pipeline.demo import budget_line
from pamtri.pose.config import PoseConfig
from pamtri.reid.config import ReIDConfig

REPO = Path(__file__).resolve().parents[2]
TINY_POSE = ["codec.input_size=[32, 32]", "data.batch_size=4"]
TINY_REID = ["data.height=32", "data.width=32", "sampler.batch_size=4", "sampler.k=2"]


def test_a_full_fraction_keeps_the_files_schedule():
    optim = OptimConfig(epochs=20, milestones=[16])
    assert scaled_schedule(optim, 1.0, 8) == (20, (16,))
    assert scaled_schedule(optim, 3.0, 8) == (20, (16,))


def test_a_half_budget_halves_epochs_and_milestones_alike():
    assert scaled_schedule(OptimConfig(epochs=20, milestones=[16]), 0.5, 8) == (10, (8,))
    assert scaled_schedule(OptimConfig(epochs=60, milestones=[20, 40]), 0.25, 4) == (15, (5, 10))


def test_the_floor_holds_and_milestones_stay_inside_the_run():
    epochs, milestones = scaled_schedule(OptimConfig(epochs=20, milestones=[16, 19]), 0.01, 3)
    assert epochs == 3 and all(0 < m < 3 for m in milestones)
    # a file asking for fewer epochs than the floor keeps its own count
    assert scaled_schedule(OptimConfig(epochs=2, milestones=[1]), 0.01, 8) == (2, (1,))


def test_plan_fits_the_seconds_it_is_given():
    optim = OptimConfig(epochs=10, milestones=[8])
    p = plan(optim, steps_per_epoch=37, step_s=0.5, overhead=1.2, seconds=100.0, minimum=1, runs=2)
    per_epoch = 2 * 37 * 0.5 * 1.2
    assert p.epochs == int(100.0 // per_epoch) and p.predicted_seconds <= 100.0
    assert p.predicted_seconds + per_epoch > 100.0  # the largest that fits
    assert p.overrides() == [f"optim.epochs={p.epochs}", f"optim.milestones=[{p.milestones[0]}]"]
    assert plan(optim, 37, 0.5, 1.2, 1e6, 1).overrides() == []  # enough time: the file's schedule stands


def test_steps_per_epoch_drops_the_last_partial_batch_and_respects_the_cap():
    assert steps_per_epoch(1200, 32, 0) == 37
    assert steps_per_epoch(1200, 32, 20) == 20
    assert steps_per_epoch(10, 32, 0) == 1


def test_optimiser_step_updates_the_weights_under_autocast():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2))
    x = torch.randn(2, 3, 8, 8)
    model(x)
    before = [p.detach().clone() for p in model.parameters()]
    step = optimiser_step(model, [x], lambda m, inp: m(inp).float().square().mean(), torch.bfloat16,
                          channels_last=True)
    step()
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_the_probes_time_the_configured_networks():
    pose = load_config(PoseConfig, REPO / "configs/pose/demo.yaml", TINY_POSE)
    reid = load_config(ReIDConfig, REPO / "configs/reid/demo_pose.yaml", TINY_REID)
    assert 0 < pose_step_seconds(pose) < 60
    assert 0 < reid_step_seconds(reid, num_ids=6) < 60


def _tree(root: Path, ids: int, per_id: int) -> Path:
    (root / "image_train").mkdir(parents=True)
    for i in range(ids):
        for j in range(per_id):
            (root / "image_train" / f"{i + 1:04d}_c001_{j:08d}_0.jpg").write_bytes(b"")
    return root


def test_training_set_size_counts_images_and_identities(tmp_path):
    assert training_set_size(_tree(tmp_path, 5, 3)) == (15, 5)


@pytest.fixture
def timed_steps(monkeypatch):
    """Probes with known step times: pose 0.1 s, ReID 0.2 s."""
    monkeypatch.setattr(budget_module, "pose_step_seconds", lambda cfg: 0.1)
    monkeypatch.setattr(budget_module, "reid_step_seconds", lambda cfg, num_ids: 0.2)


def test_budget_keeps_the_files_schedules_when_they_fit(tmp_path, timed_steps):
    budget = Budget(10.0, time.perf_counter(), _tree(tmp_path, 6, 8), REPO / "configs/pose/demo.yaml",
                    REPO / "configs/reid/demo_pose.yaml", min_pose_epochs=2, min_reid_epochs=1)
    pose = budget.pose_plan(TINY_POSE, TINY_REID)
    reid = budget.reid_plan(TINY_REID, pose_seconds=30.0)
    assert not pose.scaled and not reid.scaled and pose.overrides() == [] == reid.overrides()
    assert budget.overhead == pytest.approx(30.0 / (20 * 12 * 0.1))  # measured pose time / timed steps (1.25)


def test_budget_shortens_both_stages_in_proportion_to_the_time_left(tmp_path, timed_steps):
    # 48 images: 12 steps an epoch at batch 4. Costs as configured: pose 20 x 12 x 0.1 = 24 s, ReID 2 x 10 x 12 x
    # 0.2 = 48 s, so the pose stage gets a third of 30 s / 1.12 (8.9 s) at 12 x 0.1 x 1.2 s an epoch: 6 epochs.
    budget = Budget(0.5, time.perf_counter(), _tree(tmp_path, 6, 8), REPO / "configs/pose/demo.yaml",
                    REPO / "configs/reid/demo_pose.yaml", min_pose_epochs=2, min_reid_epochs=1)
    pose = budget.pose_plan(TINY_POSE, TINY_REID)
    assert (pose.epochs, pose.milestones) == (6, (5,))
    # the pose stage took 1.5x its timed steps: ReID gets ~30 / 1.06 s at 2 x 12 x 0.2 x 1.5 = 7.2 s an epoch
    reid = budget.reid_plan(TINY_REID, pose_seconds=6 * 12 * 0.1 * 1.5)
    assert budget.overhead == pytest.approx(1.5)
    assert (reid.epochs, reid.milestones) == (3, (2,))
    summary = budget.summary()
    assert summary["pose"]["configured"] == 20 and summary["reid"]["configured"] == 10
    assert "shortened to fit" in budget_line(summary)


def test_budget_never_goes_below_the_floors(tmp_path, timed_steps):
    budget = Budget(0.001, time.perf_counter(), _tree(tmp_path, 6, 8), REPO / "configs/pose/demo.yaml",
                    REPO / "configs/reid/demo_pose.yaml", min_pose_epochs=3, min_reid_epochs=2)
    assert budget.pose_plan(TINY_POSE, TINY_REID).epochs == 3
    assert budget.reid_plan(TINY_REID, pose_seconds=100.0).epochs == 2


def test_no_budget_runs_the_files_schedules_untimed(tmp_path):
    budget = Budget(0, time.perf_counter(), _tree(tmp_path, 2, 2), REPO / "configs/pose/demo.yaml",
                    REPO / "configs/reid/demo_pose.yaml", 8, 4)
    assert budget.pose_plan([], []).overrides() == [] and budget.reid_plan([], 1.0).overrides() == []
    assert budget.summary()["pose"]["step_s"] == 0.0
    assert budget_line(budget.summary()).startswith("No time budget")
