"""Stratified, seeded train/val/test splits, saved as split.json and reusable across models."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..io import read_json, shown
from ..settings import DEFAULT_TEST_SPLIT, DEFAULT_VAL_SPLIT
from .neardup import groups, thresholds
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
        version = data.get("version", 0)
        if not isinstance(version, int) or isinstance(version, bool):
            raise ValueError(f"'{where}' has version {shown(version)}, not a whole number; pass a split.json written "
                             "by diycnn.")
        if version > SPLIT_VERSION:
            raise ValueError(f"'{where}' was written by a newer diycnn (split version {version}); upgrade diycnn.")
        try:
            names = data["class_names"]
            if not isinstance(names, list) or not all(isinstance(c, str) for c in names):
                raise TypeError(f"class_names is {shown(names)}, not a list of names")
            assignment = {s: {c: _names(v, f"splits.{s}.{c}") for c, v in _mapping(data["splits"][s], s).items()}
                          for s in SPLIT_ORDER}
            hashes = _mapping(data.get("sha256", {}), "sha256")
            if not all(isinstance(v, str) for v in hashes.values()):
                raise TypeError("sha256 values must be text")
            notes = data.get("notes", [])
            if not isinstance(notes, list):
                raise TypeError(f"notes is {shown(notes)}, not a list")
            return cls(list(names), assignment, dict(hashes), int(data["seed"]), float(data["val_split"]),
                       float(data["test_split"]), [str(n) for n in notes])
        except (KeyError, TypeError, AttributeError, ValueError, OverflowError) as exc:
            raise ValueError(f"'{where}' is missing or has a malformed field: {shown(str(exc), 200, quote=False)}. "
                             "Pass a split.json written by diycnn.") from None


def _mapping(value: Any, what: str) -> dict:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise TypeError(f"{what} is {shown(value)}, not a mapping of names")
    return value


def _names(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{what} is {shown(value)}, not a list of photo paths")
    return list(value)


def make_split(scan: ScanResult, val_split: float = DEFAULT_VAL_SPLIT, test_split: float = DEFAULT_TEST_SPLIT, seed: int = 0,
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
        taken, by_split["train"][c] = _carve_class(scan, c, sorted(by_split["train"][c]),
                                                   {s: fractions[s] for s in carve}, [seed, ci], notes)
        by_split.update({s: {**by_split[s], c: taken[s]} for s in carve})
    sha = {r.rel: r.sha256 for r in scan.records}
    for note in notes:
        log.info("%s", note)
    return Split(scan.class_names, by_split, sha, seed, val_split, test_split, notes)


def _carve_class(scan: ScanResult, c: str, train: list[str], fractions: dict[str, float], seed: list[int],
                 notes: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    """Carve class `c`'s `fractions` (val and/or test) out of its `train` photos, seeded: what each
    split takes, and what is left to train on.

    Raises:
        ValueError: too few photos to give every split at least one.
    """
    needed = 1 + len(fractions)
    if len(train) < needed:
        where = "" if scan.layout == "class-folders" else " in train/"
        raise ValueError(
            f"Class '{c}' has {len(train)} usable image(s){where}; at least {needed} are needed to give "
            f"train{', val' if 'val' in fractions else ''}{', test' if 'test' in fractions else ''} one each. "
            f"Add photos to '{c}' (20+ per class is a sensible minimum) or remove the class."
        )
    # Counts are fractions of the pool (the whole class, or the given train folder), rounded
    # half up, at least 1 each, always leaving at least 1 photo to train on.
    counts = {s: max(1, int(math.floor(len(train) * f + 0.5))) for s, f in fractions.items()}
    while sum(counts.values()) > len(train) - 1:
        largest = max(counts, key=lambda s: counts[s])
        counts[largest] -= 1
    # Near-duplicates move together: the permutation is of groups (each photo its own group
    # when there are none, which gives exactly the plain photo split).
    units = near_groups(train, scan)
    taken, order = _carve(units, counts, seed)
    if any(not taken[s] for s in counts):  # groups too big to leave every split a photo: photo by photo
        notes.append(f"class '{c}': its near-duplicate groups are too large to keep on one side of the split; "
                     "split photo by photo (its evaluation photos may be copies of training photos)")
        units = [[p] for p in train]
        taken, order = _carve(units, counts, seed)
    if any(len(u) > 1 for u in units):  # (after a fallback every group is one photo)
        grouped = sum(len(u) for u in units if len(u) > 1)
        notes.append(f"class '{c}': {grouped} near-duplicate photo(s) in "
                     f"{sum(len(u) > 1 for u in units)} group(s), each group kept on one side of the split")
    return taken, sorted(p for unit in order for p in unit)


def _carve(units: list[list[str]], counts: dict[str, int], seed: list[int]) -> tuple[dict[str, list[str]],
                                                                                   list[list[str]]]:
    """The units in a seeded order, the first `counts[s]` photos' worth to each split in turn."""
    order = [units[i] for i in np.random.default_rng(seed).permutation(len(units))]
    taken = {}
    for s in counts:
        taken[s], order = _take(order, counts[s])
    return taken, order


def near_group_ids(paths: list[str], scan: ScanResult) -> list[int]:
    """A group id per photo of `paths`: photos linked by near-duplicates of one class share one."""
    index = {p: i for i, p in enumerate(paths)}
    pairs = [(index[n.a], index[n.b]) for n in scan.near
             if n.kind == "within-class" and n.a in index and n.b in index]
    return groups(len(paths), pairs)


def near_groups(pool: list[str], scan: ScanResult) -> list[list[str]]:
    """The photos of `pool` (sorted) as groups of near-duplicates of one class (singletons where
    there are none), ordered by their first member."""
    out: dict[int, list[str]] = {}
    for p, g in zip(pool, near_group_ids(pool, scan)):
        out.setdefault(g, []).append(p)
    return sorted(out.values(), key=lambda u: u[0])


def _take(order: list[list[str]], count: int) -> tuple[list[str], list[list[str]]]:
    """Take groups from the front of `order` while they fit in `count` photos (a group too big
    for what is left is passed over); returns (taken photos sorted, groups left in order)."""
    taken, rest, n = [], [], 0
    for unit in order:
        if n + len(unit) <= count:
            taken.extend(unit)
            n += len(unit)
        else:
            rest.append(unit)
    return sorted(taken), rest


def separate_near_duplicates(split: Split, scan: ScanResult) -> list[dict[str, Any]]:
    """Leave out of the later split every photo with a near-duplicate of its class in an earlier
    split (train < val < test): given split folders, or a reused split.json, may hold such
    copies; a split made here never does (groups stay together).

    Returns what was left out: [{"path", "split", "copy_of", "copy_split", "score"}] (the split's
    assignment is changed and a note added).
    """
    where = {p: (s, c) for s in SPLIT_ORDER for c in split.class_names for p in split.assignment[s].get(c, [])}
    rank = {s: i for i, s in enumerate(SPLIT_ORDER)}
    out: dict[str, dict[str, Any]] = {}
    for n in scan.near:
        if n.kind != "within-class" or n.a not in where or n.b not in where:
            continue
        (sa, _), (sb, _) = where[n.a], where[n.b]
        if sa == sb:
            continue
        early, late = (n.a, n.b) if rank[sa] < rank[sb] else (n.b, n.a)
        seen = out.get(late)
        if seen is None or n.score > seen["score"]:
            out[late] = {"path": late, "split": where[late][0], "copy_of": early, "copy_split": where[early][0],
                         "score": n.score}
    for (s, c), items in _by_place(out.values(), where).items():
        remaining = [p for p in split.assignment[s][c] if p not in {i["path"] for i in items}]
        if not remaining:  # never empty a class's val or test split: keep them, and say so
            split.notes.append(f"class '{c}': every {s} photo is a near-duplicate of a photo in an earlier split; "
                               f"kept (its {s} figures are not held out)")
            for item in items:
                del out[item["path"]]
            continue
        split.assignment[s][c] = remaining
    if out:
        by = {s: sum(i["split"] == s for i in out.values()) for s in ("val", "test")}
        split.notes.append("left out as near-duplicates of photos in an earlier split: "
                           + ", ".join(f"{n} from {s}" for s, n in by.items() if n))
        log.warning("%d photo(s) are near-identical copies of photos in an earlier split; left out of their split",
                    len(out))
    return sorted(out.values(), key=lambda i: i["path"])


def near_section(scan: ScanResult, left_out: list[dict[str, Any]]) -> dict[str, Any]:
    """The `near_duplicates` section of metrics.json."""
    if not scan.near_checked:
        return {"checked": False}
    return {"checked": True, "thresholds": thresholds(), "left_out": left_out,
            "within_class": [n.to_dict() for n in scan.near if n.kind == "within-class"],
            "label_conflicts": [n.to_dict() for n in scan.near if n.kind == "label-conflict"]}


def _by_place(items, where) -> dict[tuple[str, str], list[dict[str, Any]]]:
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for item in list(items):
        out.setdefault(where[item["path"]], []).append(item)
    return out


def spread_over_folds(units: list[list[Any]], totals: list[int], rng: np.random.Generator) -> list[tuple[list[Any], int]]:
    """One class's units (photos that must stay together: a group of near-duplicates, or one
    photo), largest first and in a random order among equals, each given to the fold with the
    fewest of the class's photos so far,
    ties to the fold with the fewest photos of all classes (`totals`, one count per fold, updated):
    (unit, fold) pairs, in that order."""
    sizes = [0] * len(totals)
    placed = []
    order = rng.permutation(len(units))
    for k in sorted(order, key=lambda k: -len(units[k])):  # the largest groups first: the singles even it out
        f = min(range(len(totals)), key=lambda i: (sizes[i], totals[i], i))
        placed.append((units[k], f))
        sizes[f] += len(units[k])
        totals[f] += len(units[k])
    return placed


def fold_assignment(labels: np.ndarray, groups: list[int] | None, folds: int, seed: int = 0) -> np.ndarray:
    """Fold index per photo, stratified by class; photos of one group (near-duplicates) share a fold."""
    groups = list(range(len(labels))) if groups is None else groups
    fold = np.zeros(len(labels), dtype=np.int64)
    totals = [0] * folds
    for c in np.unique(labels):
        members: dict[int, list[int]] = {}
        for i in np.flatnonzero(labels == c):
            members.setdefault(groups[i], []).append(int(i))
        for unit, f in spread_over_folds(sorted(members.values()), totals, np.random.default_rng([seed, int(c)])):
            fold[unit] = f
    return fold


def kfold_splits(scan: ScanResult, folds: int, val_split: float = DEFAULT_VAL_SPLIT, seed: int = 0) -> list[Split]:
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
    # Groups of near-duplicates go to one fold (spread_over_folds: largest first, each to the fold
    # with the fewest of its class, then of all photos).
    orders, fold_of, totals = {}, {}, [0] * folds
    for ci, (c, pool) in enumerate(pools.items()):
        placed = spread_over_folds(near_groups(pool, scan), totals, np.random.default_rng([seed, ci]))
        orders[c] = [unit for unit, _ in placed]
        fold_of.update((unit[0], f) for unit, f in placed)
    sha = {r.rel: r.sha256 for r in scan.records}
    out = []
    for f in range(folds):
        by_split: dict[str, dict[str, list[str]]] = {s: {} for s in SPLIT_ORDER}
        for c, order in orders.items():
            test = [p for u in order if fold_of[u[0]] == f for p in u]
            rest = [u for u in order if fold_of[u[0]] != f]
            n_rest = sum(len(u) for u in rest)
            n_val = min(max(1, int(math.floor(n_rest * val_split + 0.5))), n_rest - 1)
            by_split["test"][c] = sorted(test)
            by_split["val"][c], rest = _take(rest, n_val)
            if not by_split["val"][c] and len(rest) > 1:  # every group too big: one group serves as validation
                by_split["val"][c], rest = sorted(rest[0]), rest[1:]
            by_split["train"][c] = sorted(p for u in rest for p in u)
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

    data = read_json(path, f"Split file '{path}' does not exist. Pass a split.json written by an earlier run.",
                     "pass a split.json written by diycnn.")
    return Split.from_dict(data, where=str(path))


def records_for(split: Split, scan: ScanResult, name: str) -> list[ImageRecord]:
    """The ImageRecords of one split, in the split's order."""
    by_rel = {r.rel: r for r in scan.records}
    return [by_rel[p] for p, _ in split.paths(name)]
