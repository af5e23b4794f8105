import os
import random

import numpy as np
import pytest
import torch

from pamtri.common.atomic import RunLock, atomic_write, atomic_write_text
from pamtri.common.checkpoint import load_checkpoint, match_state_dict, rng_state, save_checkpoint, set_rng_state
from pamtri.common.errors import CheckpointError, PamtriError
from pamtri.common.training import MetricsLog, NonFiniteLossError, check_finite


def test_atomic_write_keeps_old_content_on_failure(tmp_path):
    p = tmp_path / "f.txt"
    atomic_write_text(p, "old")
    with pytest.raises(RuntimeError):
        with atomic_write(p) as fh:
            fh.write("new half")
            raise RuntimeError("disk full")
    assert p.read_text() == "old"
    assert [x.name for x in tmp_path.iterdir()] == ["f.txt"]


def test_run_lock_refuses_second_writer(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(PamtriError, match="another pamtri process"):
            RunLock(tmp_path).acquire()
    RunLock(tmp_path).acquire().release()  # free again after release


def test_run_lock_takes_over_stale_lock(tmp_path):
    (tmp_path / ".lock").write_text("999999999")  # no such pid
    lock = RunLock(tmp_path).acquire()
    assert (tmp_path / ".lock").read_text() == str(os.getpid())
    lock.release()


def test_checkpoint_round_trip_and_rng(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    state = rng_state()
    save_checkpoint({"w": torch.arange(4.0), "rng": state}, tmp_path / "c.pt")
    expect = (random.random(), np.random.rand(), torch.rand(1).item())
    loaded = load_checkpoint(tmp_path / "c.pt")
    set_rng_state(loaded["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expect
    assert torch.equal(loaded["w"], torch.arange(4.0))


def test_truncated_and_unsafe_checkpoints_are_refused(tmp_path):
    p = tmp_path / "c.pt"
    save_checkpoint({"w": torch.zeros(1000)}, p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="c.pt: cannot read checkpoint"):
        load_checkpoint(p)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))
    bad = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, bad)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint(bad)


def test_match_state_dict_lists_mismatches():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 2, 1))
    state = model.state_dict()
    state["0.weight"] = torch.zeros(4, 5, 3, 3)
    state["extra"] = torch.zeros(1)
    del state["1.bias"]
    with pytest.raises(CheckpointError) as err:
        match_state_dict(model, state, "ck.pt")
    msg = str(err.value)
    assert "0.weight: checkpoint (4, 5, 3, 3) vs model (4, 3, 3, 3)" in msg
    assert "missing in checkpoint: 1.bias" in msg and "not in model: extra" in msg


def test_check_finite_names_term():
    check_finite({"a": torch.tensor(1.0)}, step=1)
    with pytest.raises(NonFiniteLossError, match="'triplet' is nan at epoch 2, step 7"):
        check_finite({"id": 1.0, "triplet": torch.tensor(float("nan"))}, step=7, epoch=2)


def test_metrics_log_grows_columns_and_resumes(tmp_path):
    log = MetricsLog.open(tmp_path / "m.csv")
    log.append({"epoch": 0, "loss": 1.5})
    log.append({"epoch": 1, "loss": 1.0, "pck": 50.0})
    lines = (tmp_path / "m.csv").read_text().splitlines()
    assert lines[0] == "epoch,loss,pck"
    assert lines[1] == "0,1.5," and lines[2] == "1,1,50"
    resumed = MetricsLog.open(tmp_path / "m.csv", keep_epochs_below=1)
    assert len(resumed.rows) == 1


def test_disk_full_is_a_write_error_naming_the_file_and_keeps_the_old_content(tmp_path):
    import errno

    from pamtri.common.errors import WriteError
    p = tmp_path / "last.pt"
    atomic_write_text(p, "complete")
    with pytest.raises(WriteError) as err:
        with atomic_write(p) as fh:
            fh.write("half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert str(err.value) == f"{p}: cannot write (No space left on device); the previous last.pt is unchanged; " \
                             "free some disk space and run the command again"
    assert isinstance(err.value, OSError) and err.value.errno == errno.ENOSPC
    assert p.read_text() == "complete" and sorted(x.name for x in tmp_path.iterdir()) == ["last.pt"]
    with pytest.raises(WriteError, match="no new.txt was written"):
        with atomic_write(tmp_path / "new.txt") as fh:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
    # an error about another file (one the caller reads inside the block) is not the write's
    with pytest.raises(FileNotFoundError):
        with atomic_write(p) as fh:
            open(tmp_path / "missing.txt").read()
    assert p.read_text() == "complete"


def test_errors_raised_in_dataloader_workers_stay_one_line():
    """torch re-raises a worker's exception as cls(<traceback text>); ours keep their own message."""
    from torch.utils.data import DataLoader, Dataset

    from pamtri.common.errors import ConfigError, DataError

    class Broken(Dataset):
        def __init__(self, exc):
            self.exc = exc

        def __len__(self):
            return 1

        def __getitem__(self, i):
            raise self.exc

    for exc in (DataError("/d/x.jpg", "truncated JPEG", 3, "<Item>"), ConfigError("key 'a': bad")):
        with pytest.raises(type(exc)) as err:
            next(iter(DataLoader(Broken(exc), num_workers=1)))
        assert str(err.value) == str(exc)


def test_data_error_pickles_with_its_fields():
    import pickle

    from pamtri.common.errors import DataError
    e = pickle.loads(pickle.dumps(DataError("/x/labels.csv", "bad value", 7, "<Item>")))
    assert (e.path, e.line, e.element, e.reason, str(e)) == \
        ("/x/labels.csv", 7, "<Item>", "bad value", "/x/labels.csv, line 7, <Item>: bad value")


def test_run_lock_is_released_by_the_kernel_when_its_process_dies_and_can_wait(tmp_path):
    import subprocess
    import sys
    import time
    code = ("import sys, time; from pamtri.common.atomic import RunLock; l = RunLock(sys.argv[1]).acquire(); "
            "print('held', flush=True); time.sleep(float(sys.argv[2]))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path), "600"], stdout=subprocess.PIPE, text=True,
                              env=env)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(PamtriError, match=f"pid {holder.pid}"):
        RunLock(tmp_path).acquire(wait=0.2)
    holder.kill()  # SIGKILL: no release; the lock file (with its pid) stays but the lock is gone
    holder.wait()
    assert (tmp_path / ".lock").exists()
    RunLock(tmp_path).acquire().release()
    short = subprocess.Popen([sys.executable, "-c", code, str(tmp_path), "1"], stdout=subprocess.PIPE, text=True,
                             env=env)
    assert short.stdout.readline().strip() == "held"
    t0 = time.monotonic()
    lock = RunLock(tmp_path).acquire(wait=30)  # a bounded wait serialises the second writer
    assert time.monotonic() - t0 < 30 and (tmp_path / ".lock").read_text() == str(os.getpid())
    lock.release()
    short.wait()


@pytest.mark.parametrize("content", [b"hello this is text\n", bytes(range(1, 256)) * 20])
def test_a_text_or_random_byte_file_is_not_a_checkpoint(tmp_path, content):
    """Issue 22: a text .pt gave a KeyError traceback; random bytes were called a pickle that could run code."""
    p = tmp_path / "w.pt"
    p.write_bytes(content)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(p)
    assert str(err.value) == (f"{p}: not a PyTorch checkpoint (torch.save writes a zip archive; this file starts "
                              f"with {content[:4]!r}); give the .pt file written by pamtri or torch.save")
