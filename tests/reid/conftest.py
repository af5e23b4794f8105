"""Shared by the ReID tests: one torch thread (small models on a busy 2-core machine run far faster that way)."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
