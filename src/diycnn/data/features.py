"""On-disk cache of frozen-backbone features, keyed by photo content + backbone + preprocessing.

A second `tm` or `linear-probe` run on the same photos skips extraction. A changed photo
has a new content hash, so it is simply a cache miss. The cache lives in `DIYCNN_CACHE`
(default `~/.cache/diycnn`), never next to the user's photos.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..io import atomic_write_bytes, atomic_write_text, cache_root
from .loader import decode_all
from .scan import ImageRecord, Problem

log = logging.getLogger(__name__)


class FeatureCache:
    """One folder per (backbone, weights, preprocessing, precision); one .npy per photo hash."""

    def __init__(self, key: dict[str, Any], root: Path | None = None):
        blob = json.dumps(key, sort_keys=True).encode()
        self.key = key
        self.dir = (root or cache_root()) / "features" / hashlib.sha256(blob).hexdigest()[:24]
        self.hits = 0
        self.misses = 0

    def _path(self, sha256: str) -> Path:
        return self.dir / sha256[:2] / f"{sha256}.npy"

    def holds(self, sha256: str) -> bool:
        """Whether features for this photo are cached (a file check; `get` may still find it damaged)."""
        return self._path(sha256).is_file()

    def get(self, sha256: str) -> np.ndarray | None:
        path = self._path(sha256)
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return None  # missing or damaged: recompute
        return arr if arr.ndim == 1 else None

    def touch(self) -> None:
        """Mark this cache folder as used now (`diycnn cache` lists and clears by last use)."""
        try:
            os.utime(self.dir / "key.json")
        except OSError:
            pass  # not written yet, or a read-only cache

    def remarks(self, sha256: str) -> list[str]:
        """What decoding this photo remarked (e.g. no face found), stored beside its features."""
        try:
            saved = json.loads(self._path(sha256).with_suffix(".notes.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        return [str(r) for r in saved] if isinstance(saved, list) else []

    def put(self, sha256: str, features: np.ndarray, remarks: list[str] | None = None) -> None:
        path = self._path(sha256)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not (self.dir / "key.json").exists():
                atomic_write_text(self.dir / "key.json", json.dumps(self.key, indent=2))
            if remarks:  # before the features: a cached photo always has its remarks
                atomic_write_text(path.with_suffix(".notes.json"), json.dumps(remarks))
            buf = io.BytesIO()
            np.save(buf, np.asarray(features, dtype=np.float32), allow_pickle=False)
            atomic_write_bytes(path, buf.getvalue())
        except OSError as exc:  # a full or read-only cache must not stop training
            log.warning("Could not write the feature cache in %s (%s); continuing without it", self.dir, exc)


def extract_features(records: list[ImageRecord], prep, encode: Callable[[np.ndarray], np.ndarray],
                     cache: FeatureCache | None, chunk: int = 256, notes: list[Problem] | None = None
                     ) -> tuple[np.ndarray, list[int], list[Problem]]:
    """Features (N_ok, F) for `records`, from the cache where possible.

    Args:
        records: photos with content hashes.
        prep: the preprocessing the backbone sees.
        encode: uint8 photos (B, H, W, 3) -> features (B, F).
        cache: where to look first and store new features (None: no cache).
        notes: receives decoding remarks (e.g. no face found), in record order — also for photos
            whose features came from the cache, which keeps them with the features.

    Returns:
        (features, indices of records that worked, problems for photos that failed to decode)
    """
    found: dict[int, np.ndarray] = {}
    remarks: dict[int, list[str]] = {}
    misses: list[int] = []
    for i, r in enumerate(records):
        hit = cache.get(r.sha256) if cache is not None else None
        if hit is not None:
            found[i] = hit
            if notes is not None:
                remarks[i] = cache.remarks(r.sha256)
        else:
            misses.append(i)
    if cache is not None:
        cache.hits += len(found)
        cache.misses += len(misses)
        if found:
            cache.touch()
    problems: list[Problem] = []
    for start in range(0, len(misses), chunk):
        part = misses[start:start + chunk]
        said: list[Problem] = []
        images, ok, failed = decode_all([records[i].path for i in part], prep, names=[records[i].rel for i in part],
                                        notes=said)
        problems += failed
        by_name: dict[str, list[str]] = {}
        for p in said:
            by_name.setdefault(p.path, []).append(p.reason)
        if not ok:
            continue
        feats = encode(images)
        for j, f in zip(ok, feats):
            i = part[j]
            found[i] = f
            remarks[i] = by_name.get(records[i].rel, [])
            if cache is not None:
                cache.put(records[i].sha256, f, remarks[i])
    order = sorted(found)
    if notes is not None:
        notes.extend(Problem(records[i].rel, r) for i in order for r in remarks.get(i, []))
    if not order:
        return np.zeros((0, 0), dtype=np.float32), [], problems
    return np.stack([found[i] for i in order]).astype(np.float32), order, problems
