"""Decode photos once into a uint8 array and serve (shuffled) batches from it."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..io import atomic_write_json, cache_root
from .images import ImageError, Preprocessing
from .scan import Problem

log = logging.getLogger(__name__)


def decode_all(paths: list[Path], prep: Preprocessing, names: list[str] | None = None,
               workers: int | None = None, progress: Callable[[int], None] | None = None,
               notes: list[Problem] | None = None, out: np.ndarray | None = None
               ) -> tuple[np.ndarray, list[int], list[Problem]]:
    """Decode and resize every photo with a thread pool (Pillow releases the GIL while decoding).

    Args:
        paths: files to decode.
        prep: the preprocessing that fixes size, interpolation and background.
        names: how to name each file in problems (default: the path).
        progress: called with 1 after each file.
        notes: receives remarks on files that were used (e.g. no face found).
        out: where to decode (N, H, W, 3), e.g. a memory-mapped file; its rows are not
            compacted (rows of failed photos are left as they were).

    Returns:
        (images uint8 (N_ok, H, W, 3) — or `out` itself when given —, indices of `paths` that
        decoded, problems for the rest)
    """
    names = names or [str(p) for p in paths]
    h, w = prep.output_size
    given = out is not None
    if out is None:
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
    if len(ok) != len(paths) and not given:
        out = out[ok]
    return out, ok, problems


class Rows:
    """A lazy selection of rows of a (memory-mapped) array: rows are read only when a batch
    asks for them, so a training set larger than memory is never loaded whole."""

    def __init__(self, base: np.ndarray, index):
        self.base = base
        self.index = np.asarray(index, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.index)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.index),) + tuple(self.base.shape[1:])

    @property
    def dtype(self):
        return self.base.dtype

    def take(self, idx) -> "Rows":
        return Rows(self.base, self.index[np.asarray(idx, dtype=np.int64)])

    def __getitem__(self, key) -> np.ndarray:
        sel = self.index[key]
        if np.ndim(sel) == 0:
            return np.asarray(self.base[int(sel)])
        order = np.argsort(sel, kind="stable")  # read the file in order, hand rows back as asked
        rows = np.asarray(self.base[sel[order]])
        out = np.empty_like(rows)
        out[order] = rows
        return out


def _available_memory() -> int:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 8 * 1024**3


IN_MEMORY_LIMIT = 2 * 1024**3  # decoded photos above this (or a quarter of free memory) go to disk


def decoded_on_disk(n: int, prep: Preprocessing) -> bool:
    """Whether n decoded photos should live in a memory-mapped file (DIYCNN_DECODED=memory|disk|auto)."""
    choice = os.environ.get("DIYCNN_DECODED", "auto")
    if choice in ("memory", "disk"):
        return choice == "disk"
    h, w = prep.output_size
    return n * h * w * 3 > min(IN_MEMORY_LIMIT, _available_memory() // 4)


def decode_cached(records, prep: Preprocessing, notes: list[Problem] | None = None,
                  progress: Callable[[int], None] | None = None) -> tuple[np.ndarray | Rows, list[int], list[Problem]]:
    """decode_all for a scan's records, in memory or — for big folders — into a memory-mapped
    file in the cache (DIYCNN_CACHE/decoded/, keyed by the photos' content hashes and the
    preprocessing; a later run on the same photos maps it without decoding). On disk the
    images come back as `Rows` (read lazily)."""
    paths, names = [r.path for r in records], [r.rel for r in records]
    if not decoded_on_disk(len(records), prep):
        return decode_all(paths, prep, names=names, notes=notes, progress=progress)

    digest = hashlib.sha256(json.dumps(prep.to_dict(), sort_keys=True).encode())
    for r in records:
        digest.update(r.sha256.encode())
    folder = cache_root() / "decoded"
    key = digest.hexdigest()[:32]
    data, meta = folder / f"{key}.npy", folder / f"{key}.json"
    try:
        info = json.loads(meta.read_text(encoding="utf-8"))
        images = np.load(data, mmap_mode="r")
        if images.shape[0] == len(records):
            log.info("decoded photos: memory-mapped from %s", data)
            try:
                os.utime(meta)  # last use, for `diycnn cache`
            except OSError:
                pass  # a read-only cache still works
            if notes is not None:
                notes.extend(Problem(**n) for n in info["notes"])
            return Rows(images, info["ok"]), info["ok"], [Problem(**f) for f in info["failed"]]
    except (OSError, ValueError, KeyError):
        pass  # not cached yet, or damaged: decode
    h, w = prep.output_size
    tmp = folder / f".{key}.{os.getpid()}.npy.tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(records), h, w, 3))
    except OSError as exc:
        log.warning("Cannot create the decoded-photo file in %s (%s); decoding into memory", folder, exc)
        return decode_all(paths, prep, names=names, notes=notes, progress=progress)
    mine: list[Problem] = []
    _, ok, failed = decode_all(paths, prep, names=names, notes=mine, progress=progress, out=out)
    try:
        out.flush()
        del out
        os.replace(tmp, data)
        atomic_write_json(meta, {"ok": ok, "failed": [f.to_dict() for f in failed],
                                 "notes": [n.to_dict() for n in mine]})
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OSError(exc.errno, f"Could not write the decoded-photo cache '{data}' ({exc.strerror}). Free disk "
                                 "space there, or point DIYCNN_CACHE at a bigger disk.") from None
    if notes is not None:
        notes.extend(mine)
    return Rows(np.load(data, mmap_mode="r"), ok), ok, failed


class ArrayBatches:
    """Batches over data held in memory: decoded photos uint8 (N, H, W, 3) or features (N, F).

    Shuffling is seeded by (seed, epoch), so epoch e's order never depends on what ran
    before it: a resumed run sees exactly the batches an uninterrupted one would.
    shuffle: False (in order), True (reshuffled every epoch) or "once" (one fixed
    shuffled order for all epochs, as Teachable Machine does).
    """

    def __init__(self, x: np.ndarray, labels: np.ndarray, batch_size: int,
                 shuffle: bool | str = False, seed: int = 0):
        import torch  # noqa: PLC0415 (lazy: loads torch)

        self.lazy = isinstance(x, Rows)  # memory-mapped photos: read batch by batch
        self.x = x if self.lazy else torch.from_numpy(np.ascontiguousarray(x))
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
        import torch  # noqa: PLC0415 (lazy: loads torch)

        positions, step = self._positions(epoch)
        positions = torch.from_numpy(positions)
        for b in range(start_batch, len(self)):
            idx = positions[b * step:(b + 1) * step]
            yield self.rows(idx), self.labels[idx]

    def _positions(self, epoch: int) -> tuple[np.ndarray, int]:
        """The items this process reads in epoch order, and how many per step."""
        return self.order(epoch), self.batch_size

    def rows(self, idx):
        import torch  # noqa: PLC0415 (lazy: loads torch)

        return torch.from_numpy(self.x[idx.numpy()]) if self.lazy else self.x[idx]


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

    def _positions(self, epoch: int) -> tuple[np.ndarray, int]:
        order = self.order(epoch)
        pad = (-len(order)) % self.world
        padded = np.concatenate([order, order[:pad]]) if pad else order
        return padded[self.rank::self.world], self.local_batch

    def __len__(self) -> int:
        n = len(self.labels) + (-len(self.labels)) % self.world
        return (n + self.batch_size - 1) // self.batch_size
