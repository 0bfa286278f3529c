"""Near-duplicate photos: the same shot resized, re-encoded, slightly cropped, blurred or recoloured.

Photos gathered from the web hide such copies; byte hashes miss them. Two stages:

1. **Candidates** -- a 64-bit perceptual hash per photo (DCT hash, ``imagehash.phash``);
   pairs whose hashes differ in at most ``MAX_HAMMING`` bits are compared further. All pairs
   are checked, in blocks, with vectorised XOR + popcount (~2 s for 30,000 photos on 2 Zen 3 cores).
2. **Confirmation** -- a 32x32 greyscale thumbnail per photo; each photo's 16x16 views under
   19 crops (none, and 4% or 8% cut off at nine anchor positions) are correlated (Pearson)
   with the other photo's full 16x16 view, both ways; the best correlation must reach
   ``MIN_SCORE``. Crops make it tolerant of a re-framed copy, the correlation of brightness
   and contrast changes, the small size of blur and JPEG noise.

Thresholds were set on the shared datasets with synthetic copies (``bench/near_duplicates.py``,
README "Near-duplicates"): copies score >= 0.93 (1st percentile 0.96-0.97), distinct photos of
one class almost never do -- even aligned face crops of one person.

Signatures, and which photos were already compared with which, are cached by content hash
under ``DIYCNN_CACHE/neardup/`` (one file per data folder, never next to the photos), so a
rescan decodes and compares only new photos. Decoding uses the JPEG decoder's reduced-size mode
(``draft``): 1.3-2.5 ms a photo on one core (bench/near_duplicates.py).

Not detected: mirrored copies, rotations, crops beyond ~10%, heavy edits (text, collage).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import math
import os
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image, ImageOps

from ..io import atomic_write_bytes, cache_root

log = logging.getLogger(__name__)

MAX_HAMMING = 20  # of 64 perceptual-hash bits, for a pair to be compared at all
MIN_SCORE = 0.93  # best crop-tolerant correlation of the greyscale thumbnails, to call it a copy
THUMB = 32  # stored thumbnail side (greyscale, uint8)
VIEW = 16  # compared view side
CUTS = (0.04, 0.08)
SIGNATURE_VERSION = 1


@dataclasses.dataclass(frozen=True)
class NearPair:
    """Two photos (indices into the list given to `find_near_duplicates`) that look like one shot."""

    a: int
    b: int
    score: float  # best crop-tolerant correlation, 0..1
    hamming: int  # perceptual-hash bits that differ


def thresholds() -> dict[str, float]:
    """What counts as a near-duplicate (recorded in metrics.json)."""
    return {"max_hash_distance": MAX_HAMMING, "min_correlation": MIN_SCORE, "hash": "phash 64-bit",
            "view": f"{VIEW}x{VIEW} greyscale, crops up to {max(CUTS):.0%}"}


def signature_of(image: Image.Image) -> tuple[int, np.ndarray]:
    """(64-bit perceptual hash, 32x32 greyscale thumbnail uint8) of a decoded photo."""
    import imagehash  # noqa: PLC0415 (lazy: loads imagehash and SciPy)

    grey = ImageOps.exif_transpose(image).convert("L")
    phash = int(str(imagehash.phash(grey)), 16)
    thumb = np.asarray(grey.resize((THUMB, THUMB), Image.Resampling.BOX), dtype=np.uint8)
    return phash, thumb


def signature_file(path: str | Path) -> tuple[int, np.ndarray]:
    """Signature of an image file, decoded at reduced size where the format allows (JPEG).

    Raises:
        OSError, ValueError, Image.DecompressionBombError: the file cannot be decoded.
    """
    with Image.open(path) as image:
        image.draft("L", (4 * THUMB, 4 * THUMB))
        return signature_of(image)


class SignatureCache:
    """Signatures by content hash, one compressed file per data folder in DIYCNN_CACHE/neardup/."""

    def __init__(self, root: Path):
        key = hashlib.sha256(str(root).encode()).hexdigest()[:24]
        self.path = cache_root() / "neardup" / f"v{SIGNATURE_VERSION}-{key}.npz"
        self.known: dict[str, tuple[int, np.ndarray]] = {}
        # Every photo in `compared` has been compared with every other one in it (the last scan's
        # photos); `pairs` are the near-duplicates found among them, by content hash.
        self.compared: set[str] = set()
        self.pairs: list[tuple[str, str, float, int]] = []
        self.changed = False
        try:
            with np.load(self.path, allow_pickle=False) as saved:
                shas = [str(s) for s in saved["sha256"]]
                for sha, h, t in zip(shas, saved["phash"], saved["thumbs"]):
                    self.known[sha] = (int(h), t)
                if [float(v) for v in saved["rules"]] == [MAX_HAMMING, MIN_SCORE]:
                    self.compared = {shas[i] for i in np.flatnonzero(saved["compared"])}
                    self.pairs = [(shas[a], shas[b], float(sc), int(h)) for (a, b), sc, h in
                                  zip(saved["pairs"].tolist(), saved["pair_scores"].tolist(),
                                      saved["pair_hashes"].tolist())]
        except (OSError, ValueError, KeyError, TypeError, IndexError, EOFError, zipfile.BadZipFile):
            self.compared, self.pairs = set(), []  # a missing or damaged cache only means computing again

    def save(self, keep: set[str]) -> None:
        """Write the signatures of the photos present now (`keep`), if anything changed."""
        if not self.changed and set(self.known) <= keep:
            return

        shas = sorted(s for s in self.known if s in keep)
        row = {s: i for i, s in enumerate(shas)}
        pairs = [p for p in self.pairs if p[0] in row and p[1] in row]
        buf = io.BytesIO()
        np.savez_compressed(buf, sha256=np.array(shas, dtype="U64"),
                            phash=np.array([self.known[s][0] for s in shas], dtype=np.uint64),
                            thumbs=np.stack([self.known[s][1] for s in shas]) if shas
                            else np.zeros((0, THUMB, THUMB), np.uint8),
                            rules=np.array([MAX_HAMMING, MIN_SCORE], dtype=np.float64),
                            compared=np.array([s in self.compared for s in shas], dtype=bool),
                            pairs=np.array([(row[a], row[b]) for a, b, _, _ in pairs], dtype=np.int64).reshape(-1, 2),
                            pair_scores=np.array([p[2] for p in pairs], dtype=np.float64),
                            pair_hashes=np.array([p[3] for p in pairs], dtype=np.int64))
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.path, buf.getvalue())
        except OSError as exc:
            log.info("Could not write the near-duplicate cache %s (%s)", self.path, exc)


@dataclasses.dataclass
class Signatures:
    """Signatures of a list of photos; `ok[i]` is False where the photo could not be decoded."""

    phash: np.ndarray  # (N,) uint64
    thumbs: np.ndarray  # (N, 32, 32) uint8
    ok: np.ndarray  # (N,) bool

    def subset(self, index: Iterable[int]) -> "Signatures":
        index = np.asarray(list(index), dtype=np.int64)
        return Signatures(self.phash[index], self.thumbs[index], self.ok[index])

    def to_npz(self, names: list[str]) -> bytes:
        """The signatures with a name (relative path) each, as .npz bytes (a run's training photos)."""
        buf = io.BytesIO()
        np.savez_compressed(buf, names=np.array(names, dtype=str), phash=self.phash, thumbs=self.thumbs, ok=self.ok,
                            version=np.array(SIGNATURE_VERSION))
        return buf.getvalue()

    @classmethod
    def from_npz(cls, path: str | Path, max_rows: int) -> tuple["Signatures", list[str]]:
        """Read `to_npz`'s file (no pickles) of at most `max_rows` photos (what the run says it
        trained on). Each member's array header (dtype and shape) is checked before it is read, so
        a small file that would inflate to gigabytes is refused.

        Raises:
            ValueError: not such a file, more rows than `max_rows`, or another signature version.
        """
        _check_members(Path(path), max_rows)
        try:
            with np.load(path, allow_pickle=False) as saved:
                version = int(saved["version"])
                sig = cls(saved["phash"].astype(np.uint64), saved["thumbs"].astype(np.uint8).reshape(-1, THUMB, THUMB),
                          saved["ok"].astype(bool))
                names = [str(n) for n in saved["names"]]
        except (OSError, KeyError, TypeError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise ValueError(f"'{path}' is not a readable signature file ({exc}).") from None
        if version != SIGNATURE_VERSION:
            raise ValueError(f"'{path}' holds signatures of another version ({version}); train the run again.")
        if not (len(names) == len(sig.phash) == len(sig.ok) == len(sig.thumbs)):
            raise ValueError(f"'{path}' is damaged (its arrays differ in length).")
        return sig, names


MAX_NAME_CHARS = 4096  # a relative path in the names array


def _check_members(path: Path, max_rows: int) -> None:
    """Each .npy member of a signature file: the expected dtype, at most `max_rows` rows (a zip
    bomb's header claims a huge shape, or its entry a huge size; both are refused unread)."""
    expected = {"names": ("U", (None,)), "phash": ("u", (None,)), "thumbs": ("u", (None, THUMB, THUMB)),
                "ok": ("b", (None,)), "version": ("iu", ())}
    try:
        with zipfile.ZipFile(path) as zf:
            members = {i.filename: i for i in zf.infolist()}
            if set(members) != {f"{k}.npy" for k in expected}:
                raise ValueError(f"members {sorted(members)[:8]}")
            for key, (kinds, shape) in expected.items():
                info = members[f"{key}.npy"]
                with zf.open(info) as fh:
                    version = np.lib.format.read_magic(fh)
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    got, _, dtype = read_header(fh, max_header_size=10_000)
                rows_ok = len(got) == len(shape) and all(w is None or g == w for g, w in zip(got, shape)) \
                    and (not got or got[0] <= max_rows)
                size_ok = dtype.kind in kinds and dtype.itemsize <= 4 * MAX_NAME_CHARS
                if not rows_ok or not size_ok or info.file_size > 1024 + math.prod(got) * dtype.itemsize:
                    raise ValueError(f"{key} holds {dtype} {got} (a run of at most {max_rows} training photos "
                                     "writes far less)")
    except (OSError, ValueError, TypeError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"'{path}' is not a readable signature file ({exc}).") from None


def compute_signatures(paths: list[Path], shas: list[str], cache: SignatureCache | None = None,
                       workers: int | None = None) -> Signatures:
    """Signatures of photos (cached by content hash); an undecodable photo gets ok=False."""
    n = len(paths)
    phash = np.zeros(n, dtype=np.uint64)
    thumbs = np.zeros((n, THUMB, THUMB), dtype=np.uint8)
    ok = np.zeros(n, dtype=bool)
    todo = []
    for i, sha in enumerate(shas):
        hit = cache.known.get(sha) if cache is not None else None
        if hit is not None:
            phash[i], thumbs[i], ok[i] = hit[0], hit[1], True
        else:
            todo.append(i)

    def one(i: int):
        try:
            return signature_file(paths[i])
        except Exception as exc:  # noqa: BLE001 -- any decoder failure only means "not compared"
            log.info("No near-duplicate signature for %s: %s", paths[i], exc)
            return None

    if todo:
        with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 2) as pool:
            for i, sig in zip(todo, pool.map(one, todo)):
                if sig is not None:
                    phash[i], thumbs[i], ok[i] = sig[0], sig[1], True
                    if cache is not None:
                        cache.known[shas[i]] = sig
                        cache.changed = True
    return Signatures(phash, thumbs, ok)


def _resize_matrix(start: float, length: float) -> np.ndarray:
    """(VIEW, THUMB) linear map: resample [start, start+length) of a THUMB-long axis to VIEW
    samples with bilinear interpolation at the output pixel centres."""
    m = np.zeros((VIEW, THUMB), dtype=np.float32)
    for o in range(VIEW):
        x = start + (o + 0.5) * length / VIEW - 0.5
        x0 = int(np.floor(x))
        w1 = x - x0
        for idx, w in ((x0, 1 - w1), (x0 + 1, w1)):
            m[o, min(max(idx, 0), THUMB - 1)] += w
    return m


def _crop_maps() -> list[tuple[np.ndarray, np.ndarray]]:
    maps = [(_resize_matrix(0, THUMB), _resize_matrix(0, THUMB))]
    for cut in CUTS:
        length = THUMB * (1 - cut)
        for ty in (0, 0.5, 1):
            for tx in (0, 0.5, 1):
                maps.append((_resize_matrix(THUMB * cut * ty, length), _resize_matrix(THUMB * cut * tx, length)))
    return maps


_MAPS = _crop_maps()


def _normalise(v: np.ndarray) -> np.ndarray:
    v = v - v.mean(axis=-1, keepdims=True)
    return v / (np.linalg.norm(v, axis=-1, keepdims=True) + 1e-3)


def _views(thumbs: np.ndarray, maps=None) -> np.ndarray:
    """(N, len(maps), 256) normalised float32 views of each thumbnail under the crops (all 19 by
    default; view 0 is the uncropped one)."""
    x = thumbs.astype(np.float32)
    views = [np.matmul(np.matmul(my, x), mx.T).reshape(len(x), -1) for my, mx in (maps or _MAPS)]
    return _normalise(np.stack(views, axis=1))


def _full_views(thumbs: np.ndarray) -> np.ndarray:
    """(N, 256) normalised uncropped views, in blocks."""
    return np.concatenate([np.zeros((0, VIEW * VIEW), np.float32)]
                          + [_views(thumbs[s:s + 4096], _MAPS[:1])[:, 0] for s in range(0, len(thumbs), 4096)])


def _candidates(hash_a: np.ndarray, hash_b: np.ndarray | None, max_hamming: int) -> np.ndarray:
    """(M, 2) index pairs whose hashes differ in <= max_hamming bits; within one set (b None)
    only i < j."""
    same = hash_b is None
    hb = hash_a if same else hash_b
    out = [np.zeros((0, 2), dtype=np.int64)]
    block = max(64, min(1024, 4_000_000 // max(1, len(hb))))  # ~32 MB of XORs at a time
    for start in range(0, len(hash_a), block):
        first = start if same else 0  # within one set, only the columns from this block on (j >= i)
        dist = np.bitwise_count(hash_a[start:start + block, None] ^ hb[None, first:])
        i, j = np.nonzero(dist <= max_hamming)
        i, j = i + start, j + first
        if same:
            keep = i < j
            i, j = i[keep], j[keep]
        out.append(np.stack([i, j], axis=1).astype(np.int64))
    return np.concatenate(out)


def _best_crop(pairs: np.ndarray, thumbs_x: np.ndarray, full_y: np.ndarray) -> np.ndarray:
    """For each pair (x, y): the best correlation of any crop view of x with the full view of y.

    Pairs are taken grouped by x: each photo's 19 views are computed once (a block of photos at a
    time) and compared with all its partners' full views in one matrix product."""
    out = np.zeros(len(pairs), dtype=np.float32)
    if not len(pairs):
        return out
    order = np.argsort(pairs[:, 0], kind="stable")
    xs = pairs[order, 0]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], len(xs)]
    block = 512
    for b in range(0, len(starts), block):
        views = _views(thumbs_x[xs[starts[b:b + block]]])
        for k, (lo, hi) in enumerate(zip(starts[b:b + block], ends[b:b + block])):
            idx = order[lo:hi]
            out[idx] = (views[k] @ full_y[pairs[idx, 1]].T).max(axis=0)
    return out


def _scores(pairs: np.ndarray, thumbs_a: np.ndarray, thumbs_b: np.ndarray) -> np.ndarray:
    """Best crop-tolerant correlation for each pair (a in set A, b in set B), both directions."""
    full_a = _full_views(thumbs_a)
    full_b = full_a if thumbs_b is thumbs_a else _full_views(thumbs_b)
    return np.maximum(_best_crop(pairs, thumbs_a, full_b), _best_crop(pairs[:, ::-1], thumbs_b, full_a))


def find_near_duplicates(sig: Signatures, other: Signatures | None = None, max_hamming: int = MAX_HAMMING,
                         min_score: float = MIN_SCORE) -> list[NearPair]:
    """Near-duplicate pairs within `sig` (a < b), or between `sig` (a) and `other` (b).

    Photos without a signature (ok False) are never paired.
    """
    b = other if other is not None else sig
    pairs = _candidates(sig.phash, None if other is None else other.phash, max_hamming)
    if len(pairs):
        pairs = pairs[sig.ok[pairs[:, 0]] & b.ok[pairs[:, 1]]]
    scores = _scores(pairs, sig.thumbs, b.thumbs)
    keep = scores >= min_score
    pairs, scores = pairs[keep], scores[keep]
    hashes = np.bitwise_count(sig.phash[pairs[:, 0]] ^ b.phash[pairs[:, 1]])
    return [NearPair(int(i), int(j), round(float(s), 4), int(h))
            for (i, j), s, h in zip(pairs.tolist(), scores.tolist(), hashes.tolist())]


def find_near_duplicates_cached(sig: Signatures, shas: list[str], store: SignatureCache | None) -> list[NearPair]:
    """`find_near_duplicates(sig)` for photos with unique content hashes `shas`, comparing only
    what the last scan of the same folder did not: pairs among photos compared then come from
    `store`, new photos are compared with all. The store is updated (saved by its owner)."""
    if store is None:
        return find_near_duplicates(sig)
    old = [i for i, sha in enumerate(shas) if sha in store.compared and sig.ok[i]]
    old_set = set(old)
    new = [i for i in range(len(shas)) if i not in old_set]
    pos = {sha: i for i, sha in enumerate(shas)}

    def pair(i: int, j: int, score: float, hamming: int) -> NearPair:
        return NearPair(min(i, j), max(i, j), score, hamming)

    found = [pair(pos[a], pos[b], sc, h) for a, b, sc, h in store.pairs if a in pos and b in pos]
    if new:
        fresh = sig.subset(new)
        found += [pair(new[p.a], new[p.b], p.score, p.hamming) for p in find_near_duplicates(fresh)]
        if old:
            found += [pair(new[p.a], old[p.b], p.score, p.hamming)
                      for p in find_near_duplicates(fresh, sig.subset(old))]
        store.changed = True
    store.compared = {shas[i] for i in range(len(shas)) if sig.ok[i]}
    store.pairs = [(shas[p.a], shas[p.b], p.score, p.hamming) for p in found]
    return sorted(found, key=lambda p: (p.a, p.b))


def groups(n: int, pairs: Iterable[tuple[int, int]]) -> list[int]:
    """Connected components (union-find): group id per item, the smallest member's index."""
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return [find(i) for i in range(n)]
