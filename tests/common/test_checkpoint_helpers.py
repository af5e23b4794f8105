"""The checkpoint helpers both stages' weights modules share (pamtri/common/checkpoint.py)."""
import hashlib

import pytest
import torch

from pamtri.common.checkpoint import file_sha256, state_dict_of, with_batchnorm_counters
from pamtri.common.errors import CheckpointError


def test_file_sha256_is_the_hash_of_the_bytes(tmp_path):
    path = tmp_path / "w.bin"
    path.write_bytes(b"x" * (3 << 20) + b"tail")  # several read blocks
    assert file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert file_sha256(path, block=7) == file_sha256(path)


def test_state_dict_of_unwraps_containers_and_data_parallel_names():
    t = torch.zeros(1)
    for wrapped in ({"state_dict": {"module.a": t, "module.b": t}}, {"model": {"a": t, "module.b": t}},
                    {"best_state_dict": {"a": t, "b": t}, "epoch": 3}, {"a": t, "b": t, "note": "text"}):
        assert set(state_dict_of(wrapped, "f.pt")) == {"a", "b"}
    with pytest.raises(CheckpointError, match="f.pt: holds no tensors"):
        state_dict_of({"epoch": 1}, "f.pt")


def test_old_files_get_the_models_batchnorm_counters_and_nothing_else():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.BatchNorm2d(2))
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    filled = with_batchnorm_counters(state, model)
    assert set(filled) == set(model.state_dict()) and "1.num_batches_tracked" not in state
    mine = torch.tensor(7)
    assert with_batchnorm_counters({**state, "1.num_batches_tracked": mine}, model)["1.num_batches_tracked"] is mine
