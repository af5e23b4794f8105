import csv
import json

import pytest
import torch

import pamtri.common.engine as engine
import pamtri.pose.train as pose_train
from pamtri.common.checkpoint import load_checkpoint
from pamtri.common.config import load_config
from pamtri.common.errors import ConfigError
from pamtri.common.training import NonFiniteLossError
from pamtri.pipeline.cli import main
from pamtri.pose.config import PoseConfig
from tests.pose.posedata import make_pose_set


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("posedata")
    make_pose_set(root, "train", n=8, seed=0)
    make_pose_set(root, "test", n=4, seed=1)
    return root


def _overrides(root, epochs=2):
    return [f"data.train=[{{root: '{root}', split: train}}]", f"data.val=[{{root: '{root}', split: test}}]",
            "codec.input_size=[64, 64]", "data.workers=0", "model.name=hrnet_w18_small",
            f"optim.epochs={epochs}", "data.batch_size=4", "max_batches=1", "optim.milestones=[1]",
            "precision=fp32", "device=cpu", "eval.batch_size=4"]


def test_two_step_run_resumes_exactly(data, tmp_path, monkeypatch):
    cfg = load_config(PoseConfig, None, _overrides(data))
    straight = tmp_path / "straight"
    pose_train.train(cfg, straight)

    # The same run, interrupted right after epoch 1's checkpoint, then resumed.
    real_save = engine.save_training_state

    class Crash(Exception):
        pass

    def save_then_crash(path, **kw):
        real_save(path, **kw)
        if kw["epoch"] == 1:
            raise Crash

    resumed = tmp_path / "resumed"
    monkeypatch.setattr(engine, "save_training_state", save_then_crash)
    with pytest.raises(Crash):
        pose_train.train(cfg, resumed)
    assert not (resumed / ".lock").exists()  # the run lock is released on failure
    monkeypatch.setattr(engine, "save_training_state", real_save)
    pose_train.train(cfg, resumed, resume=True)

    a, b = load_checkpoint(straight / "last.pt"), load_checkpoint(resumed / "last.pt")
    assert a["epoch"] == b["epoch"] == 2
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert a["scheduler"] == b["scheduler"] and a["scheduler"]["last_epoch"] == 2
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert all(torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"]) for i in sa)
    rows = list(csv.DictReader(open(resumed / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"] and float(rows[1]["lr"]) == pytest.approx(1e-4)
    same = ("epoch", "lr", "loss_total", "pck_mean", "pck_mean@0.1")
    assert [[r[k] for k in same] for r in rows] == \
        [[r[k] for k in same] for r in csv.DictReader(open(straight / "metrics.csv"))]
    assert (resumed / "config.yaml").is_file() and (resumed / "best.pt").is_file()
    best = load_checkpoint(resumed / "best.pt")
    assert best["config"]["model"]["name"] == "hrnet_w18_small" and best["format"] == "pamtri-weights-1"


def test_non_finite_loss_stops_with_a_clear_error(data, tmp_path, monkeypatch):
    cfg = load_config(PoseConfig, None, _overrides(data, epochs=1))
    monkeypatch.setattr(pose_train, "weighted_mse", lambda p, t, w: (p * float("nan")).mean())
    with pytest.raises(NonFiniteLossError, match="heatmap_mse"):
        pose_train.train(cfg, tmp_path / "nan")
    assert not (tmp_path / "nan" / "last.pt").exists()


def test_config_rejects_impossible_combinations(data):
    with pytest.raises(ConfigError, match="input_size"):
        load_config(PoseConfig, None, ["codec.input_size=[100, 64]"])
    with pytest.raises(ConfigError, match="weight"):
        load_config(PoseConfig, None, ["data.train=[{root: x, weight: 0}]"])
    with pytest.raises(ConfigError, match="milestones"):
        load_config(PoseConfig, None, ["optim.milestones=[200, 170]"])
    with pytest.raises(ConfigError, match="unknown key 'optim.lrr'"):
        load_config(PoseConfig, None, ["optim.lrr=1"])
    cfg = PoseConfig()
    assert (cfg.data.batch_size, cfg.optim.lr, cfg.optim.epochs, cfg.optim.milestones) == (32, 1e-3, 210, [170, 200])
    assert cfg.model.name == "hrnet_w32" and cfg.codec.input_size == (256, 256) and cfg.codec.sigma == 2.0


def test_shipped_configs_load():
    import glob
    files = sorted(glob.glob("configs/pose/*.yaml"))
    assert len(files) >= 5
    for f in files:
        load_config(PoseConfig, f)


@pytest.mark.slow
def test_cli_train_predict_eval(data, tmp_path, capsys):
    """End to end through the real CLI: train 1 step, predict a folder, evaluate with legacy PCK."""
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(
        f"data:\n  train: [{{root: '{data}', split: train}}]\n  val: [{{root: '{data}', split: test}}]\n"
        "  batch_size: 4\n  workers: 0\ncodec: {input_size: [64, 64]}\nmodel: {name: hrnet_w18_small}\n"
        "optim: {epochs: 1}\nmax_batches: 1\ndevice: cpu\neval: {batch_size: 4}\n")
    run = tmp_path / "run"
    assert main(["pose", "train", "--config", str(cfg), "--out", str(run), "--set", "optim.lr=0.002"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["epoch"] == 1
    out = tmp_path / "pred"
    assert main(["pose", "predict", "--weights", str(run / "best.pt"), "--images", str(data / "image_test"),
                 "--out", str(out), "--workers", "0", "--vis", "2"]) == 0
    import numpy as np

    from pamtri.data.labels import read_reid_csv
    recs = read_reid_csv(out / "keypoints.csv")
    assert len(recs) == 4 and recs[0].keypoints.shape == (36, 3)
    z = np.load(out / "poses.npz")
    assert z["heatmaps"].shape == (4, 36, 16, 16) and z["keypoints"].shape == (4, 36, 3)
    np.testing.assert_allclose(z["keypoints"][0, :, :2], recs[0].keypoints[:, :2], atol=1e-3)
    assert (out / "vis.png").is_file()
    capsys.readouterr()
    ev = tmp_path / "eval"
    assert main(["pose", "eval", "--weights", str(run / "best.pt"), "--data", str(data), "--legacy-pck",
                 "--out", str(ev), "--workers", "0", "--vis", "2"]) == 0
    text = capsys.readouterr().out
    assert "Front windshield" in text and "Mean@0.1" in text and "Legacy PCK" in text
    report = json.loads((ev / "pck.json").read_text())
    assert set(report["table"]) >= {"wheel", "mean", "mean@0.1"} and len(report["curve"]["thresholds"]) == 51
    assert (ev / "pck_curve.png").stat().st_size > 1000
    # a resume of a finished run with more epochs continues from its last.pt
    assert main(["pose", "train", "--out", str(run), "--resume", "--set", "optim.epochs=2"]) == 0
    assert load_checkpoint(run / "last.pt")["epoch"] == 2
    # errors are one line, not a traceback
    assert main(["pose", "eval", "--weights", str(tmp_path / "missing.pt"), "--data", str(data)]) == 1
    assert "does not exist" in capsys.readouterr().err
