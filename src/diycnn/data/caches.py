"""What diycnn keeps in its cache folder, and clearing it (`diycnn cache`, `diycnn cache clear`).

The cache folder is `DIYCNN_CACHE` (default `~/.cache/diycnn`), never next to a user's photos.
It holds two kinds of entry, each safe to delete at any time — a later run recomputes what
it needs:

- `features/<key>/`: frozen-backbone features, one .npy per photo (tm, linear-probe runs),
  with the backbone, weights and preprocessing they belong to in `key.json`;
- `decoded/<key>.npy` + `.json`: the decoded photos of a folder too big for memory, which
  later runs on the same photos memory-map instead of decoding again;
- `scan/<key>.json`: per data folder, each file's content hash and image check, so a later
  scan reads only new or changed files.

Runs touch an entry's `key.json` / `.json` when they use it (a scan rewrites its file when
the folder changed), so "last used" is its mtime.
Temporary files of a write that never finished (a killed run) are listed as `unfinished`
and removed by `clear` once they are a day old (younger ones may belong to a running job).
Nothing else under the folder (e.g. the Keras benchmark's virtualenv) is listed or touched.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io import cache_root

KINDS = ("features", "decoded", "scan")
UNFINISHED_AGE_S = 24 * 3600


@dataclass
class CacheEntry:
    kind: str  # "features", "decoded" or "unfinished"
    group: str  # the folder it lives in: one of KINDS
    path: Path  # a features folder, a decoded .npy, or a temporary file
    bytes: int  # on disk
    files: int
    last_used: float  # seconds since the epoch
    about: str

    def to_dict(self) -> dict:
        return {"kind": self.kind, "group": self.group, "path": str(self.path), "bytes": self.bytes, "files": self.files,
                "last_used": self.last_used, "about": self.about}


def _is_temporary(path: Path) -> bool:
    return path.name.startswith(".") and path.name.endswith(".tmp")


def _disk_bytes(st) -> int:
    """Space a file takes on disk (what deleting it frees), or its length where blocks are unknown."""
    blocks = getattr(st, "st_blocks", None)
    return blocks * 512 if blocks is not None else st.st_size


def _mtime(path: Path, default: float = 0.0) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return default


def _unfinished(group: str, f: Path, what: str) -> CacheEntry:
    st = f.stat()
    return CacheEntry("unfinished", group, f, _disk_bytes(st), 1, st.st_mtime, f"partly written {what}")


def _features_entry(folder: Path) -> tuple[CacheEntry, list[CacheEntry]]:
    size, files, photos, newest, unfinished = 0, 0, 0, 0.0, []
    for f in folder.rglob("*"):
        if not f.is_file():
            continue
        if _is_temporary(f):
            unfinished.append(_unfinished("features", f, "feature file"))
            continue
        st = f.stat()
        size += _disk_bytes(st)
        files += 1
        photos += f.suffix == ".npy"
        newest = max(newest, st.st_mtime)
    about = "features"
    try:
        key = json.loads((folder / "key.json").read_text(encoding="utf-8"))
        prep = key.get("preprocessing") or {}
        shape = prep.get("crop") or prep.get("size")
        about = (f"{key.get('backbone')} features of {photos} photo(s)"
                 + (f" at {shape[0]}x{shape[1]}" if shape else "")
                 + f", {key.get('precision')} on {key.get('device')}")
        newest = _mtime(folder / "key.json", newest)
    except (OSError, ValueError, AttributeError, TypeError, IndexError):
        about = f"features of {photos} photo(s) (no readable key.json)"
    return CacheEntry("features", "features", folder, size, files, newest, about), unfinished


def _decoded_entry(data: Path) -> CacheEntry:

    meta = data.with_suffix(".json")
    parts = [p for p in (data, meta) if p.is_file()]
    size = sum(_disk_bytes(p.stat()) for p in parts)
    try:
        images = np.load(data, mmap_mode="r")  # reads the header only
        about = f"{images.shape[0]} decoded photo(s) at {images.shape[1]}x{images.shape[2]}"
        del images
    except (OSError, ValueError):
        about = "decoded photos (unreadable file: a run decodes again)"
    if not meta.is_file():
        about += " (no .json: unfinished, a run decodes again)"
    return CacheEntry("decoded", "decoded", data, size, len(parts), max(_mtime(meta), _mtime(data)), about)


def cache_entries(root: Path | None = None) -> list[CacheEntry]:
    """The cache's entries, largest first."""
    root = Path(root) if root is not None else cache_root()
    entries: list[CacheEntry] = []
    features = root / "features"
    if features.is_dir():
        for folder in sorted(p for p in features.iterdir() if p.is_dir()):
            entry, unfinished = _features_entry(folder)
            entries.append(entry)
            entries.extend(unfinished)
    decoded = root / "decoded"
    if decoded.is_dir():
        for f in sorted(p for p in decoded.iterdir() if p.is_file()):
            if _is_temporary(f):
                entries.append(_unfinished("decoded", f, "decoded photos"))
            elif f.suffix == ".npy":
                entries.append(_decoded_entry(f))
            elif f.suffix == ".json" and not f.with_suffix(".npy").exists():
                entries.append(CacheEntry("decoded", "decoded", f, _disk_bytes(f.stat()), 1, _mtime(f),
                                          "orphaned index (no photos)"))
    scans = root / "scan"
    if scans.is_dir():
        for f in sorted(p for p in scans.iterdir() if p.is_file()):
            if _is_temporary(f):
                entries.append(_unfinished("scan", f, "scan record"))
                continue
            st = f.stat()
            try:
                saved = json.loads(f.read_text(encoding="utf-8"))
                about = f"scan of {saved['root']}: {len(saved['files'])} file(s)"
            except (OSError, ValueError, KeyError, TypeError):
                about = "scan record (unreadable: the next scan reads every file)"
            entries.append(CacheEntry("scan", "scan", f, _disk_bytes(st), 1, st.st_mtime, about))
    return sorted(entries, key=lambda e: (-e.bytes, str(e.path)))


def clear_cache(kinds: tuple[str, ...] = KINDS, older_than_days: float | None = None, root: Path | None = None,
                dry_run: bool = False, now: float | None = None) -> tuple[list[CacheEntry], list[str]]:
    """Delete entries of `kinds` (last used more than `older_than_days` ago, if given).

    Returns (the entries removed — or that would be, with dry_run — and one message per entry
    that could not be removed). Unfinished temporary files go with their kind once a day old.
    """
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"Unknown cache kind(s) {sorted(unknown)}; known: {', '.join(KINDS)}.")
    now = time.time() if now is None else now
    removed, errors = [], []
    for e in cache_entries(root):
        if e.kind == "unfinished":
            if e.group not in kinds or now - e.last_used < max(UNFINISHED_AGE_S, (older_than_days or 0) * 86400):
                continue
        elif e.kind not in kinds or (older_than_days is not None and now - e.last_used < older_than_days * 86400):
            continue
        if not dry_run:
            try:
                if e.path.is_dir() and not e.path.is_symlink():
                    shutil.rmtree(e.path)
                elif e.path.is_symlink():  # a link in the cache goes; what it points to is never touched
                    e.path.unlink()
                else:
                    e.path.unlink(missing_ok=True)
                    if e.kind == "decoded" and e.path.suffix == ".npy":
                        e.path.with_suffix(".json").unlink(missing_ok=True)
            except OSError as exc:
                errors.append(f"Could not remove '{e.path}' ({exc.strerror or exc}); it may be in use by a "
                              "running job — try again when it has finished.")
                continue
        removed.append(e)
    return removed, errors


def human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"
