"""Near-duplicate detection on real photos: recall on synthetic copies, false pairs, cost.

Usage (from the project root):
    .venv/bin/python bench/near_duplicates.py [DATA ...] [--copies 300] [--seed 0]

For each DATA folder (default: the three shared datasets):
- every photo's signature is computed from its file (timed, no cache: the cost of a first scan);
- `--copies` photos, chosen at random, are copied the way the web copies photos, each with a
  random mix of: resize to 50-90%, crop up to 8% (split between the sides at random), Gaussian
  blur (radius 0.5-1.5, half of them), colour shift (per-channel gain 0.85-1.15 and offset
  +-15, half of them), JPEG re-encoding at quality 30-90 (all of them); the copies are written
  to a temporary folder and read back like any photo;
- recall: the share of copies that `find_near_duplicates` pairs with their original when the
  copies are compared with the *whole* folder (the way `evaluate` compares new photos with the
  training photos);
- false pairs: pairs flagged among the folder's distinct photos (byte-identical copies excluded)
  of the same class, over all such pairs; the flagged pairs are printed so they can be looked at
  (some are real near-duplicates in the data set, not errors);
- cost: signature seconds per 1,000 photos, and the pair search over the folder.

`--scale N`: the pair search's cost on N photos, made from the folders' thumbnails under the 8
rotations/mirrors (distinct images with real photos' statistics; hashes recomputed from them).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from shared_data import SHARED  # noqa: E402 (bench/shared_data.py, beside this file)


def web_copy(src: Path, rng: np.random.Generator) -> bytes:
    im = ImageOps.exif_transpose(Image.open(src)).convert("RGB")
    scale = rng.uniform(0.5, 0.9)
    im = im.resize((max(8, int(im.width * scale)), max(8, int(im.height * scale))), Image.Resampling.BILINEAR)
    cut = rng.uniform(0, 0.08)
    left, top = rng.uniform(0, cut), rng.uniform(0, cut)
    w, h = im.size
    im = im.crop((int(w * left), int(h * top), int(w * (1 - (cut - left))), int(h * (1 - (cut - top)))))
    if rng.random() < 0.5:
        im = im.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))
    if rng.random() < 0.5:
        arr = np.asarray(im, np.float32) * rng.uniform(0.85, 1.15, 3) + rng.uniform(-15, 15)
        im = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=int(rng.integers(30, 91)))
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", nargs="*", default=[str(SHARED / d) for d in ("kpop_idols", "hymenoptera",
                                                                              "cats_and_dogs")])
    parser.add_argument("--copies", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=int, default=0, metavar="N")
    args = parser.parse_args()

    from diycnn.data import neardup
    from diycnn.data.scan import scan_folder

    print(f"thresholds: {neardup.thresholds()}")
    totals = {"copies": 0, "found": 0, "pairs": 0, "false": 0}
    thumbs = []
    for data in args.data:
        scan = scan_folder(data, near_duplicates=False)  # byte-identical copies are already collapsed
        records = scan.records
        paths = [r.path for r in records]
        start = time.perf_counter()
        sig = neardup.compute_signatures(paths, [r.sha256 for r in records])
        sig_seconds = time.perf_counter() - start
        start = time.perf_counter()
        pairs = neardup.find_near_duplicates(sig)
        pair_seconds = time.perf_counter() - start
        labels = np.array([r.label for r in records])
        same_class = sum(int(n) * (int(n) - 1) // 2 for n in np.unique(labels, return_counts=True)[1])
        false = [p for p in pairs if labels[p.a] == labels[p.b]]

        rng = np.random.default_rng(args.seed)
        chosen = rng.choice(len(records), min(args.copies, len(records)), replace=False)
        with tempfile.TemporaryDirectory() as tmp:
            copies = []
            for k, i in enumerate(chosen):
                path = Path(tmp) / f"copy{k}.jpg"
                path.write_bytes(web_copy(paths[i], rng))
                copies.append(path)
            copy_sig = neardup.compute_signatures(copies, [hashlib.sha256(p.read_bytes()).hexdigest() for p in copies])
        found = {(p.a, p.b) for p in neardup.find_near_duplicates(copy_sig, sig)}
        hits = sum((k, int(i)) in found for k, i in enumerate(chosen))
        n = len(records)
        print(f"\n{Path(data).name}: {n} distinct photos, {len(scan.class_names)} classes")
        print(f"  recall on {len(chosen)} synthetic copies: {hits}/{len(chosen)} = {hits / len(chosen):.1%}")
        print(f"  false pairs among {same_class:,} same-class pairs of distinct photos: {len(false)} "
              f"= {len(false) / max(1, same_class):.4%}; across classes: {len(pairs) - len(false)}")
        for p in false[:20]:
            print(f"    {records[p.a].rel}  ~  {records[p.b].rel}  (correlation {p.score:.3f}, hash distance {p.hamming})")
        print(f"  cost: signatures {sig_seconds / n * 1000:.2f} s per 1,000 photos (first scan, "
              f"{len(paths)} photos in {sig_seconds:.1f} s); pair search {pair_seconds:.2f} s for {n} photos")
        thumbs.append(sig.thumbs[sig.ok])
        totals["copies"] += len(chosen)
        totals["found"] += hits
        totals["pairs"] += same_class
        totals["false"] += len(false)
    print(f"\nall: recall {totals['found']}/{totals['copies']} = {totals['found'] / max(1, totals['copies']):.1%}; "
          f"false pairs {totals['false']}/{totals['pairs']:,} = {totals['false'] / max(1, totals['pairs']):.4%}")
    if args.scale:
        scale(np.concatenate(thumbs), args.scale)


def scale(thumbs: np.ndarray, n: int) -> None:
    import imagehash

    from diycnn.data import neardup

    variants = [np.rot90(thumbs, k, axes=(1, 2)) for k in range(4)]
    variants += [v[:, :, ::-1] for v in variants]
    big = np.ascontiguousarray(np.concatenate(variants)[:n])
    phash = np.array([int(str(imagehash.phash(Image.fromarray(t))), 16) for t in big], dtype=np.uint64)
    sig = neardup.Signatures(phash, big, np.ones(len(big), bool))
    start = time.perf_counter()
    candidates = len(neardup._candidates(phash, None, neardup.MAX_HAMMING))
    pairs = neardup.find_near_duplicates(sig)
    print(f"\nscale: pair search over {len(big):,} photos: {time.perf_counter() - start:.1f} s "
          f"({candidates:,} candidate pairs by hash, {len(pairs)} near-duplicate pairs)")


if __name__ == "__main__":
    main()
