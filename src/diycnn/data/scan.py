"""Find the photos in a data folder: layout, classes, problems, duplicates and leaks.

Two layouts are understood:

* ``DATA/<class>/*`` -- diycnn makes the split;
* ``DATA/{train,val|validation,test}/<class>/*`` -- the given splits are used. This layout is
  taken only when *every* top-level folder is a split name, so a class that happens to be
  called ``train`` or ``test`` beside other classes is a class; the chosen layout is logged.

Scanning reads each file once (content hash + image header); it never crashes on a bad
file: the file is skipped and the reason recorded. What it learnt is kept in the cache folder
(`DIYCNN_CACHE/scan/`, never next to the photos), so a later scan of the same folder reads
only the files that are new or changed (size, modification time, change time or inode).
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import logging
import os
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import __version__ as PILLOW_VERSION

from ..io import atomic_write_json, cache_root
from . import neardup
from .images import ImageError, probe

log = logging.getLogger(__name__)

SPLIT_NAMES = {"train": "train", "val": "val", "validation": "val", "test": "test"}
SPLIT_ORDER = ("train", "val", "test")
JUNK_NAMES = {"thumbs.db", "desktop.ini", "__macosx", ".ds_store", "icon\r"}


@dataclasses.dataclass
class ImageRecord:
    """One usable photo: where it is, its class, and its content hash."""

    path: Path  # absolute
    rel: str  # relative to the data folder, '/'-separated
    label: str
    sha256: str
    given_split: str | None = None  # 'train'/'val'/'test' for the split-folder layout


@dataclasses.dataclass
class Problem:
    """A file left out, and why (stored in metrics.json)."""

    path: str
    reason: str

    def to_dict(self) -> dict:
        return {"path": self.path, "reason": self.reason}


@dataclasses.dataclass
class NearDuplicate:
    """Two photos that look like one shot (see data/neardup.py): in one class, or a label conflict."""

    a: str  # relative paths, a < b
    b: str
    score: float
    hamming: int
    kind: str  # 'within-class' or 'label-conflict'
    classes: tuple[str, str] = ("", "")  # of a and b

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class ScanResult:
    root: Path
    layout: str  # 'class-folders' or 'split-folders'
    class_names: list[str]
    records: list[ImageRecord]
    skipped: list[Problem]
    duplicates: list[Problem]
    notes: list[str]
    near: list[NearDuplicate] = dataclasses.field(default_factory=list)
    near_checked: bool = False  # near-duplicate detection ran (it can be turned off)
    signatures: object = None  # neardup.Signatures of `signature_rels`, kept for the run directory
    signature_rels: list[str] = dataclasses.field(default_factory=list)

    def count_by_class(self) -> dict[str, int]:
        counts = {c: 0 for c in self.class_names}
        for r in self.records:
            counts[r.label] += 1
        return counts


def is_junk(name: str) -> bool:
    """Hidden files and operating-system clutter, ignored silently."""
    return name.startswith(".") or name.lower() in JUNK_NAMES or name.startswith("._")


def _subdirs(folder: Path) -> list[Path]:
    try:
        entries = sorted(folder.iterdir(), key=lambda p: p.name)
    except OSError as exc:
        raise FileNotFoundError(f"Cannot list folder '{folder}': {exc.strerror or exc}.") from None
    return [p for p in entries if p.is_dir() and not is_junk(p.name)]


def _walk_files(folder: Path, skipped: list[Problem], root: Path) -> list[Path]:
    """All non-junk files under `folder`, sorted; symlinked folders are not followed (no loops)."""
    found: list[Path] = []

    def on_error(exc: OSError) -> None:
        skipped.append(Problem(_rel(Path(exc.filename), root), f"cannot list folder ({exc.strerror or exc})"))

    for dirpath, dirnames, filenames in os.walk(folder, onerror=on_error, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not is_junk(d))
        base = Path(dirpath)
        for name in sorted(filenames):
            if is_junk(name):
                continue
            path = base / name
            if path.is_symlink() and not path.exists():
                skipped.append(Problem(_rel(path, root), "broken or looping symbolic link"))
                continue
            if not path.is_file():
                skipped.append(Problem(_rel(path, root), "not a regular file"))
                continue
            found.append(path)
    return found


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _inspect(path: Path) -> tuple[str | None, str | None, bool]:
    """(sha256, None, True) for a usable image, or (None, reason, whether the reason lasts
    until the file changes: a broken image does, a read error may not)."""
    try:
        probe(path)
        with open(path, "rb") as fh:
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
        return digest, None, True
    except ImageError as exc:
        return None, exc.reason, True
    except OSError as exc:
        return None, f"cannot read file ({exc.strerror or exc})", False


SCAN_CACHE_VERSION = 1


class _ScanCache:
    """Per file of one data folder: its stat signature and what scanning it found.

    A file whose size, mtime, ctime (which no tool can set back) and inode are unchanged is
    not read again (a record written under another Pillow version is not used). Stored as one JSON file per folder under DIYCNN_CACHE/scan/, rewritten
    atomically (only the files present now) when anything changed; a missing, damaged or
    read-only cache just means reading the files.
    """

    def __init__(self, root: Path):
        self.root, self.pillow = str(root), PILLOW_VERSION  # another Pillow may read files this one could not
        self.path = cache_root() / "scan" / f"{hashlib.sha256(self.root.encode()).hexdigest()[:24]}.json"
        self.old: dict[str, list] = {}
        self.new: dict[str, list] = {}
        self.hits = 0
        try:
            saved = json.loads(self.path.read_text(encoding="utf-8"))
            if (saved.get("version"), saved.get("root"), saved.get("pillow")) == (SCAN_CACHE_VERSION, self.root,
                                                                                  self.pillow):
                self.old = {k: v for k, v in saved["files"].items() if isinstance(v, list) and len(v) == 6}
        except (OSError, ValueError, KeyError, AttributeError, TypeError):
            pass

    @staticmethod
    def _signature(st: os.stat_result) -> list[int]:
        return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]

    def inspect(self, path: Path, rel: str) -> tuple[str | None, str | None]:
        try:
            st = path.stat()
        except OSError as exc:
            return None, f"cannot read file ({exc.strerror or exc})"
        sig = self._signature(st)
        saved = self.old.get(rel)
        if saved is not None and saved[:4] == sig:
            self.new[rel] = saved
            self.hits += 1
            return saved[4], saved[5]
        digest, reason, lasting = _inspect(path)
        if lasting:
            self.new[rel] = sig + [digest, reason]
        return digest, reason

    def save(self) -> None:
        if self.new == self.old:
            return

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.path, {"version": SCAN_CACHE_VERSION, "root": self.root, "pillow": self.pillow,
                                          "files": self.new})
        except OSError as exc:
            log.info("Could not write the scan cache %s (%s); the next scan reads every file again", self.path, exc)


def name_key(name: str) -> str:
    """How class names are compared: Unicode NFC (macOS writes 'été' decomposed, NFD) and case-folded."""
    return unicodedata.normalize("NFC", name).casefold()


def _check_class_names(names: list[str], where: Path) -> None:
    seen: dict[str, str] = {}
    for name in names:
        other = seen.setdefault(name_key(name), name)
        if other != name:
            how = ("differ only by letter case" if unicodedata.normalize("NFC", other) != unicodedata.normalize("NFC", name)
                   else "are the same name written in two Unicode forms (composed and decomposed, as macOS writes it)")
            raise ValueError(
                f"Class folders {other!r} and {name!r} in '{where}' {how}, which is "
                "ambiguous (and merges on Windows and macOS). Rename or merge one of them."
            )


def _dedupe(records: list[ImageRecord], duplicates: list[Problem]) -> list[ImageRecord]:
    """Keep one copy of each content hash.

    Same hash in two classes: a label conflict, every copy left out. Otherwise the copy
    in the earliest split (train < val < test) is kept, so no photo sits on both the
    training and the evaluation side.
    """
    groups: dict[str, list[ImageRecord]] = {}
    for r in records:
        groups.setdefault(r.sha256, []).append(r)
    rank = {s: i for i, s in enumerate(SPLIT_ORDER)}
    keep_ids: set[int] = set()
    for group in groups.values():
        if len(group) == 1:
            keep_ids.add(id(group[0]))
            continue
        labels = sorted({r.label for r in group})
        if len(labels) > 1:
            paths = ", ".join(r.rel for r in group)
            for r in group:
                duplicates.append(Problem(r.rel, f"label conflict: the same image is in classes {labels} ({paths}); left out"))
            continue
        group.sort(key=lambda r: (rank.get(r.given_split or "train", 0), r.rel))
        first = group[0]
        keep_ids.add(id(first))
        for r in group[1:]:
            if r.given_split and r.given_split != first.given_split:
                reason = (f"leak: byte-identical copy of {first.rel} ({first.given_split}); "
                          f"removed from the {r.given_split} split")
            else:
                reason = f"duplicate: byte-identical copy of {first.rel}; collapsed"
            duplicates.append(Problem(r.rel, reason))
    return [r for r in records if id(r) in keep_ids]


def _find_near(result: ScanResult, cache: bool) -> None:
    """Near-duplicate pairs among the usable photos (records order), recorded on `result`."""

    records = result.records
    store = neardup.SignatureCache(result.root) if cache else None
    shas = [r.sha256 for r in records]
    sig = neardup.compute_signatures([r.path for r in records], shas, store)
    pairs = neardup.find_near_duplicates_cached(sig, shas, store)
    if store is not None:
        store.save(set(shas))
    for p in pairs:
        a, b = sorted((records[p.a], records[p.b]), key=lambda r: r.rel)
        kind = "within-class" if a.label == b.label else "label-conflict"
        result.near.append(NearDuplicate(a.rel, b.rel, p.score, p.hamming, kind, (a.label, b.label)))
    result.near.sort(key=lambda n: (n.a, n.b))
    result.near_checked = True
    result.signatures, result.signature_rels = sig, [r.rel for r in records]
    conflicts = sum(n.kind == "label-conflict" for n in result.near)
    if result.near:
        log.info("Near-duplicates in %s: %d pair(s) within a class, %d across classes (likely label conflicts)",
                 result.root, len(result.near) - conflicts, conflicts)


def check_data_folder(data: str | Path) -> Path:
    """The resolved DATA folder; FileNotFoundError (saying what to pass) when it is missing or a file.
    Cheap, so the CLI calls it before loading PyTorch."""
    root = Path(data).expanduser()
    if not root.exists():
        raise FileNotFoundError(
            f"Data folder '{data}' does not exist. Pass a folder with one sub-folder of photos per class, "
            "e.g. photos/iu/*.jpg and photos/suzy/*.jpg."
        )
    if not root.is_dir():
        raise FileNotFoundError(f"'{data}' is a file, not a folder. Pass the folder that holds one sub-folder per class.")
    return root.resolve()


def scan_folder(data: str | Path, workers: int | None = None, min_classes: int = 2, cache: bool = True,
                near_duplicates: bool = True) -> ScanResult:
    """Scan a photo folder.

    Args:
        data: `DATA/<class>/*` or `DATA/{train,val,test}/<class>/*`.
        workers: threads for hashing and header checks (default: CPU count).
        min_classes: fewest class folders accepted (2 for training; 1 to evaluate one class).
        cache: reuse the last scan's hashes and checks for unchanged files (see the module doc).
        near_duplicates: also find near-identical photos (resized, re-encoded, slightly cropped;
            see data/neardup.py) -- grouped by the split, left out of evaluation across splits.

    Returns:
        ScanResult with usable records (duplicates removed), skipped files and notes.

    Raises:
        FileNotFoundError: DATA is missing or not a folder.
        ValueError: fewer than 2 classes, no images, empty classes, or ambiguous class names.

    Example:
        >>> scan_folder("photos").class_names
        ['iu', 'suzy']
    """
    root = check_data_folder(data)
    skipped: list[Problem] = []
    notes: list[str] = []
    layout, class_names, sources = _layout(root, notes)
    log.info("Layout of %s: %s (%d classes)", root, layout, len(class_names))
    _check_enough_classes(root, layout, class_names, min_classes)
    for entry in sorted(os.listdir(root)):
        if not is_junk(entry) and (root / entry).is_file():
            skipped.append(Problem(entry, "not inside a class folder"))
    candidates = _candidates(root, sources, skipped, notes)
    results = _inspect_all(root, [path for _, _, path in candidates], workers, cache)
    records: list[ImageRecord] = []
    for (split, label, path), (digest, reason) in zip(candidates, results):
        rel = _rel(path, root)
        if reason is not None:
            skipped.append(Problem(rel, reason))
        else:
            records.append(ImageRecord(path=path, rel=rel, label=label, sha256=digest, given_split=split))
    if not records:
        raise ValueError(
            f"None of the {len(candidates)} files in '{root}' is a usable image "
            f"(first problem: {skipped[0].path}: {skipped[0].reason})."
        )
    duplicates: list[Problem] = []
    records = _dedupe(records, duplicates)
    result = ScanResult(root, layout, class_names, records, skipped, duplicates, notes)
    for name, count in result.count_by_class().items():
        if count == 0:
            raise ValueError(
                f"Class '{name}' in '{root}' has no usable images. Add photos to its folder or remove the folder."
            )
    if near_duplicates:
        _find_near(result, cache)
    if skipped:
        log.warning("Skipped %d file(s) in %s (see metrics.json for reasons)", len(skipped), root)
    if duplicates:
        log.warning("Left out %d duplicate or conflicting file(s) in %s", len(duplicates), root)
    return result


Source = tuple[str | None, Path, str]  # (given split or None, folder, class name)


def _layout(root: Path, notes: list[str]) -> tuple[str, list[str], list[Source]]:
    """The folder's layout ("class-folders" or "split-folders"), its class names, and the folders
    to read with their split and class.

    Raises:
        ValueError: split folders without 'train', a class missing from train, ambiguous names.
    """
    top = _subdirs(root)
    split_dirs = {SPLIT_NAMES[p.name.lower()]: p for p in top if p.name.lower() in SPLIT_NAMES}
    others = [p.name for p in top if p.name.lower() not in SPLIT_NAMES]
    if split_dirs and others:  # a class named 'train' or 'test' beside other classes is a class
        notes.append(f"folders {sorted(p.name for p in split_dirs.values())} are read as classes, because "
                     f"'{root}' also holds other folders {others} (split folders are used only when every "
                     "folder is train/val/validation/test)")
        split_dirs = {}
    if not split_dirs:
        class_names = [p.name for p in top]
        _check_class_names(class_names, root)
        return "class-folders", class_names, [(None, root / c, c) for c in class_names]
    if "train" not in split_dirs:
        raise ValueError(
            f"'{root}' has {sorted(p.name for p in split_dirs.values())} but no 'train' folder. "
            "Add DATA/train/<class>/..., or use one folder per class without split folders."
        )
    class_names = [p.name for p in _subdirs(split_dirs["train"])]
    _check_class_names(class_names, split_dirs["train"])
    by_key = {name_key(c): c for c in class_names}
    sources: list[Source] = []
    for split, folder in split_dirs.items():
        subs = _subdirs(folder)
        _check_class_names([p.name for p in subs], folder)
        for sub in subs:
            if name_key(sub.name) not in by_key:
                raise ValueError(
                    f"Class '{sub.name}' in '{folder}' has no folder in '{split_dirs['train']}'. "
                    "Every class needs training photos; add them or remove the folder."
                )
            # the same class may be spelt in another Unicode form in another split folder
            sources.append((split, sub, by_key[name_key(sub.name)]))
    return "split-folders", class_names, sources


def _check_enough_classes(root: Path, layout: str, class_names: list[str], min_classes: int) -> None:
    """Raise ValueError when there are too few classes, pointing at the right folder where it can."""
    if len(class_names) >= min_classes:
        return
    hint = ""
    if len(class_names) == 1 and layout == "class-folders":
        inner = [p.name for p in _subdirs(root / class_names[0])]
        if len(inner) >= min_classes:  # DATA/antbee/{ants,bees}: one level too high
            hint = (f" '{class_names[0]}' itself holds folders {inner[:5]}: if those are your classes, "
                    f"pass '{root / class_names[0]}' instead.")
    raise ValueError(
        f"Found {len(class_names)} class folder(s) in '{root}' {class_names}; at least {min_classes} are needed."
        f"{hint} Put each class's photos in its own sub-folder, e.g. photos/iu/ and photos/suzy/."
    )


def _candidates(root: Path, sources: list[Source], skipped: list[Problem],
                notes: list[str]) -> list[tuple[str | None, str, Path]]:
    """Every file in the class folders, as (given split, class, path); photos in a class's
    sub-folders belong to the class, and a note says so."""
    candidates: list[tuple[str | None, str, Path]] = []
    nested: dict[str, set[str]] = {}
    for split, folder, label in sources:
        for path in _walk_files(folder, skipped, root):
            candidates.append((split, label, path))
            if path.parent != folder:
                nested.setdefault(label, set()).add(path.relative_to(folder).parts[0])
    for label, subs in sorted(nested.items()):
        notes.append(f"class '{label}' includes the photos in its sub-folder(s) {sorted(subs)[:5]}; "
                     "if a sub-folder is a class of its own, move it beside the other class folders")
    if not candidates:
        raise ValueError(
            f"No files found in the class folders of '{root}'. Add photos (JPEG, PNG, GIF, BMP, WebP or TIFF)."
        )
    return candidates


def _inspect_all(root: Path, paths: list[Path], workers: int | None,
                 cache: bool) -> list[tuple[str | None, str | None]]:
    """(content hash, problem) of each file, in threads; unchanged files' answers come from the
    last scan's record when `cache` (see the module doc)."""
    known = _ScanCache(root) if cache else None

    def inspect(path: Path) -> tuple[str | None, str | None]:
        return known.inspect(path, _rel(path, root)) if known is not None else _inspect(path)[:2]

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 2) as pool:
        results = list(pool.map(inspect, paths))
    if known is not None:
        known.save()
        if known.hits:
            log.info("Scan of %s: %d of %d file(s) unchanged since the last scan, not read again",
                     root, known.hits, len(paths))
    return results


def find_images(paths: list[str | Path]) -> tuple[list[Path], list[Problem]]:
    """Expand files, folders (recursively) and glob patterns into a list of files to predict.

    Returns (files, problems) where problems are inputs that matched nothing.
    """

    files: list[Path] = []
    problems: list[Problem] = []
    for given in paths:
        given = str(given)
        p = Path(given).expanduser()
        if p.is_dir():
            found = _walk_files(p, problems, p)
            if not found:
                problems.append(Problem(given, "folder holds no files"))
            files.extend(found)
        elif p.is_file():
            files.append(p)
        elif any(ch in given for ch in "*?["):
            matches = sorted(glob.glob(given, recursive=True))
            matched = [Path(m) for m in matches if Path(m).is_file() and not is_junk(Path(m).name)]
            if not matched:
                problems.append(Problem(given, "pattern matched no files"))
            files.extend(matched)
        else:
            problems.append(Problem(given, "no such file or folder"))
    return files, problems
