"""Batch samplers for metric learning: P identities x K images, and StRDAN's domain-balanced batches.

Both are batch samplers (``DataLoader(dataset, batch_sampler=...)``) that yield lists of dataset indices.
An epoch's batches depend only on (seed, epoch), so every DistributedDataParallel rank computes the same
list and takes every ``world_size``-th batch from ``rank`` (equal counts on every rank); each rank's
batch keeps the full P x K structure, so the triplet loss sees positives and negatives on every rank.
``SeededBatches`` wraps either one and hands each index out with a seed for its augmentation.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator, Sequence

import numpy as np

from pamtri.common.errors import ConfigError

log = logging.getLogger(__name__)


def _index_by_id(labels: Sequence[int], subset: np.ndarray | None = None) -> dict[int, np.ndarray]:
    labels = np.asarray(labels)
    where = np.arange(len(labels)) if subset is None else subset
    groups: dict[int, list[int]] = defaultdict(list)
    for i in where:
        groups[int(labels[i])].append(int(i))
    return {pid: np.asarray(idx, dtype=np.int64) for pid, idx in sorted(groups.items())}


def _groups(index_by_id: dict[int, np.ndarray], k: int, rng: np.random.Generator) -> dict[int, list[np.ndarray]]:
    """Each identity's images shuffled and cut into groups of k (fewer than k images: one group drawn with
    replacement; a remainder shorter than k is dropped)."""
    out = {}
    for pid, idx in index_by_id.items():
        if len(idx) < k:
            out[pid] = [rng.choice(idx, size=k, replace=True)]
        else:
            perm = rng.permutation(idx)
            out[pid] = [perm[j:j + k] for j in range(0, len(perm) - k + 1, k)]
    return out


def _draw(groups: dict[int, list[np.ndarray]], p: int, rng: np.random.Generator) -> list[list[np.ndarray]]:
    """Batches of p groups from p distinct identities, until fewer than p identities have groups left."""
    batches = []
    active = [pid for pid, g in groups.items() if g]
    while len(active) >= p:
        chosen = rng.choice(len(active), size=p, replace=False)
        batches.append([groups[active[c]].pop() for c in chosen])
        active = [pid for pid in active if groups[pid]]
    return batches


def _warn_small(index_by_id: dict[int, np.ndarray], k: int, what: str) -> None:
    small = [pid for pid, idx in index_by_id.items() if len(idx) < k]
    if small:
        log.warning("%d %sidentities have fewer than K=%d images (e.g. id %d with %d); their images are sampled "
                    "with replacement", len(small), what, k, small[0], len(index_by_id[small[0]]))


class _EpochBatches:
    """Shared epoch bookkeeping: deterministic batches per (seed, epoch), sharded by rank."""

    def __init__(self, seed: int, rank: int, world_size: int):
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not within world size {world_size}")
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.epoch = 0
        self._cache: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose batches the next iteration yields (call before each epoch)."""
        self.epoch = int(epoch)

    def _all_batches(self, rng: np.random.Generator) -> list[list[int]]:
        raise NotImplementedError

    def _mine(self) -> list[list[int]]:
        if self._cache is None or self._cache[0] != self.epoch:
            batches = self._all_batches(np.random.default_rng([self.seed, self.epoch]))
            usable = len(batches) - len(batches) % self.world_size
            self._cache = (self.epoch, batches[self.rank:usable:self.world_size])
        return self._cache[1]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._mine())

    def __len__(self) -> int:
        return len(self._mine())


class IdentitySampler(_EpochBatches):
    """Batches of P identities x K images each (batch size P*K per rank). An epoch is one pass over every
    identity's groups of K, or with ``per_image`` len(labels) // (P K world_size) batches per rank drawn from as
    many consecutive passes as that takes (fast-reid's iterations per epoch)."""

    def __init__(self, labels: Sequence[int], p: int, k: int, seed: int = 0, rank: int = 0, world_size: int = 1,
                 per_image: bool = False):
        super().__init__(seed, rank, world_size)
        self.target = len(labels) // (p * k * world_size) * world_size if per_image else 0
        if p < 1 or k < 1:
            raise ValueError(f"P and K must be >= 1, got P={p}, K={k}")
        self.index_by_id = _index_by_id(labels)
        if len(self.index_by_id) < p:
            raise ConfigError(f"a batch needs P={p} distinct identities but the data set has only "
                              f"{len(self.index_by_id)} (sampler.batch_size {p * k} / sampler.k {k}); lower "
                              "sampler.batch_size or raise sampler.k")
        self.p, self.k = int(p), int(k)
        _warn_small(self.index_by_id, self.k, "")
        if len(self) == 0:
            raise ConfigError(f"not one batch of P={p} x K={k} per rank with {world_size} ranks from "
                              f"{len(self.index_by_id)} identities; lower sampler.batch_size")

    def _all_batches(self, rng: np.random.Generator) -> list[list[int]]:
        batches = [np.concatenate(b).tolist() for b in _draw(_groups(self.index_by_id, self.k, rng), self.p, rng)]
        while len(batches) < self.target:  # per_image: further passes until the epoch's count
            batches += [np.concatenate(b).tolist() for b in _draw(_groups(self.index_by_id, self.k, rng), self.p, rng)]
        return batches[:self.target] if self.target else batches


class DomainBalancedSampler(_EpochBatches):
    """StRDAN batches: n real identities and n synthetic identities, m images each (2*n*m per rank).

    One epoch is one pass over the real images' groups; synthetic groups are drawn from a stream that is
    reshuffled whenever it runs short (synthetic sets are usually larger).
    """

    def __init__(self, labels: Sequence[int], domains: Sequence[int], n: int, m: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1, real: int = 0, synthetic: int = 1):
        super().__init__(seed, rank, world_size)
        if n < 1 or m < 1:
            raise ValueError(f"n and m must be >= 1, got n={n}, m={m}")
        domains = np.asarray(domains)
        self.real_ids = _index_by_id(labels, np.flatnonzero(domains == real))
        self.synth_ids = _index_by_id(labels, np.flatnonzero(domains == synthetic))
        for what, ids in (("real", self.real_ids), ("synthetic", self.synth_ids)):
            if len(ids) < n:
                raise ConfigError(f"a domain-balanced batch needs n={n} {what} identities but the data set has "
                                  f"{len(ids)} (sampler.batch_size {2 * n * m} / sampler.k {m} / 2); lower "
                                  "sampler.batch_size or raise sampler.k")
        self.n, self.m = int(n), int(m)
        _warn_small(self.real_ids, self.m, "real ")
        _warn_small(self.synth_ids, self.m, "synthetic ")
        if len(self) == 0:
            raise ConfigError(f"not one domain-balanced batch of 2 x {n} x {m} per rank with {world_size} ranks; "
                              "lower sampler.batch_size")

    def _all_batches(self, rng: np.random.Generator) -> list[list[int]]:
        real = _draw(_groups(self.real_ids, self.m, rng), self.n, rng)
        synth: list[list[np.ndarray]] = []
        while len(synth) < len(real):
            synth += _draw(_groups(self.synth_ids, self.m, rng), self.n, rng)
        return [np.concatenate(r + s).tolist() for r, s in zip(real, synth)]


class SeededBatches:
    """Wraps a batch sampler: yields ``[(index, seed), ...]`` with seeds drawn from (seed, rank, epoch, batch)."""

    def __init__(self, batch_sampler, seed: int, rank: int = 0):
        self.inner, self.seed, self.rank, self.epoch = batch_sampler, int(seed), int(rank), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.inner, "set_epoch"):
            self.inner.set_epoch(epoch)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for b, batch in enumerate(self.inner):
            seeds = np.random.default_rng([self.seed, self.rank, self.epoch, b]).integers(0, 2**62, size=len(batch))
            yield [(int(i), int(s)) for i, s in zip(batch, seeds)]

    def __len__(self) -> int:
        return len(self.inner)
