"""End to end through the real CLI: `pamtri reid train` (exact --resume) and `pamtri reid eval`."""
import json
import math

import pytest
import torch

from pamtri.common.checkpoint import load_checkpoint
from pamtri.common.training import NonFiniteLossError
from pamtri.pipeline.cli import main
from tests.conftest import write_tiny_reid_config, write_tiny_synth_tree


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    base = tmp_path_factory.mktemp("reid_e2e")
    root = write_tiny_synth_tree(base / "data", ids=8)
    cfg = write_tiny_reid_config(base / "tiny.yaml", root, erasing=0.5)
    return root, cfg


def test_train_resume_and_eval(tiny, tmp_path, capsys):
    root, cfg = tiny
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    assert main(["reid", "train", "--config", str(cfg), "--out", str(run_a)]) == 0
    for name in ("config.yaml", "last.pt", "best.pt", "metrics.csv", "DONE"):
        assert (run_a / name).is_file(), name
    rows = (run_a / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3 and "mAP" in rows[0] and "loss_triplet" in rows[0]
    # the same run in two halves: stop after epoch 1, then --resume to epoch 2 -> identical weights
    assert main(["reid", "train", "--config", str(cfg), "--out", str(run_b), "--set", "optim.epochs=1"]) == 0
    assert main(["reid", "train", "--config", str(cfg), "--out", str(run_b)]) == 1  # refuses to overwrite
    assert "--resume" in capsys.readouterr().err
    assert main(["reid", "train", "--config", str(cfg), "--out", str(run_b), "--resume"]) == 0
    a, b = load_checkpoint(run_a / "last.pt"), load_checkpoint(run_b / "last.pt")
    assert a["epoch"] == b["epoch"] == 2
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert len((run_b / "metrics.csv").read_text().splitlines()) == 3

    out = tmp_path / "eval"
    capsys.readouterr()
    assert main(["reid", "eval", "--weights", str(run_a / "best.pt"), "--data", str(root), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "mAP" in text and "rank-1" in text and "mINP" in text and "colour acc" in text
    m = json.loads((out / "metrics.json").read_text())
    for key in ("mAP", "rank1", "rank5", "rank10", "rank20", "mAP@100", "mINP", "color_acc", "type_acc", "cmc"):
        assert key in m, key
    assert 0 <= m["mAP@100"] <= m["mAP"] <= 1 and len(m["cmc"]) == 50
    assert (out / "cmc.png").stat().st_size > 1000 and (out / "ranklist.png").stat().st_size > 1000
    assert main(["reid", "eval", "--weights", str(run_a / "best.pt"), "--data", str(root), "--out", str(out),
                 "--rerank"]) == 0
    assert json.loads((out / "metrics.json").read_text())["rerank"] is True


def test_non_finite_loss_stops_and_keeps_last_checkpoint(tiny, tmp_path, monkeypatch):
    import pamtri.reid.train as rt
    from pamtri.common.config import load_config
    from pamtri.reid.config import ReIDConfig
    root, cfg_path = tiny
    cfg = load_config(ReIDConfig, cfg_path, ["eval.every=0"])
    calls = {"n": 0}
    real = rt.reid_losses

    def poisoned(outputs, batch, loss_cfg):
        calls["n"] += 1
        out = real(outputs, batch, loss_cfg)
        if calls["n"] == 3:  # first step of epoch 2
            out["color"] = out["color"] * math.nan
        return out
    monkeypatch.setattr(rt, "reid_losses", poisoned)
    run = tmp_path / "nan"
    with pytest.raises(NonFiniteLossError, match="'color'.*epoch 2, step 0"):
        rt.train(cfg, run)
    state = load_checkpoint(run / "last.pt")
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert not (run / ".lock").exists()


def test_fp16_resume_restores_the_loss_scale_and_metrics_log_the_trained_rate(tiny, tmp_path):
    """last.pt carries the GradScaler: an fp16 run resumed after epoch 1 continues with the scale it had, not
    65536; metrics.csv shows the rate each epoch trained at (3e-4, then 3e-5 after the milestone at epoch 1)."""
    root, cfg = tiny
    fp16 = ["--set", "precision=fp16", "--set", "optim.milestones=[1]", "--set", "eval.every=0"]
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    assert main(["reid", "train", "--config", str(cfg), "--out", str(run_a), *fp16]) == 0
    assert main(["reid", "train", "--config", str(cfg), "--out", str(run_b), *fp16, "--set", "optim.epochs=1"]) == 0
    half = load_checkpoint(run_b / "last.pt")
    assert half["scaler"] is not None and half["scaler"]["scale"] > 0
    assert main(["reid", "train", "--config", str(cfg), "--out", str(run_b), *fp16, "--resume"]) == 0
    a, b = load_checkpoint(run_a / "last.pt"), load_checkpoint(run_b / "last.pt")
    assert a["scaler"] == b["scaler"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    rows = [line.split(",") for line in (run_a / "metrics.csv").read_text().splitlines()]
    lr = [float(r[rows[0].index("lr")]) for r in rows[1:]]
    assert lr == pytest.approx([3e-4, 3e-5])
