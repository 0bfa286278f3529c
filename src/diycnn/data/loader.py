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
               workers: int | None = None, progress: Callable[[int], None] | None = None
               ) -> tuple[np.ndarray, list[int], list[Problem]]:
    """Decode and resize every photo with a thread pool (Pillow releases the GIL while decoding).

    Args:
        paths: files to decode.
        prep: the preprocessing that fixes size, interpolation and background.
        names: how to name each file in problems (default: the path).
        progress: called with 1 after each file.

    Returns:
        (images uint8 (N_ok, H, W, 3), indices of `paths` that decoded, problems for the rest)
    """
    names = names or [str(p) for p in paths]
    h, w = prep.size
    out = np.empty((len(paths), h, w, 3), dtype=np.uint8)
    ok: list[int] = []
    problems: list[Problem] = []

    def work(i: int):
        try:
            out[i] = prep.load(paths[i])
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
    """Batches over decoded photos held in memory as uint8 (N, H, W, 3).

    Shuffling is seeded by (seed, epoch), so epoch e's order never depends on what ran
    before it: a resumed run sees exactly the batches an uninterrupted one would.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int,
                 shuffle: bool = False, seed: int = 0):
        import torch

        self.images = torch.from_numpy(np.ascontiguousarray(images))
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed

    def __len__(self) -> int:
        return (len(self.labels) + self.batch_size - 1) // self.batch_size

    @property
    def num_images(self) -> int:
        return len(self.labels)

    def order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.labels))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.labels))

    def iterate(self, epoch: int = 0, start_batch: int = 0) -> Iterator[tuple]:
        """Yield (uint8 images (B, H, W, 3), labels (B,)) from batch `start_batch` on."""
        import torch

        order = torch.from_numpy(self.order(epoch))
        for b in range(start_batch, len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            yield self.images[idx], self.labels[idx]
