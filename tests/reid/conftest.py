"""Shared by the ReID tests: one torch thread for every test."""
import pytest


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread):
    yield
