"""Data order as a pure function of (seed, sample position): resumable and partition-independent.

The run consumes one endless stream of samples: position ``p`` is sample ``perm_e[p % N]`` of epoch
``e = p // N``, where ``perm_e`` is a permutation seeded by ``(seed, e)``. Iteration ``i`` of a run
with global batch ``G`` reads positions ``i*G ... i*G + G - 1``; DDP rank ``r`` of ``W`` takes the
``r``-th contiguous slice of ``G / W``. Hence a resumed run, or a run on a different number of
processes with the same global batch, reads exactly the same samples with exactly the same
augmentation (the dataset seeds each sample's augmentation from ``(aug_seed, epoch, index)``).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


def epoch_permutation(num_samples: int, seed: int, epoch: int) -> list[int]:
    """The sample order of one epoch: a permutation of ``range(num_samples)`` seeded by (seed, epoch)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_samples, generator=g).tolist()


class IterationBatchSampler(Sampler[list[tuple[int, int]]]):
    """Yields, for each iteration from `start_iter` to `max_iters`, this rank's ``(index, epoch)`` pairs.

    Args:
        num_samples: dataset length N.
        batch_size: samples per rank per iteration.
        seed: data-order seed.
        start_iter: first iteration to yield (the resumed checkpoint's iteration).
        max_iters: iterations in the run.
        rank: this process's DDP rank.
        world_size: number of DDP processes (global batch = batch_size * world_size).
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int, start_iter: int, max_iters: int,
                 rank: int = 0, world_size: int = 1) -> None:
        if num_samples < 1:
            raise ValueError("IterationBatchSampler: the training set is empty")
        self.n, self.b, self.seed = num_samples, batch_size, seed
        self.start, self.stop, self.rank, self.world = start_iter, max_iters, rank, world_size
        self._perm_epoch, self._perm = -1, []

    def _sample(self, position: int) -> tuple[int, int]:
        epoch = position // self.n
        if epoch != self._perm_epoch:  # one permutation is live at a time: memory O(N)
            self._perm_epoch, self._perm = epoch, epoch_permutation(self.n, self.seed, epoch)
        return self._perm[position % self.n], epoch

    def batch(self, iteration: int) -> list[tuple[int, int]]:
        """This rank's (index, epoch) pairs for one iteration."""
        first = (iteration * self.world + self.rank) * self.b
        return [self._sample(p) for p in range(first, first + self.b)]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for it in range(self.start, self.stop):
            yield self.batch(it)

    def __len__(self) -> int:
        return max(self.stop - self.start, 0)
