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

from ..io import atomic_write_bytes, atomic_write_text, cache_root, sign, signed
from .loader import decode_all
from .scan import ImageRecord, Problem

log = logging.getLogger(__name__)

MAX_ENTRY_BYTES = 1 << 20  # one photo's features (a few KB) or remarks; a bigger entry is not diycnn's


class FeatureCache:
    """One folder per (backbone, weights, preprocessing, precision); one .npy per photo hash."""

    def __init__(self, key: dict[str, Any], root: Path | None = None):
        blob = json.dumps(key, sort_keys=True).encode()
        self.key = key
        self.dir = (root or cache_root()) / "features" / hashlib.sha256(blob).hexdigest()[:24]
        self.hits = 0
        self.misses = 0
        self._remarks: dict[str, list[str]] = {}

    def _path(self, sha256: str) -> Path:
        return self.dir / sha256[:2] / f"{sha256}.npy"

    def holds(self, sha256: str) -> bool:
        """Whether features for this photo are cached (a file check; `get` may still refuse them)."""
        return self._path(sha256).is_file()

    def _signed_parts(self, sha256: str, npy: bytes, notes: bytes) -> tuple:
        """What an entry's signature covers: this cache's key, the photo, its features and remarks."""
        return ("features", self.dir.name, sha256, npy, notes)

    def get(self, sha256: str) -> np.ndarray | None:
        """The cached features, or None: missing, damaged, too large, or not signed with this user's
        key (an entry someone else wrote, or one changed since, is recomputed, never used)."""
        path = self._path(sha256)
        try:
            if path.is_symlink() or path.stat().st_size > MAX_ENTRY_BYTES:
                return None
            npy = path.read_bytes()
            notes_path = path.with_suffix(".notes.json")
            notes = notes_path.read_bytes() if notes_path.is_file() and not notes_path.is_symlink() else b""
            signature = path.with_suffix(".sig").read_text(encoding="ascii")[:128]
            if len(notes) > MAX_ENTRY_BYTES or not signed(signature, *self._signed_parts(sha256, npy, notes)):
                log.debug("feature cache entry %s is not signed by this user; recomputing", path)
                return None
            arr = np.load(io.BytesIO(npy), allow_pickle=False)
            saved = json.loads(notes) if notes else []
        except (OSError, ValueError):
            return None  # missing or damaged: recompute
        if arr.ndim != 1 or arr.dtype != np.float32:
            return None
        self._remarks[sha256] = [str(r) for r in saved] if isinstance(saved, list) else []
        return arr

    def touch(self) -> None:
        """Mark this cache folder as used now (`diycnn cache` lists and clears by last use)."""
        try:
            os.utime(self.dir / "key.json")
        except OSError:
            pass  # not written yet, or a read-only cache

    def remarks(self, sha256: str) -> list[str]:
        """What decoding this photo remarked (e.g. no face found), stored (and signed) with its
        features; read by `get`."""
        return list(self._remarks.get(sha256, []))

    def put(self, sha256: str, features: np.ndarray, remarks: list[str] | None = None) -> None:
        path = self._path(sha256)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not (self.dir / "key.json").exists():
                atomic_write_text(self.dir / "key.json", json.dumps(self.key, indent=2))
            notes = json.dumps(remarks).encode() if remarks else b""
            if notes:  # before the features: a cached photo always has its remarks
                atomic_write_bytes(path.with_suffix(".notes.json"), notes)
            else:
                path.with_suffix(".notes.json").unlink(missing_ok=True)
            buf = io.BytesIO()
            np.save(buf, np.asarray(features, dtype=np.float32), allow_pickle=False)
            npy = buf.getvalue()
            atomic_write_bytes(path, npy)
            atomic_write_text(path.with_suffix(".sig"), sign(*self._signed_parts(sha256, npy, notes)))  # last: whole
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
