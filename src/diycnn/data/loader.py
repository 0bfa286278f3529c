"""Decode photos once into a uint8 array and serve (shuffled) batches from it."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .images import ImageError, Preprocessing
from .scan import Problem

log = logging.getLogger(__name__)


def decode_all(paths: list[Path], prep: Preprocessing, names: list[str] | None = None,
               workers: int | None = None, progress: Callable[[int], None] | None = None,
               notes: list[Problem] | None = None) -> tuple[np.ndarray, list[int], list[Problem]]:
    """Decode and resize every photo with a thread pool (Pillow releases the GIL while decoding).

    Args:
        paths: files to decode.
        prep: the preprocessing that fixes size, interpolation and background.
        names: how to name each file in problems (default: the path).
        progress: called with 1 after each file.
        notes: receives remarks on files that were used (e.g. no face found).

    Returns:
        (images uint8 (N_ok, H, W, 3), indices of `paths` that decoded, problems for the rest)
    """
    names = names or [str(p) for p in paths]
    h, w = prep.output_size
    out = np.empty((len(paths), h, w, 3), dtype=np.uint8)
    ok: list[int] = []
    problems: list[Problem] = []

    def work(i: int):
        remarks: list[str] = []
        try:
            out[i] = prep.load(paths[i], remarks)
            if remarks and notes is not None:
                notes.extend(Problem(names[i], r) for r in remarks)  # list.extend is atomic under the GIL
            return i, None
        except ImageError as exc:
            return i, exc.reason
        finally:
            if progress:
                progress(1)

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 2) as pool:
        for i, reason in pool.map(work, range(len(paths))):
            if reason is None:
                ok.append(i)
            else:
                problems.append(Problem(names[i], reason))
    if len(ok) != len(paths):
        out = out[ok]
    return out, ok, problems


class ArrayBatches:
    """Batches over data held in memory: decoded photos uint8 (N, H, W, 3) or features (N, F).

    Shuffling is seeded by (seed, epoch), so epoch e's order never depends on what ran
    before it: a resumed run sees exactly the batches an uninterrupted one would.
    shuffle: False (in order), True (reshuffled every epoch) or "once" (one fixed
    shuffled order for all epochs, as Teachable Machine does).
    """

    def __init__(self, x: np.ndarray, labels: np.ndarray, batch_size: int,
                 shuffle: bool | str = False, seed: int = 0):
        import torch

        self.x = torch.from_numpy(np.ascontiguousarray(x))
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed

    def __len__(self) -> int:
        return (len(self.labels) + self.batch_size - 1) // self.batch_size

    def order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.labels))
        key = 0 if self.shuffle == "once" else epoch
        return np.random.default_rng([self.seed, key]).permutation(len(self.labels))

    def iterate(self, epoch: int = 0, start_batch: int = 0) -> Iterator[tuple]:
        """Yield (x (B, ...), labels (B,)) from batch `start_batch` on."""
        import torch

        order = torch.from_numpy(self.order(epoch))
        for b in range(start_batch, len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            yield self.x[idx], self.labels[idx]


class ShardedBatches(ArrayBatches):
    """One process's part of each global batch, for DistributedDataParallel.

    The epoch's order is exactly a single-process run's (seeded by seed and epoch), padded by
    repeating its start to a multiple of `world` as torch's DistributedSampler pads; process
    `rank` takes every `world`-th item from `rank` on, in consecutive runs of
    batch_size / world. Step b's items over all processes are then exactly the single-process
    batch b, so with DDP's gradient averaging N processes take the same steps as one
    (up to float rounding, dropout masks and per-process BatchNorm statistics).
    """

    def __init__(self, x: np.ndarray, labels: np.ndarray, batch_size: int, shuffle: bool | str = False,
                 seed: int = 0, rank: int = 0, world: int = 1):
        if batch_size % world:
            raise ValueError(f"The batch size ({batch_size}) is the global batch and must be divisible by the "
                             f"number of processes ({world}); use --batch-size {batch_size // world * world or world}.")
        super().__init__(x, labels, batch_size, shuffle, seed)
        self.rank, self.world = rank, world
        self.local_batch = batch_size // world

    def _shard(self, epoch: int) -> np.ndarray:
        order = self.order(epoch)
        pad = (-len(order)) % self.world
        padded = np.concatenate([order, order[:pad]]) if pad else order
        return padded[self.rank::self.world]

    def __len__(self) -> int:
        n = len(self.labels) + (-len(self.labels)) % self.world
        return (n + self.batch_size - 1) // self.batch_size

    def iterate(self, epoch: int = 0, start_batch: int = 0) -> Iterator[tuple]:
        import torch

        shard = torch.from_numpy(self._shard(epoch))
        for b in range(start_batch, len(self)):
            idx = shard[b * self.local_batch:(b + 1) * self.local_batch]
            yield self.x[idx], self.labels[idx]
