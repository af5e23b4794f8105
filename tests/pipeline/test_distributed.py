"""`pamtri pose train` and `pamtri reid train` under torchrun: 2 CPU processes, gloo, DistributedDataParallel.

Each test launches the real CLI once through ``python -m torch.distributed.run --standalone --nproc_per_node 2``
with this module as the worker (``-m tests.pipeline.test_distributed <cli args>``). The worker records, per
rank, what a bug would change and the run folder cannot show: the samples its sampler handed out, its loss
at every step, every file it created or renamed, and a hash of each trained parameter. The tests then check
that the ranks trained on disjoint data yet ended with bit-identical weights (gradients were synchronised),
that the logged losses are the mean over ranks, that validation covered the whole validation set, and that
rank 0 alone wrote the run folder.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import write_tiny_reid_config, write_tiny_synth_tree

REPO = Path(__file__).resolve().parents[2]
WORLD = 2


def _hash(t) -> str:
    return hashlib.sha1(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


# ------------------------------------------------------------------------------------------- the worker

def _worker(argv: list[str]) -> int:
    """One torchrun process: install recorders, run the CLI, dump what was recorded to $PAMTRI_TEST_PROBE."""
    import torch

    import pamtri.pose.dataset as pose_dataset
    import pamtri.pose.train as pose_train
    import pamtri.reid.samplers as reid_samplers
    import pamtri.reid.train as reid_train
    from pamtri.pipeline.cli import main

    rank = int(os.environ["RANK"])
    rec: dict = {"rank": rank, "world": int(os.environ["WORLD_SIZE"]), "samples": {}, "losses": [],
                 "writes": [], "val_predicted": [], "val_scored": []}
    wrapped: dict = {}

    class RecordingDDP(torch.nn.parallel.DistributedDataParallel):
        def __init__(self, module, *args, **kwargs):
            super().__init__(module, *args, **kwargs)
            wrapped["module"] = module

    torch.nn.parallel.DistributedDataParallel = RecordingDDP

    def record_iter(cls, flatten):
        orig = cls.__iter__

        def __iter__(self):
            items = list(orig(self))
            rec["samples"].setdefault(str(self.epoch), []).extend(flatten(items))
            return iter(items)
        cls.__iter__ = __iter__

    record_iter(pose_dataset.MixSampler, lambda items: [i for i, _ in items])            # (index, seed)
    record_iter(reid_samplers.SeededBatches, lambda items: [[i for i, _ in b] for b in items])  # batches

    def wrap(module, name, note):
        """Replace ``module.name`` by a wrapper that hands each call's (args, result) to ``note``."""
        orig = getattr(module, name)

        def wrapper(*args, **kwargs):
            out = orig(*args, **kwargs)
            note(args, out)
            return out
        setattr(module, name, wrapper)

    wrap(pose_train, "weighted_mse", lambda a, out: rec["losses"].append(float(out)))
    wrap(reid_train, "reid_losses", lambda a, out: rec["losses"].append(float(out["total"])))
    wrap(pose_train, "predict_loader", lambda a, out: rec["val_predicted"].append(len(out[0])))
    wrap(pose_train, "pck_table", lambda a, out: rec["val_scored"].append(len(a[0])))
    wrap(os, "replace", lambda a, out: rec["writes"].append(str(a[1])))
    wrap(os, "open", lambda a, out: rec["writes"].append(str(a[0])) if a[1] & os.O_CREAT else None)

    rc = main(argv)
    rec["rc"] = rc
    rec["params"] = {n: _hash(p) for n, p in wrapped["module"].named_parameters()}
    rec["buffers"] = {n: _hash(b) for n, b in wrapped["module"].named_buffers()}
    Path(os.environ["PAMTRI_TEST_PROBE"], f"rank{rank}.json").write_text(json.dumps(rec))
    return rc


# ------------------------------------------------------------------------------------------- the launcher

def _launch(tmp_path: Path, cli: list[str], timeout: float = 120) -> list[dict]:
    """Run ``pamtri <cli>`` on WORLD gloo processes; returns each rank's record (rank order)."""
    probe = tmp_path / "probe"
    probe.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PAMTRI_TEST_PROBE=str(probe),
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    env["CUDA_VISIBLE_DEVICES"] = ""  # gloo on CPU even where a GPU exists
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}",
           "-m", "tests.pipeline.test_distributed", *cli]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both workers: a hung collective must not linger
        out, _ = proc.communicate()
        pytest.fail(f"{WORLD}-process run did not finish in {timeout} s (deadlock?)\n{out[-4000:]}")
    assert proc.returncode == 0, out[-6000:]
    records = [json.loads((probe / f"rank{r}.json").read_text()) for r in range(WORLD)]
    assert [r["rc"] for r in records] == [0] * WORLD and [r["rank"] for r in records] == list(range(WORLD))
    return records


def _check_common(records: list[dict], run: Path, files: set[str]) -> list[dict]:
    """Assertions both stages share; returns the metrics.csv rows."""
    from pamtri.common.checkpoint import load_checkpoint

    # rank 0 alone wrote the run folder, and wrote all of it ("tb": TensorBoard events, when installed)
    assert files <= {p.name for p in run.iterdir()} <= files | {"tb"}
    mine = [[w for w in r["writes"] if Path(w).parent == run] for r in records]
    assert {Path(w).name for w in mine[0]} >= files - {"DONE"} and all(not m for m in mine[1:]), mine[1:]
    # gradients were synchronised: different data on each rank, identical weights after training
    assert records[0]["losses"][0] != records[1]["losses"][0]
    assert records[0]["params"] == records[1]["params"]
    last = load_checkpoint(run / "last.pt")
    assert {n: _hash(last["model"][n]) for n in records[0]["params"]} == records[0]["params"]
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"] and last["epoch"] == 2
    return rows


def _epoch_means(record: dict, steps: int, epochs: int) -> list[float]:
    losses = record["losses"]
    assert len(losses) == steps * epochs
    return [sum(losses[e * steps:(e + 1) * steps]) / steps for e in range(epochs)]


# ------------------------------------------------------------------------------------------- pose

@pytest.fixture(scope="module")
def pose_data(tmp_path_factory):
    from tests.pose.posedata import make_pose_set
    root = tmp_path_factory.mktemp("ddp_pose")
    make_pose_set(root, "train", n=8, seed=0)
    make_pose_set(root, "test", n=5, seed=1)  # odd: the ranks' validation shards differ in size
    return root


def _pose_overrides(root: Path) -> list[str]:
    return [f"data.train=[{{root: '{root}', split: train}}]", f"data.val=[{{root: '{root}', split: test}}]",
            "codec.input_size=[64, 64]", "data.workers=0", "model.name=hrnet_w18_small", "optim.epochs=2",
            "data.batch_size=4", "max_batches=0", "optim.milestones=[1]", "precision=fp32",
            "device=cpu", "eval.batch_size=4", "threads=1"]


def test_pose_train_ddp(pose_data, tmp_path):
    run = tmp_path / "run"
    overrides = _pose_overrides(pose_data)
    records = _launch(tmp_path, ["pose", "train", "--out", str(run)] + [a for o in overrides for a in ("--set", o)])
    rows = _check_common(records, run, {"config.yaml", "last.pt", "best.pt", "metrics.csv"})

    # the sampler: 8 images, 2 ranks x 2 steps x 2 images per epoch; disjoint shards, reshuffled each epoch
    for e in ("0", "1"):
        shards = [r["samples"][e] for r in records]
        assert len(shards[0]) == len(shards[1]) == 4 and sorted(shards[0] + shards[1]) == list(range(8))
    assert records[0]["samples"]["0"] != records[0]["samples"]["1"]
    # the logged loss is the mean over ranks
    means = [_epoch_means(r, steps=2, epochs=2) for r in records]
    for e, row in enumerate(rows):
        assert float(row["loss_total"]) == pytest.approx((means[0][e] + means[1][e]) / 2, rel=1e-5)
    # validation: each rank predicted its share of the 5 images, the score covers all 5
    assert sum(sum(r["val_predicted"]) for r in records) == 2 * 5
    assert all(0 < sum(r["val_predicted"]) < 2 * 5 for r in records)
    assert records[0]["val_scored"] == [5, 5]
    # the shards were validated with rank 0's BatchNorm statistics (the ones its checkpoint holds)
    assert records[0]["buffers"] == records[1]["buffers"]

    # and the logged PCK is what one process measures with the saved weights
    import torch

    import pamtri.pose.train as pose_train
    from pamtri.common.checkpoint import load_checkpoint
    from pamtri.common.config import load_config
    from pamtri.pose.codec import HeatmapCodec
    from pamtri.pose.config import PoseConfig
    from pamtri.pose.dataset import build_datasets, collate
    from pamtri.pose.weights import build_pose_model
    cfg = load_config(PoseConfig, None, overrides)
    model = build_pose_model(cfg.model.name, None)
    model.load_state_dict(load_checkpoint(run / "last.pt")["model"])
    val_set = build_datasets(cfg.data, HeatmapCodec.from_config(cfg))[3]
    loader = torch.utils.data.DataLoader(val_set, batch_size=4, collate_fn=collate)
    table = pose_train.validation_pck(model, loader, cfg, torch.device("cpu"))
    assert float(rows[-1]["pck_mean"]) == pytest.approx(table["mean"], abs=1e-4)


# ------------------------------------------------------------------------------------------- reid



@pytest.fixture(scope="module")
def reid_data(tmp_path_factory):
    base = tmp_path_factory.mktemp("ddp_reid")
    # 8 training identities x 4 images: 4 batches of 2 ids x 4 images per epoch, 2 per rank
    root = write_tiny_synth_tree(base / "data", ids=16)
    cfg = write_tiny_reid_config(base / "tiny.yaml", root, batches=0)
    return root, cfg


def test_reid_train_ddp(reid_data, tmp_path):
    root, cfg = reid_data
    run = tmp_path / "run"
    records = _launch(tmp_path, ["reid", "train", "--config", str(cfg), "--out", str(run)])
    rows = _check_common(records, run, {"config.yaml", "last.pt", "best.pt", "metrics.csv", "DONE"})

    # the P x K sampler: each rank gets whole 8-image batches, disjoint from the other rank's, new each epoch
    for e in ("0", "1"):
        shards = [r["samples"][e] for r in records]
        assert [len(s) for s in shards] == [2, 2] and all(len(b) == 8 for s in shards for b in s)
        flat = [{i for b in s for i in b} for s in shards]
        assert len(flat[0]) == len(flat[1]) == 16 and not flat[0] & flat[1]
    assert records[0]["samples"]["0"] != records[0]["samples"]["1"]
    # the logged loss is the mean over ranks; rank 0 evaluated every epoch
    means = [_epoch_means(r, steps=2, epochs=2) for r in records]
    for e, row in enumerate(rows):
        assert float(row["loss_total"]) == pytest.approx((means[0][e] + means[1][e]) / 2, rel=1e-5)
        assert 0.0 <= float(row["mAP"]) <= 1.0
    from pamtri.common.checkpoint import load_checkpoint
    assert load_checkpoint(run / "best.pt")["format"] == "pamtri-reid-weights-1"


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1:]))
