"""Training batches that depend only on (seed, epoch, position): resumable mid-epoch and the same for any
number of processes or data workers.

:class:`ResumableBatchSampler` draws one permutation per epoch from ``(seed, epoch)``, cuts it into global
batches of ``batch_size`` and deals each global batch to the processes as DistributedSampler does
(process r takes positions r, r + N, ...), so the union of the processes' batches at step k is the
single-process batch k, and the first half of every process's batch is the first half of the global
batch (what SAT and DDC-AT keep clean) whenever the per-process batch is even. It can start an epoch at any
batch (resume after a crash) without loading the batches it skips. It yields ``(epoch, index)`` keys;
:class:`EpochSeeded` seeds the random augmentation of each sample from ``(seed, epoch, index)``, so a sample
looks the same whichever worker loads it and whatever was loaded before it.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import torch


def derived_seed(*keys: int) -> int:
    """A well-mixed 32-bit seed from integer keys (numpy's SeedSequence)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0])


class ResumableBatchSampler(torch.utils.data.Sampler):
    """Per-epoch shuffled batches (incomplete last batch dropped), sharded across processes.

    Args:
        size: number of samples in the dataset.
        batch_size: global batch size (all processes together); divisible by ``world_size``.
        seed: base seed of the permutations.
        rank: this process's index.
        world_size: number of processes.
    """

    def __init__(self, size: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        if batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} is not divisible by {world_size} processes")
        if size < batch_size:
            raise ValueError(f"{size} samples are fewer than one batch of {batch_size}")
        self.size = size
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Iterate over ``epoch``'s batches from batch ``start`` on (0: the whole epoch)."""
        self.epoch = epoch
        self.start = start

    def __len__(self) -> int:
        """Batches in a whole epoch."""
        return self.size // self.batch_size

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        generator = torch.Generator().manual_seed(derived_seed(self.seed, self.epoch))
        order = torch.randperm(self.size, generator=generator).tolist()
        for batch in range(self.start, len(self)):
            chunk = order[batch * self.batch_size : (batch + 1) * self.batch_size]
            yield [(self.epoch, index) for index in chunk[self.rank :: self.world_size]]


class EpochSeeded(torch.utils.data.Dataset):
    """``dataset[index]`` for keys ``(epoch, index)``, with python's ``random`` (which the transforms
    use) seeded from ``(seed, epoch, index)`` for that sample and restored afterwards."""

    def __init__(self, dataset: torch.utils.data.Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        saved = random.getstate()
        random.seed(derived_seed(self.seed, epoch, index))
        try:
            return self.dataset[index]
        finally:
            random.setstate(saved)


def seed_everything(seed: int | None) -> None:
    """Seed python, numpy and torch (data workers derive their seeds from torch's)."""
    if seed is None:
        return
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
