"""P x K and domain-balanced batch samplers: composition, validation, determinism, DDP sharding."""
import logging
from collections import Counter

import numpy as np
import pytest

from pamtri.reid.samplers import DomainBalancedSampler, IdentitySampler


def _labels(counts):
    return [pid for pid, c in enumerate(counts) for _ in range(c)]


def test_identity_batches_are_p_ids_by_k_images():
    labels = _labels([8, 4, 6, 9, 4, 5, 12, 4])
    s = IdentitySampler(labels, p=4, k=4, seed=3)
    batches = list(s)
    assert len(batches) == len(s) > 0
    seen = []
    for b in batches:
        assert len(b) == 16
        ids = Counter(labels[i] for i in b)
        assert len(ids) == 4 and set(ids.values()) == {4}
        seen += b
    assert len(seen) == len(set(seen))  # without replacement within an epoch
    assert list(s) == batches            # same epoch, same batches
    s.set_epoch(1)
    assert list(s) != batches


def test_small_identity_sampled_with_replacement_and_warned(caplog):
    labels = _labels([2, 6, 6])
    with caplog.at_level(logging.WARNING):
        s = IdentitySampler(labels, p=3, k=4)
    assert "fewer than K=4" in caplog.text and "replacement" in caplog.text
    b = next(iter(s))
    assert Counter(labels[i] for i in b) == {0: 4, 1: 4, 2: 4}
    assert set(i for i in b if labels[i] == 0) <= {0, 1}


def test_identity_sampler_rejects_too_few_identities():
    with pytest.raises(ValueError, match="P=5 distinct identities but the data set has only 3"):
        IdentitySampler(_labels([4, 4, 4]), p=5, k=2)
    with pytest.raises(ValueError):
        IdentitySampler(_labels([4, 4]), p=1, k=0)


def test_ddp_shards_are_disjoint_equal_and_whole_batches():
    labels = _labels([4] * 20)
    full = list(IdentitySampler(labels, p=2, k=4, seed=7))
    shards = [list(IdentitySampler(labels, p=2, k=4, seed=7, rank=r, world_size=3)) for r in range(3)]
    assert len({len(sh) for sh in shards}) == 1 and len(shards[0]) == len(full) // 3
    flat = [tuple(b) for sh in shards for b in sh]
    assert len(flat) == len(set(flat))
    assert set(flat) <= {tuple(b) for b in full}
    for sh in shards:
        for b in sh:
            assert sorted(Counter(labels[i] for i in b).values()) == [4, 4]
    with pytest.raises(ValueError):
        IdentitySampler(labels, p=2, k=4, rank=3, world_size=3)


def test_domain_balanced_batches():
    labels = _labels([5] * 6 + [4] * 10)
    domains = [0] * 30 + [1] * 40
    s = DomainBalancedSampler(labels, domains, n=2, m=4, seed=1)
    batches = list(s)
    assert len(batches) == len(s) == 3  # 6 real identities, one group of 4 each, 2 per batch
    for b in batches:
        assert len(b) == 16
        real = Counter(labels[i] for i in b if domains[i] == 0)
        synth = Counter(labels[i] for i in b if domains[i] == 1)
        assert len(real) == 2 and len(synth) == 2 and set(real.values()) == set(synth.values()) == {4}
    with pytest.raises(ValueError, match="n=3 synthetic identities"):
        DomainBalancedSampler(_labels([4] * 4 + [4] * 2), [0] * 16 + [1] * 8, n=3, m=2)
    sh = [list(DomainBalancedSampler(labels, domains, 2, 4, seed=1, rank=r, world_size=2)) for r in range(2)]
    assert len(sh[0]) == len(sh[1]) == 1 and sh[0][0] != sh[1][0]


def test_sampler_feeds_a_dataloader():
    import torch
    from torch.utils.data import DataLoader, TensorDataset
    labels = _labels([4] * 6)
    ds = TensorDataset(torch.tensor(labels))
    loader = DataLoader(ds, batch_sampler=IdentitySampler(labels, p=3, k=2))
    for (y,) in loader:
        assert y.shape == (6,) and np.unique(y.numpy()).size == 3


def test_too_few_training_identities_is_a_one_line_error_naming_keys_root_and_numbers(tmp_path, capsys):
    from pamtri.common.errors import ConfigError
    from pamtri.pipeline.cli import main
    from tests.conftest import write_tiny_reid_config, write_tiny_synth_tree
    with pytest.raises(ConfigError, match=r"P=5 .* only 3 \(sampler.batch_size 10 / sampler.k 2\)"):
        IdentitySampler(_labels([4, 4, 4]), p=5, k=2)
    root = write_tiny_synth_tree(tmp_path / "data", ids=8)
    cfg = write_tiny_reid_config(tmp_path / "tiny.yaml", root)
    capsys.readouterr()
    assert main(["reid", "train", "--config", str(cfg), "--out", str(tmp_path / "run"),
                 "--set", "sampler.batch_size=64", "--set", "sampler.k=2"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(root) in err[0] and "P=32" in err[0] and "sampler.batch_size 64" in err[0], err
