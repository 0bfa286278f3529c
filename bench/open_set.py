"""'None of these' and calibration, measured: strangers a run never saw, and its confidence.

    .venv/bin/python bench/open_set.py [--draws 3] [--known 5] [--face-model face-probe]
        [--other-model linear-probe] [--per-class 200] [--only faces,other] [--cohort]

Faces: train on `--known` idols of kpop_idols/train (drawn at random, `--draws` times), then score
their held-out test photos and every photo of the other idols (strangers). Other photos: train on
hymenoptera with cats_and_dogs photos as strangers, then the reverse (`--per-class` photos a class
of cats_and_dogs, and as many strangers). `--cohort`: for faces, half the other idols are given to
the run as `--unknown-folder` (photos of others) and the strangers are the other half, beside a run
of the same draw without them, scored on the same strangers. For each run it prints:

- the AUROC of the run's unknown score (cosine distance to the nearest class mean), beside two
  scores from the network's outputs (1 - the top probability; the energy, -logsumexp of the
  logits), so the choice of score rests on a measurement;
- at the run's own threshold (set on its validation photos for at most 5% of known photos called
  unknown): the share of known test photos kept, of strangers called unknown, and the accuracy on
  the kept known photos beside the accuracy on all of them;
- the expected calibration error of its test photos before and after temperature scaling.

Runs are trained with diycnn's own API into a temporary folder; the datasets are only read
(folders of links to them are made in the temporary folder).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from keras_speed import cpu_description  # noqa: E402 (beside this file)
from shared_data import SHARED  # noqa: E402

PHOTO = (".jpg", ".jpeg", ".png")


def photos(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO)


def linked(folder: Path, classes: dict[str, list[Path]]) -> Path:
    """A class-folder dataset of links to the given photos."""
    for name, files in classes.items():
        (folder / name).mkdir(parents=True)
        for f in files:
            (folder / name / f.name).symlink_to(f)
    return folder


def scored(run, files: list[Path]) -> dict[str, np.ndarray]:
    """Each photo's unknown scores (the run's, 1 - top probability, energy) and probabilities."""
    import torch

    from diycnn.data.augment import image_input_fn
    from diycnn.data.loader import ArrayBatches, decode_all
    from diycnn.training.trainer import logits_and_features, probs_of_logits

    images, ok, failed = decode_all(files, run.preprocessing)
    if failed:
        print(f"    ({len(failed)} unreadable photos left out)")
    logits, features = logits_and_features(run.module, ArrayBatches(images, np.zeros(len(images)), 32),
                                           image_input_fn(run.preprocessing), run.device, run.precision, tta=run.tta)
    probs = probs_of_logits(logits)
    energy = -torch.logsumexp(torch.from_numpy(logits), dim=2).mean(0).numpy()
    return {"ncm": run.detector.scores(features), "msp": 1 - probs.max(1), "energy": energy, "probs": probs,
            "ok": np.array(ok)}


def measure(title: str, data: Path, model: str, strangers: list[Path], work: Path, seed: int,
            unknown_folder: Path | None = None) -> dict[str, float]:
    import diycnn
    from diycnn.data.split import read_split
    from diycnn.evaluation.open_set import auroc

    run = diycnn.train(data, model=model, out=work / f"run-{title}", seed=seed, calibrate=True, unknown=True,
                       unknown_folder=None if unknown_folder is None else str(unknown_folder))
    split = read_split(run.dir / "split.json")
    test = [(data / p, run.class_names.index(c)) for p, c in split.paths("test")]
    known = scored(run, [p for p, _ in test])
    labels = np.array([c for _, c in test])[known["ok"]]
    other = scored(run, strangers)
    t = run.unknown_threshold
    kept = known["ncm"] <= t
    right = known["probs"].argmax(1) == labels
    cal = run.metrics.calibration or {}
    out = {"auroc": auroc(known["ncm"], other["ncm"]), "auroc_msp": auroc(known["msp"], other["msp"]),
           "auroc_energy": auroc(known["energy"], other["energy"]), "known_kept": float(kept.mean()),
           "strangers_unknown": float((other["ncm"] > t).mean()), "accuracy_all": float(right.mean()),
           "accuracy_kept": float(right[kept].mean()) if kept.any() else float("nan"),
           "ece_before": cal.get("test_ece_before", float("nan")), "ece_after": cal.get("test_ece_after", float("nan")),
           "temperature": cal.get("temperature", 1.0), "known": len(labels), "strangers": len(other["ncm"])}
    print(f"  {title}: {model}, {out['known']} known test photos, {out['strangers']} strangers; AUROC {out['auroc']:.3f} "
          f"(1 - top probability {out['auroc_msp']:.3f}, energy {out['auroc_energy']:.3f}); at threshold {t:.3f}: "
          f"known kept {out['known_kept']:.1%}, strangers called unknown {out['strangers_unknown']:.1%}, accuracy on "
          f"kept {out['accuracy_kept']:.3f} (all {out['accuracy_all']:.3f}); ECE {out['ece_before']:.3f} -> "
          f"{out['ece_after']:.3f} (T {out['temperature']:.2f})", flush=True)
    return out


def table(rows: dict[str, dict[str, float]]) -> None:
    keys = [("auroc", "AUROC", ".3f"), ("auroc_msp", "AUROC, 1 - top p", ".3f"), ("auroc_energy", "AUROC, energy", ".3f"),
            ("known_kept", "known kept", ".1%"), ("strangers_unknown", "strangers unknown", ".1%"),
            ("accuracy_kept", "acc. kept", ".3f"), ("accuracy_all", "acc. all", ".3f"),
            ("ece_before", "ECE before", ".3f"), ("ece_after", "ECE after", ".3f")]
    print("\n| run | " + " | ".join(k[1] for k in keys) + " |")
    print("|---|" + "---|" * len(keys))
    for name, r in rows.items():
        print(f"| {name} | " + " | ".join(format(r[k], f) for k, _, f in keys) + " |")
    for tag, which in (("faces, mean", lambda n: "unknown folder" not in n),
                       ("faces with an unknown folder, mean", lambda n: "unknown folder" in n)):
        faces = [r for n, r in rows.items() if n.startswith("faces") and which(n)]
        if len(faces) > 1:
            print(f"| {tag} | " + " | ".join(format(statistics.mean(r[k] for r in faces), f) for k, _, f in keys) + " |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--draws", type=int, default=3)
    p.add_argument("--known", type=int, default=5)
    p.add_argument("--face-model", default="face-probe")
    p.add_argument("--other-model", default="linear-probe")
    p.add_argument("--per-class", type=int, default=200, help="cats_and_dogs photos a class to train on")
    p.add_argument("--only", default="faces,other")
    p.add_argument("--cohort", action="store_true", help="faces: also a run given half the other idols as --unknown-folder")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="diycnn-open-set-"))
    print(f"CPU: {cpu_description()}", flush=True)
    rows: dict[str, dict[str, float]] = {}
    if "faces" in args.only:
        idols = sorted(d for d in (SHARED / "kpop_idols" / "train").iterdir() if d.is_dir())
        for draw in range(args.draws):
            rng = np.random.default_rng(draw)
            known = sorted(rng.choice(len(idols), args.known, replace=False))
            data = linked(work / f"faces-{draw}", {idols[i].name: photos(idols[i]) for i in known})
            others = [i for i in range(len(idols)) if i not in known]
            cohort = sorted(rng.choice(others, len(others) // 2, replace=False)) if args.cohort else []
            strangers = [f for i in others if i not in cohort for f in photos(idols[i])]
            print(f"\nfaces, draw {draw}: known {', '.join(idols[i].name for i in known)}"
                  + (f"; unknown folder {', '.join(idols[i].name for i in cohort)}" if cohort else ""), flush=True)
            rows[f"faces {draw}"] = measure(f"faces-{draw}", data, args.face_model, strangers, work, seed=draw)
            if cohort:
                folder = linked(work / f"others-{draw}", {idols[i].name: photos(idols[i]) for i in cohort})
                rows[f"faces {draw}, unknown folder"] = measure(f"faces-{draw}-cohort", data, args.face_model, strangers,
                                                                 work, seed=draw, unknown_folder=folder)
    if "other" in args.only:
        hym, cats = SHARED / "hymenoptera", SHARED / "cats_and_dogs"
        cd_train = {c: photos(cats / "train" / c)[:args.per_class] for c in ("cats", "dogs")}
        cd_strangers = [f for c in ("cats", "dogs") for f in photos(cats / "validation" / c)[:args.per_class // 2]]
        hym_all = {c: photos(hym / "train" / c) + photos(hym / "val" / c) for c in ("ants", "bees")}
        print("\nhymenoptera (strangers: cats_and_dogs)", flush=True)
        rows["hymenoptera"] = measure("hymenoptera", linked(work / "hym", hym_all), args.other_model, cd_strangers,
                                      work, seed=0)
        print("\ncats_and_dogs (strangers: hymenoptera)", flush=True)
        rows["cats_and_dogs"] = measure("cats_and_dogs", linked(work / "cd", cd_train), args.other_model,
                                        [f for fs in hym_all.values() for f in fs], work, seed=0)
    table(rows)


if __name__ == "__main__":
    main()
