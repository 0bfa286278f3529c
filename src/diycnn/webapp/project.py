"""A web-app project: a folder of class folders (the layout `diycnn train` reads) plus the
app's own runs in the hidden `.diycnn/` folder inside it (the scanner ignores hidden folders),
so the CLI and the app share the photos and a project moves as one folder.

Every name that comes from a browser goes through `class_name()` / `photo_name()`: no path
separators, no `..`, no hidden or control characters; nothing is overwritten silently."""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
import unicodedata
from pathlib import Path
from typing import Any, TypeVar

from ..data.images import ImageError, load_rgb, probe
from ..data.scan import is_junk, name_key
from ..io import atomic_write_bytes, read_json
from ..records import Metrics, RunInfo, read_metrics, read_run_info

log = logging.getLogger(__name__)
RecordT = TypeVar("RecordT", RunInfo, Metrics)

APP_DIR = ".diycnn"
CLASS_ORDER = "classes.json"  # the order classes were made in (.diycnn/classes.json)
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_NAME = 64
RESERVED = {"train", "val", "validation", "test"}  # split-folder names (see data/scan.py)
EXTENSION = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "BMP": ".bmp", "WEBP": ".webp", "TIFF": ".tif"}


class ProjectError(ValueError):
    """A request the project refuses; the message says why and what to do. `status` is the HTTP code."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def read_document(path: Path) -> dict[str, Any] | None:
    """A run's JSON file as a dict, or None when it is missing, damaged, nested absurdly or not an
    object (a project folder may come from anyone: the app shows what it can and goes on)."""
    try:
        doc = read_json(path, "", "")
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict):
        log.warning("%s is not a JSON object; the run is left out", path)
        return None
    return doc


def read_record(run_dir: Path, kind: type[RecordT]) -> RecordT | None:
    """A run's model.json (`RunInfo`) or metrics.json (`Metrics`), checked, or None when it is
    missing or damaged (logged): the app shows what it can of a folder someone else made."""
    try:
        return read_run_info(run_dir) if kind is RunInfo else read_metrics(run_dir)  # type: ignore[return-value]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, RecursionError) as exc:
        log.warning("%s: %s; the run is left out", run_dir, exc)
        return None


def number(value: Any) -> float | None:
    """A finite number read from a project's JSON file, else None (booleans are not numbers)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


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
    if name.lower() in RESERVED:
        raise ProjectError(f"Class name {name!r} is reserved: a folder named train, val, validation or test marks "
                           "a split in a photo folder. Pick another name, e.g. 'train set' or 'trains'.")
    return name


def _nfc(name: str) -> str:
    return unicodedata.normalize("NFC", name)


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

    def app_folder(self, *parts: str, create: bool = False) -> Path:
        """A folder under `.diycnn/` (runs, trash...), checked step by step: each part must be a
        real folder inside the project, never a link or a file (a project made by someone else could
        link `.diycnn/trash` to ~/.config and turn a delete into a write there). With `create`,
        missing parts are made; without, the path is returned even if it does not exist yet.

        Raises:
            ProjectError (409): a part is a link or not a folder.
        """
        path = self.root
        for part in (APP_DIR, *parts):
            path = path / part
            if path.is_symlink():
                raise ProjectError(f"'{path.relative_to(self.root)}' in this project is a link; diycnn writes only into "
                                   "real folders inside the project. Remove the link and try again.", 409)
            if path.exists():
                if not path.is_dir():
                    raise ProjectError(f"'{path.relative_to(self.root)}' in this project is not a folder; move it "
                                       "away and try again.", 409)
            elif create:
                try:
                    path.mkdir()
                except OSError as exc:
                    raise ProjectError(f"Cannot create '{path.relative_to(self.root)}': {exc.strerror or exc}.",
                                       409) from None
        return path

    @property
    def runs_dir(self) -> Path:
        """`.diycnn/runs` (checked: a real folder inside the project, or not there yet)."""
        return self.app_folder("runs")

    # --- classes ---------------------------------------------------------------------------
    def classes(self) -> list[str]:
        """Every class folder on disk, as named there (odd names included: they can be fixed here),
        in the order they were made here, as Teachable Machine keeps them (a rename keeps the
        place); folders made outside the app follow, by name."""
        on_disk = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not is_junk(p.name))
        kept = [c for c in dict.fromkeys(self._class_order()) if c in on_disk]
        return kept + [c for c in on_disk if c not in kept]

    def _class_order(self) -> list[str]:
        try:
            doc = read_document(self.app_folder() / CLASS_ORDER)
        except ProjectError:  # .diycnn is a link or a file: by name, then
            return []
        order = doc.get("order") if isinstance(doc, dict) else None
        return [c for c in order if isinstance(c, str)] if isinstance(order, list) else []

    def _save_class_order(self, order: list[str]) -> None:
        """.diycnn/classes.json; the order is a convenience: failing to keep it never fails the edit."""
        try:
            folder = self.app_folder(create=True)
            atomic_write_bytes(folder / CLASS_ORDER, json.dumps({"order": order}, ensure_ascii=False).encode())
        except (ProjectError, OSError) as exc:
            log.warning("could not keep the class order: %s", exc)

    def _class_dir(self, name: Any) -> Path:
        """An existing class folder, found by its name as listed, or the same name in another
        Unicode form (NFC/NFD). Only listed folders can match: a name never becomes a path."""
        if not isinstance(name, str):
            raise ProjectError("A class name must be text.")
        listed = self.classes()
        match = name if name in listed else next((c for c in listed if _nfc(c) == _nfc(name)), None)
        if match is None:
            raise ProjectError(f"No class {name!r} in this project.", 404)
        return self.root / match

    def _new_class_dir(self, name: Any, replacing: Path | None = None) -> Path:
        path = self.root / class_name(name)
        clash = [c for c in self.classes() if name_key(c) == name_key(path.name)
                 and (replacing is None or c != replacing.name)]
        if clash:
            raise ProjectError(f"Class {clash[0]!r} already exists (names that differ only by letter case are the same "
                               "class); pick another name or delete it first.", 409)
        return path

    def warning(self, name: str) -> str | None:
        """Why a folder on disk is odd (the app would not create it so), or None."""
        path = self.root / name
        if path.is_symlink():
            return "a link to another folder: its photos are not shown or served; use a real folder"
        if _nfc(name) != name:
            return "name in decomposed Unicode (as macOS writes it); rename it to fix"
        try:
            class_name(name)
        except ProjectError as exc:
            return str(exc)
        return None

    def add_class(self, name: Any) -> str:
        path = self._new_class_dir(name)
        if path.exists() or path.is_symlink():  # a file, or a link (dangling or not) that classes() does not list
            raise ProjectError(f"{path.name!r} already exists in the project folder as a file or a link; pick "
                               "another name or remove it first.", 409)
        order = self.classes()
        try:
            path.mkdir()
        except OSError as exc:
            raise ProjectError(f"Cannot create class {path.name!r}: {exc.strerror or exc}.", 409) from None
        self._save_class_order([*order, path.name])
        return path.name

    def rename_class(self, old: Any, new: Any) -> str:
        src = self._class_dir(old)
        dst = self._new_class_dir(new, replacing=src)
        if src.is_symlink():
            raise ProjectError(f"Class {src.name!r} is a link to another folder; rename the link outside the app.", 409)
        order = self.classes()
        try:
            src.rename(dst)
        except OSError as exc:
            raise ProjectError(f"Cannot rename {src.name!r} to {dst.name!r}: {exc.strerror or exc}.", 409) from None
        self._save_class_order([dst.name if c == src.name else c for c in order])
        return dst.name

    def delete_class(self, name: Any) -> int:
        path = self._class_dir(name)
        if path.is_symlink():  # rmtree refuses links, and deleting through one would reach outside the project
            raise ProjectError(f"Class {path.name!r} is a link to a folder elsewhere; diycnn does not delete through "
                               "links. Remove the link itself in your file manager.", 409)
        count = len(self.photos(path.name))
        order = self.classes()
        try:
            shutil.rmtree(path)
        except OSError as exc:
            raise ProjectError(f"Cannot delete class {path.name!r}: {exc.strerror or exc}.", 409) from None
        self._save_class_order([c for c in order if c != path.name])
        return count

    # --- photos ----------------------------------------------------------------------------
    def _inside(self, folder: Path) -> Path | None:
        """The real folder, if it lies inside the project (a linked class folder elsewhere is not)."""
        real = folder.resolve()
        return real if real.is_relative_to(self.root) and real != self.root else None

    def photos(self, name: Any) -> list[str]:
        path = self._class_dir(name)
        real = self._inside(path)
        if real is None:
            return []
        return sorted(p.name for p in path.iterdir()
                      if not is_junk(p.name) and p.is_file() and p.resolve().parent == real)

    def photo_path(self, name: Any, photo: Any) -> Path:
        """A photo's real path: a file directly in the class folder, after resolving links (a link
        to a file anywhere else, or a class folder linked from elsewhere, is never served)."""
        folder = self._class_dir(name)
        safe = str(photo or "")
        if "/" in safe or "\\" in safe or "\0" in safe or safe in ("", ".", "..") or is_junk(safe):
            raise ProjectError(f"Bad photo name {photo!r}.")
        real_folder = self._inside(folder)
        path = (folder / safe).resolve()
        if real_folder is None or path.parent != real_folder or not path.is_file():
            raise ProjectError(f"No photo {photo!r} in class {folder.name!r}.", 404)
        return path

    def add_photo(self, name: Any, filename: Any, data: bytes) -> str:
        """Check the bytes are a real, sane image (by content, not by name; decoded in full, so a
        truncated file is refused) and save them under a new, unique, safe name with the
        extension of the actual format."""
        folder = self._class_dir(name)
        shown = photo_name(filename) if filename else "upload"
        if len(data) > MAX_UPLOAD_BYTES:
            raise ProjectError(f"{shown}: file too large ({len(data) / 1e6:.1f} MB; at most "
                               f"{MAX_UPLOAD_BYTES // (1024 * 1024)} MB per photo).", 413)
        try:
            fmt, _ = probe(data)
            load_rgb(data)  # every pixel: a truncated or corrupt body fails here, not at training time
        except ImageError as exc:
            raise ProjectError(f"{shown}: {exc.reason}. Upload a JPEG, PNG, GIF, BMP, WebP or TIFF photo.") from None
        candidate = self._free_name(folder, photo_name(filename), EXTENSION[fmt])
        atomic_write_bytes(candidate, data)
        return candidate.name

    def _free_name(self, folder: Path, stem: str, ext: str) -> Path:
        """folder/stem+ext, or stem-2+ext, stem-3+ext... whichever is free (links count as taken)."""
        name = f"{stem}{ext}"
        for i in range(1, 100_000):
            candidate = folder / (name if i == 1 else f"{stem}-{i}{ext}")
            if not candidate.exists() and not candidate.is_symlink():
                return candidate
        raise ProjectError(f"No free name for {name!r} in {folder.name!r}.", 409)

    def _move(self, path: Path, folder: Path) -> Path:
        """Move a photo into `folder` (an existing real folder inside the project) under a free name
        (a rename: the file is never copied or lost)."""
        if self._inside(folder) != folder.absolute() or folder.is_symlink():
            raise ProjectError(f"'{folder.name}' is not a real folder inside the project; nothing was moved.", 409)
        target = self._free_name(folder, path.stem, path.suffix)
        try:
            path.rename(target)
        except OSError as exc:
            raise ProjectError(f"Cannot move {path.name!r}: {exc.strerror or exc}.", 409) from None
        return target

    def delete_photo(self, name: Any, photo: Any) -> str:
        """Move a photo to the project's trash (`.diycnn/trash/<class>/`): deleted from the class,
        never destroyed. Returns where it went, relative to the project."""
        path = self.photo_path(name, photo)
        target = self._move(path, self.app_folder("trash", path.parent.name, create=True))
        return target.relative_to(self.root).as_posix()

    def move_photo(self, name: Any, photo: Any, to: Any) -> str:
        """Move a photo to another class folder (a free name there if it clashes). Returns its new name."""
        path = self.photo_path(name, photo)
        target_dir = self._class_dir(to)
        if self._inside(target_dir) is None:
            raise ProjectError(f"Class {target_dir.name!r} is a link to a folder elsewhere; diycnn does not move "
                               "photos through links.", 409)
        if target_dir.resolve() == path.parent:
            raise ProjectError(f"{path.name!r} is already in class {target_dir.name!r}.", 409)
        return self._move(path, target_dir).name

    def summary(self) -> list[dict[str, Any]]:
        out = []
        for c in self.classes():
            item: dict[str, Any] = {"name": c, "photos": self.photos(c)}
            warning = self.warning(c)
            if warning:
                item["warning"] = warning
            out.append(item)
        return out
