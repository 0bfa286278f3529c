"""Atomic file writes and safe reads: a file is either the old version or the new one, never half."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open


def cache_root() -> Path:
    """diycnn's cache folder: DIYCNN_CACHE, default ~/.cache/diycnn (never next to a user's photos)."""
    return Path(os.environ.get("DIYCNN_CACHE") or Path.home() / ".cache" / "diycnn")


def shown(value: Any, limit: int = 80, quote: bool = True) -> str:
    """`value` as quoted in an error or printed to a terminal: repr (or str) cut to `limit`
    characters, so a hostile file cannot make a message huge. repr escapes control characters."""
    try:
        text = repr(value) if quote else str(value)
    except (ValueError, RecursionError, MemoryError):
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def plain(value: Any) -> str:
    """A value as a person reads it, never a Python repr: numbers to 4 significant figures
    (19.999999780683357 -> '20'), mappings as 'key value, key value', sequences comma-separated."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {plain(v)}" for k, v in value.items()) or "none"
    if isinstance(value, (list, tuple)):
        return ", ".join(plain(v) for v in value) or "none"
    return str(value)


def _key_path() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "diycnn" / "cache.key"


_KEY: bytes | None = None


def user_key() -> bytes:
    """This user's secret for signing cache entries (32 random bytes, made once, mode 0600, kept in
    ~/.config/diycnn, outside every cache and project). A cache folder someone else filled cannot
    carry valid signatures. Where it cannot be stored, a key for this process only."""
    global _KEY
    if _KEY is None:
        path = _key_path()
        try:
            key = path.read_bytes() if path.is_file() and not path.is_symlink() else b""
            if len(key) != 32:
                path.parent.mkdir(parents=True, exist_ok=True)
                fresh = os.urandom(32)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(fresh)
                key = fresh
        except OSError:
            key = os.urandom(32)
        _KEY = key
    return _KEY


def sign(*parts: bytes | str) -> str:
    """HMAC-SHA256 of `parts` under `user_key()`, as hex (parts are length-prefixed: unambiguous)."""

    mac = hmac.new(user_key(), digestmod="sha256")
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        mac.update(len(data).to_bytes(8, "big") + data)
    return mac.hexdigest()


def signed(signature: str | bytes, *parts: bytes | str) -> bool:
    """Whether `signature` is `sign(*parts)` (constant-time comparison)."""

    if isinstance(signature, bytes):
        signature = signature.decode("ascii", "replace")
    return hmac.compare_digest(signature.strip(), sign(*parts))


def _json_default(value: Any):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    if callable(getattr(value, "to_dict", None)):  # a run's records (records.py) and other typed values
        return value.to_dict()
    raise TypeError(f"Cannot write {type(value).__name__} to JSON")


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: os.umask can only be read by setting it, which would briefly change it
# for every thread of the process if done on each write.
_UMASK = _read_umask()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over `path`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; a run's files are ordinary files
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise OSError(exc.errno, f"No space left on device while writing '{path}'; its previous version (if any) "
                                     "is intact. Free some space; an interrupted training run continues with: "
                                     "diycnn train --resume RUN_FOLDER") from None
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=_json_default, ensure_ascii=False) + "\n")


def read_json(path: str | Path, missing: str, damaged: str) -> Any:
    """Parse a JSON file.

    Raises:
        FileNotFoundError: no such file (message: `missing`).
        ValueError: not valid JSON (message: the file, the parser's reason, then `damaged`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(missing)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an integer of thousands of digits
        raise ValueError(f"'{path}' is not valid JSON ({shown(str(exc), 200, quote=False)}); {damaged}") from None
    except RecursionError:  # e.g. [[[[...]]]] thousands deep: Python's parser recurses
        raise ValueError(f"'{path}' is nested too deeply to be a diycnn file; {damaged}") from None


def check_format(info: Any, path: Path, fmt: str, version_key: str, max_version: int, newer: str) -> None:
    """A diycnn JSON document has the expected 'format' and a version this diycnn can read.

    Raises:
        ValueError: another kind of file, or written by a newer diycnn (`newer` says what to do).
    """
    if not isinstance(info, dict) or info.get("format") != fmt:
        raise ValueError(f"'{path}' is not a diycnn {path.name} (its 'format' is not '{fmt}').")
    if int(info.get(version_key, 0)) > max_version:
        raise ValueError(f"'{path}' was written by a newer diycnn ({version_key} {info[version_key]}, this diycnn "
                         f"reads up to {max_version}). {newer}")


def to_jsonable(data: Any) -> Any:
    return json.loads(json.dumps(data, default=_json_default))


def atomic_save_tensors(path: str | Path, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """safetensors file written atomically (weights are never pickled)."""
    from safetensors.torch import save  # noqa: PLC0415 (lazy: loads torch)

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write_bytes(path, save(tensors, metadata=metadata))


def _read_safetensors(path: str | Path, read):
    """Open a safetensors file and return `read(handle)`; anything else (a pickle, a damaged
    header) is refused with one message naming the file."""

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Weights file '{path}' does not exist.")
    try:
        with safe_open(str(path), framework="pt") as fh:
            return read(fh)
    except Exception as exc:  # safetensors raises its own error types for malformed headers
        raise ValueError(
            f"'{path}' is not a valid safetensors file ({type(exc).__name__}: {exc}). diycnn only loads "
            "safetensors weights and never unpickles files; re-create the run or restore the file."
        ) from None


def tensor_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """The name and shape of every tensor in a safetensors file, from its header alone (no tensor
    is read, so a hostile file cannot make this allocate).

    Raises:
        FileNotFoundError: missing file.
        ValueError: not a safetensors file.
    """
    return _read_safetensors(path, lambda fh: {key: tuple(fh.get_slice(key).get_shape()) for key in fh.keys()})


def load_tensors(path: str | Path) -> tuple[dict, dict[str, str]]:
    """Read a safetensors file: (tensors, metadata). Refuses anything else (pickles included).

    Raises:
        FileNotFoundError: missing file.
        ValueError: not a safetensors file.
    """
    return _read_safetensors(path, lambda fh: ({key: fh.get_tensor(key) for key in fh.keys()}, fh.metadata() or {}))


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MB blocks."""

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def publish_dir(tmp: Path, dest: Path) -> None:
    """Put a folder built in `tmp` (beside `dest`) in place: readable by all (mkdtemp's 0700 would hide a
    shared cache from other users), replacing `dest`, so the folder appears whole or not at all."""

    os.chmod(tmp, 0o755)
    if dest.exists():
        shutil.rmtree(dest)
    tmp.replace(dest)

