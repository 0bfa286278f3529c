"""A web-app project: a folder of class folders (the layout `diycnn train` reads) plus the
app's own runs in the hidden `.diycnn/` folder inside it (the scanner ignores hidden folders),
so the CLI and the app share the photos and a project moves as one folder.

Every name that comes from a browser goes through `class_name()` / `photo_name()`: no path
separators, no `..`, no hidden or control characters; nothing is overwritten silently."""

from __future__ import annotations

import re
import shutil
import unicodedata
from pathlib import Path
from typing import Any

from ..data.images import ImageError, probe
from ..data.scan import is_junk
from ..io import atomic_write_bytes

APP_DIR = ".diycnn"
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_NAME = 64
EXTENSION = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "BMP": ".bmp", "WEBP": ".webp", "TIFF": ".tif"}


class ProjectError(ValueError):
    """A request the project refuses; the message says why and what to do. `status` is the HTTP code."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def class_name(raw: Any) -> str:
    """A safe class (folder) name, or ProjectError saying what is wrong with it."""
    if not isinstance(raw, str):
        raise ProjectError("A class name must be text.")
    name = unicodedata.normalize("NFC", raw).strip()
    if not name:
        raise ProjectError("A class name cannot be empty.")
    if len(name) > MAX_NAME:
        raise ProjectError(f"Class name too long ({len(name)} characters; at most {MAX_NAME}).")
    bad = [c for c in name if c in '/\\:*?"<>|' or unicodedata.category(c).startswith("C")]
    if bad:
        raise ProjectError(f"Class name {name!r} contains {''.join(sorted(set(bad)))!r}; use letters, digits, "
                           "spaces, '-' or '_'.")
    if name in (".", "..") or is_junk(name):
        raise ProjectError(f"Class name {name!r} is reserved (hidden or system name); pick another.")
    return name


def photo_name(raw: Any) -> str:
    """The last component of an uploaded file name, made safe (never a path)."""
    name = unicodedata.normalize("NFC", str(raw or "")).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if not unicodedata.category(c).startswith("C") and c not in ':*?"<>|')
    name = re.sub(r"\s+", " ", name).strip(" .")
    stem = Path(name).stem[:MAX_NAME].strip(" .") or "photo"
    return stem if not is_junk(stem) else "photo"


class Project:
    """Class folders under `root`; runs under `root/.diycnn/runs`."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.runs_dir = self.root / APP_DIR / "runs"

    # --- classes ---------------------------------------------------------------------------
    def classes(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not is_junk(p.name))

    def _class_dir(self, name: Any, must_exist: bool = True) -> Path:
        path = self.root / class_name(name)
        if must_exist and not path.is_dir():
            raise ProjectError(f"No class {name!r} in this project.", 404)
        return path

    def add_class(self, name: Any) -> str:
        path = self._class_dir(name, must_exist=False)
        if path.exists() or any(c.casefold() == path.name.casefold() for c in self.classes()):
            raise ProjectError(f"Class {path.name!r} already exists.", 409)
        path.mkdir()
        return path.name

    def rename_class(self, old: Any, new: Any) -> str:
        src = self._class_dir(old)
        dst = self._class_dir(new, must_exist=False)
        if dst.exists() and dst != src:
            raise ProjectError(f"Class {dst.name!r} already exists; pick another name or delete it first.", 409)
        src.rename(dst)
        return dst.name

    def delete_class(self, name: Any) -> int:
        path = self._class_dir(name)
        count = len(self.photos(path.name))
        shutil.rmtree(path)
        return count

    # --- photos ----------------------------------------------------------------------------
    def photos(self, name: Any) -> list[str]:
        path = self._class_dir(name)
        return sorted(p.name for p in path.iterdir() if p.is_file() and not is_junk(p.name))

    def photo_path(self, name: Any, photo: Any) -> Path:
        folder = self._class_dir(name)
        safe = str(photo or "")
        if "/" in safe or "\\" in safe or safe in ("", ".", "..") or is_junk(safe):
            raise ProjectError(f"Bad photo name {photo!r}.")
        path = folder / safe
        if not path.is_file():
            raise ProjectError(f"No photo {photo!r} in class {folder.name!r}.", 404)
        return path

    def add_photo(self, name: Any, filename: Any, data: bytes) -> str:
        """Check the bytes are a real, sane image (by content, not by name) and save them
        under a new, unique, safe name with the extension of the actual format."""
        folder = self._class_dir(name)
        shown = photo_name(filename) if filename else "upload"
        if len(data) > MAX_UPLOAD_BYTES:
            raise ProjectError(f"{shown}: file too large ({len(data) / 1e6:.1f} MB; at most "
                               f"{MAX_UPLOAD_BYTES // (1024 * 1024)} MB per photo).", 413)
        try:
            fmt, _ = probe(data)
        except ImageError as exc:
            raise ProjectError(f"{shown}: {exc.reason}. Upload a JPEG, PNG, GIF, BMP, WebP or TIFF photo.") from None
        stem, ext = photo_name(filename), EXTENSION[fmt]
        for i in range(1, 100_000):
            candidate = folder / (f"{stem}{ext}" if i == 1 else f"{stem}-{i}{ext}")
            if not candidate.exists():
                break
        atomic_write_bytes(candidate, data)
        return candidate.name

    def delete_photo(self, name: Any, photo: Any) -> None:
        self.photo_path(name, photo).unlink()

    def summary(self) -> list[dict[str, Any]]:
        return [{"name": c, "photos": self.photos(c)} for c in self.classes()]
