"""Stratified, seeded train/val/test splits, saved as split.json and reusable across models."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from .scan import SPLIT_ORDER, ImageRecord, ScanResult

log = logging.getLogger(__name__)

SPLIT_FORMAT = "diycnn-split"
SPLIT_VERSION = 1


class Split:
    """Which photo (path relative to DATA) is in which split, by class."""

    def __init__(self, class_names: list[str], assignment: dict[str, dict[str, list[str]]],
                 sha256: dict[str, str], seed: int, val_split: float, test_split: float,
                 notes: list[str] | None = None):
        self.class_names = list(class_names)
        self.assignment = assignment
        self.sha256 = sha256
        self.seed = seed
        self.val_split = val_split
        self.test_split = test_split
        self.notes = list(notes or [])

    def paths(self, split: str) -> list[tuple[str, str]]:
        """[(rel_path, label)] of one split, in class then path order."""
        return [(p, c) for c in self.class_names for p in self.assignment[split].get(c, [])]

    def counts(self) -> dict[str, dict[str, int]]:
        return {s: {c: len(self.assignment[s].get(c, [])) for c in self.class_names} for s in SPLIT_ORDER}

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": SPLIT_FORMAT,
            "version": SPLIT_VERSION,
            "seed": self.seed,
            "val_split": self.val_split,
            "test_split": self.test_split,
            "class_names": self.class_names,
            "counts": self.counts(),
            "splits": self.assignment,
            "sha256": self.sha256,
            "notes": self.notes,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "split file") -> "Split":
        if not isinstance(data, dict) or data.get("format") != SPLIT_FORMAT:
            raise ValueError(f"'{where}' is not a diycnn split.json (its 'format' is not '{SPLIT_FORMAT}').")
        if data.get("version", 0) > SPLIT_VERSION:
            raise ValueError(f"'{where}' was written by a newer diycnn (split version {data['version']}); upgrade diycnn.")
        try:
            assignment = {s: {c: list(v) for c, v in data["splits"][s].items()} for s in SPLIT_ORDER}
            return cls(data["class_names"], assignment, dict(data.get("sha256", {})), int(data["seed"]),
                       float(data["val_split"]), float(data["test_split"]), data.get("notes", []))
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"'{where}' is missing or has a malformed field: {exc}.") from None


def make_split(scan: ScanResult, val_split: float = 0.15, test_split: float = 0.15, seed: int = 0,
               val_as_test: bool = False) -> Split:
    """Split the scanned photos, stratified by class and seeded.

    Class folders: each class is split val_split/test_split/rest. Split folders: given
    splits are kept; a missing (or, after de-duplication, empty) val or test split is
    carved from train with the same fractions, and a note says so.

    val_as_test: with split folders, use the given val folder as the test split (and carve
    val from train), the way published results on such datasets are usually measured.

    Raises:
        ValueError: a class has too few photos to give every split at least one.
    """
    by_split: dict[str, dict[str, list[str]]] = {s: {c: [] for c in scan.class_names} for s in SPLIT_ORDER}
    notes: list[str] = []
    rename = {"val": "test"} if val_as_test and scan.layout == "split-folders" else {}
    if rename:
        if any(r.given_split == "test" for r in scan.records):
            raise ValueError(f"'{scan.root}' has its own test folder; val_as_test is for train/val-only datasets.")
        notes.append("the given val folder is used as the test split")
    for r in scan.records:
        split = r.given_split or "train"
        by_split[rename.get(split, split)][r.label].append(r.rel)
    if scan.layout == "class-folders":
        carve = ["val", "test"]
    else:
        carve = [s for s in ("val", "test") if not any(by_split[s].values())]
        for s in carve:
            notes.append(f"no usable '{s}' split folder: {s} carved from train "
                         f"({val_split if s == 'val' else test_split:.0%} of each class, seed {seed})")
    fractions = {"val": val_split, "test": test_split}
    for ci, c in enumerate(scan.class_names):
        train = sorted(by_split["train"][c])
        needed = 1 + len(carve)
        if len(train) < needed:
            where = "" if scan.layout == "class-folders" else " in train/"
            raise ValueError(
                f"Class '{c}' has {len(train)} usable image(s){where}; at least {needed} are needed to give "
                f"train{', val' if 'val' in carve else ''}{', test' if 'test' in carve else ''} one each. "
                f"Add photos to '{c}' (20+ per class is a sensible minimum) or remove the class."
            )
        rng = np.random.default_rng([seed, ci])
        # Counts are fractions of the pool (the whole class, or the given train folder), rounded
        # half up, at least 1 each, always leaving at least 1 photo to train on.
        counts = {s: max(1, int(math.floor(len(train) * fractions[s] + 0.5))) for s in carve}
        while sum(counts.values()) > len(train) - 1:
            largest = max(counts, key=counts.get)
            counts[largest] -= 1
        order = rng.permutation(len(train))
        start = 0
        for s in carve:
            by_split[s][c] = sorted(train[i] for i in order[start:start + counts[s]])
            start += counts[s]
        train = sorted(train[i] for i in order[start:])
        by_split["train"][c] = train
    sha = {r.rel: r.sha256 for r in scan.records}
    for note in notes:
        log.info("%s", note)
    return Split(scan.class_names, by_split, sha, seed, val_split, test_split, notes)


def kfold_splits(scan: ScanResult, folds: int, val_split: float = 0.15, seed: int = 0) -> list[Split]:
    """Stratified K-fold: every photo is in the test split of exactly one fold; each fold's
    validation split is carved from the rest (`val_split` of each class, at least 1).

    Given split folders are pooled (a note says so): K-fold is for small datasets.

    Raises:
        ValueError: fewer than 2 folds, or a class too small to give every fold a test,
            a validation and a training photo.
    """
    if folds < 2:
        raise ValueError(f"--folds must be at least 2, received {folds}.")
    notes = ["given split folders were pooled for K-fold"] if scan.layout != "class-folders" else []
    pools = {c: sorted(r.rel for r in scan.records if r.label == c) for c in scan.class_names}
    for c, pool in pools.items():
        if len(pool) < folds + 2:
            raise ValueError(f"Class '{c}' has {len(pool)} photo(s); {folds}-fold needs at least {folds + 2} "
                             f"(one test photo per fold plus validation and training). Use fewer --folds.")
    orders = {c: [pool[i] for i in np.random.default_rng([seed, ci]).permutation(len(pool))]
              for ci, (c, pool) in enumerate(pools.items())}
    sha = {r.rel: r.sha256 for r in scan.records}
    out = []
    for f in range(folds):
        by_split: dict[str, dict[str, list[str]]] = {s: {} for s in SPLIT_ORDER}
        for c, order in orders.items():
            test = [p for i, p in enumerate(order) if i % folds == f]
            rest = [p for i, p in enumerate(order) if i % folds != f]
            n_val = min(max(1, int(math.floor(len(rest) * val_split + 0.5))), len(rest) - 1)
            by_split["test"][c], by_split["val"][c] = sorted(test), sorted(rest[:n_val])
            by_split["train"][c] = sorted(rest[n_val:])
        out.append(Split(scan.class_names, by_split, sha, seed, val_split, 1.0 / folds,
                         notes + [f"fold {f + 1} of {folds} (stratified, seed {seed})"]))
    return out


def check_split(split: Split, scan: ScanResult, where: str = "split file") -> None:
    """Check a reused split against the photos found now: same classes, files present and unchanged.

    Raises:
        ValueError: naming the mismatch and how to fix it.
    """
    if split.class_names != scan.class_names:
        raise ValueError(
            f"The {where} has classes {split.class_names} but the data folder has {scan.class_names}. "
            "Use the data folder the split was made from, or make a new split (omit --split)."
        )
    listed = [(s, p, c) for s in SPLIT_ORDER for p, c in split.paths(s)]
    _check_listing(listed, scan, where)
    found = {r.rel: r.sha256 for r in scan.records}
    missing = [p for _, p, _ in listed if p not in found]
    if missing:
        raise ValueError(
            f"The {where} lists {len(missing)} photo(s) that are missing or unusable in '{scan.root}', "
            f"e.g. {missing[:3]}. Use the same data folder, or make a new split (omit --split)."
        )
    changed = [p for p, h in split.sha256.items() if p in found and found[p] != h]
    if changed:
        raise ValueError(
            f"{len(changed)} photo(s) changed since the {where} was made, e.g. {changed[:3]}. "
            "Restore them or make a new split (omit --split)."
        )
    extra = len(found) - sum(len(v) for s in SPLIT_ORDER for v in split.assignment[s].values())
    if extra > 0:
        log.warning("%d photo(s) in the data folder are not in the %s and are not used", extra, where)


def _check_listing(listed: list[tuple[str, str, str]], scan: ScanResult, where: str) -> None:
    """A split someone else wrote must not leak, repeat or relabel photos: each photo once, in the
    class its folder says, and no byte-identical copies on two sides.

    Raises:
        ValueError: naming the photo(s) and the fix.
    """
    fix = "Make a new split (omit --split), or fix the file."
    first: dict[str, tuple[str, str]] = {}
    for split, path, label in listed:
        if path in first:
            was = first[path][0]
            what = f"twice in the {split} split" if was == split else f"in both the {was} and the {split} split"
            raise ValueError(f"The {where} lists '{path}' {what}; every photo may appear once. {fix}")
        first[path] = (split, label)
    by_rel = {r.rel: r for r in scan.records}
    for split, path, label in listed:
        record = by_rel.get(path)
        if record is not None and record.label != label:
            raise ValueError(f"The {where} lists '{path}' as class '{label}' in the {split} split, but it is in "
                             f"the folder of class '{record.label}'. {fix}")
        # Given split folders: train photos may be carved into val/test, val/ may serve as the test
        # split (--val-as-test), but an evaluation photo never moves to an earlier split (a leak).
        if record is not None and record.given_split and SPLIT_ORDER.index(split) < SPLIT_ORDER.index(record.given_split):
            raise ValueError(f"The {where} puts '{path}' in the {split} split, but it is in the data folder's "
                             f"{record.given_split} folder. {fix}")
    copies = {d.path: d.reason for d in scan.duplicates}
    for split, path, _ in listed:
        if path in copies:
            raise ValueError(f"The {where} lists '{path}' ({split} split), which the scan left out: {copies[path]}. {fix}")
    by_hash: dict[str, tuple[str, str]] = {}
    for split, path, _ in listed:
        record = by_rel.get(path)
        if record is None:
            continue
        other = by_hash.setdefault(record.sha256, (split, path))
        if other[1] != path:
            raise ValueError(f"The {where} lists byte-identical photos '{other[1]}' ({other[0]}) and '{path}' "
                             f"({split}); a photo may not be on two sides, nor counted twice. {fix}")


def read_split(path: str | Path) -> Split:
    """Load a split.json.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a diycnn split file.
    """
    from ..io import read_json

    data = read_json(path, f"Split file '{path}' does not exist. Pass a split.json written by an earlier run.",
                     "pass a split.json written by diycnn.")
    return Split.from_dict(data, where=str(path))


def records_for(split: Split, scan: ScanResult, name: str) -> list[ImageRecord]:
    """The ImageRecords of one split, in the split's order."""
    by_rel = {r.rel: r for r in scan.records}
    return [by_rel[p] for p, _ in split.paths(name)]
