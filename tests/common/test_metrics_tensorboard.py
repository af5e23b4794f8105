"""MetricsLog's optional TensorBoard events: written when tensorboard is installed, silently absent otherwise."""
import sys

import pytest

from pamtri.common.training import MetricsLog


def test_metrics_log_works_without_tensorboard(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # makes the import fail
    log = MetricsLog.open(tmp_path / "metrics.csv")
    log.append({"epoch": 1, "loss": 2.0})
    log.append({"epoch": 2, "loss": 1.0})
    assert (tmp_path / "metrics.csv").read_text().splitlines() == ["epoch,loss", "1,2", "2,1"]
    assert not (tmp_path / "tb").exists()


def _scalars(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_metrics_log_writes_tensorboard_scalars_and_resume_replaces_redone_epochs(tmp_path):
    pytest.importorskip("tensorboard")
    log = MetricsLog.open(tmp_path / "metrics.csv")
    log.append({"epoch": 1, "loss": 2.0, "lr": 1e-3, "name": "text is skipped", "flag": True})
    log.append({"epoch": 2, "loss": 1.5, "lr": 1e-3})
    log.append({"epoch": 3, "loss": 1.25, "lr": 1e-4})  # a crash after this row, before last.pt was written
    log.close()
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    got = _scalars(tmp_path / "tb")
    assert set(got) == {"loss", "lr"}
    assert got["loss"] == [(1, 2.0), (2, 1.5), (3, 1.25)]
    # resume from last.pt of epoch 2: epoch 3 is redone; TensorBoard shows each epoch once
    resumed = MetricsLog.open(tmp_path / "metrics.csv", keep_epochs_below=3)
    resumed.append({"epoch": 3, "loss": 1.0, "lr": 1e-4})
    resumed.append({"epoch": 4, "loss": 0.5, "lr": 1e-4})
    resumed.close()
    assert _scalars(tmp_path / "tb")["loss"] == [(1, 2.0), (2, 1.5), (3, 1.0), (4, 0.5)]
