"""Command line: each subcommand parses its arguments and calls the public API."""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import shutil
import sys
from typing import Any

from .settings import EXPORT_FORMATS, RECIPE_GUIDE, RECIPE_NAMES, check_model_name, recipe_defaults_help

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def epoch_line(epoch: int, epochs: int | None, logs: dict, left_seconds: float | None = None,
               width: int = 80) -> str:
    """One epoch, validation first (the figures that matter), fitted in `width` columns (80 at most):
    'Epoch 3/12  val_loss 0.6429 val_acc 0.400  loss 0.6782 acc 0.486  27s  ETA 2:36'."""
    total = f"/{epochs}" if epochs else ""
    parts = [f"Epoch {epoch + 1}{total}", f"val_loss {logs['val_loss']:.4f} val_acc {logs['val_accuracy']:.3f}",
             f"loss {logs['loss']:.4f} acc {logs['accuracy']:.3f}", f"{logs['seconds']:.0f}s"]
    if left_seconds is not None:
        parts.append(f"ETA {int(left_seconds // 60)}:{int(left_seconds % 60):02d}")
    width = min(width, 80)
    while len("  ".join(parts)) > width and len(parts) > 2:
        parts.pop()  # the least important figures go first; the validation figures always stay
    return "  ".join(parts)


class _Progress:
    """Training progress on stderr: in a terminal, a batch bar during each epoch that gives way to
    one compact line per epoch; piped or redirected, only the epoch lines (no carriage returns)."""

    def __init__(self, epochs: int | None = None, stream=None):
        from .training.trainer import Callback

        self.epochs = epochs
        self.bar = None
        self.seconds: list[float] = []
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        outer = self

        class Hooks(Callback):
            def on_train_begin(self, epochs, start_epoch):
                outer.epochs = epochs

            def on_epoch_begin(self, epoch, num_batches, start_batch):
                if not outer.tty:
                    return
                from tqdm import tqdm

                total = f"/{outer.epochs}" if outer.epochs else ""
                outer.bar = tqdm(total=num_batches, initial=start_batch, desc=f"Epoch {epoch + 1}{total}",
                                 unit="batch", file=outer.stream, dynamic_ncols=True, leave=False)

            def on_batch_end(self, batch, logs):
                if outer.bar is not None:
                    outer.bar.set_postfix_str(f"loss {logs['loss']:.4f} acc {logs['accuracy']:.3f}", refresh=False)
                    outer.bar.update(1)

            def on_epoch_end(self, epoch, logs):
                outer.seconds.append(logs["seconds"])
                if outer.bar is not None:
                    outer.bar.close()
                    outer.bar = None
                left = None
                if outer.epochs and epoch + 1 < outer.epochs:
                    left = (outer.epochs - epoch - 1) * sum(outer.seconds) / len(outer.seconds)
                width = shutil.get_terminal_size((80, 24)).columns if outer.tty else 80
                print(epoch_line(epoch, outer.epochs, logs, left, width), file=outer.stream, flush=True)

            def on_train_end(self, interrupted):
                if outer.bar is not None:
                    outer.bar.close()
                    outer.bar = None

        self.callback = Hooks()


def _print_result(run) -> None:
    m = run.metrics
    lo, hi = m["test_accuracy_ci95"]
    print(f"\nTest accuracy: {m['test_accuracy']:.1%}  (95% CI {lo:.1%}-{hi:.1%}, "
          f"{m['test_correct']}/{m['counts']['test']} photos)   test loss: {m['test_loss']:.4f}")
    cv = m.get("cross_validation") or {}
    if cv.get("checked"):
        from .training.crossval import CV_BELOW, describe  # torch is loaded by now: training ran

        print(f"Cross-validated accuracy: {describe(cv)}")
        if m["counts"]["test"] < CV_BELOW:
            print(f"  (the figure to trust: {m['counts']['test']} test photos are too few for the one above)")
    if m.get("overfitting"):
        print(f"\n{m['overfitting']['message']}\n")
    print(f"Trained {m['epochs_run']} epochs in {m['train_seconds']:.0f} s "
          f"({m['train_images_per_second']:.1f} images/s, {m['device']}, {m['precision']})")
    width = max(len(c) for c in m["class_names"]) + 2
    print(f"\n{'class':<{width}} precision  recall      f1  support")
    for c, v in m["per_class"].items():
        print(f"{c:<{width}} {v['precision']:9.3f} {v['recall']:7.3f} {v['f1']:7.3f} {v['support']:8d}")
    print("\nConfusion matrix (rows: true, columns: predicted)")
    print(" " * width + " ".join(f"{c[:8]:>8}" for c in m["class_names"]))
    for c, row in zip(m["class_names"], m["confusion_matrix"]):
        print(f"{c:<{width}}" + " ".join(f"{v:8d}" for v in row))
    if m["skipped"] or m["duplicates"]:
        print(f"\nLeft out: {_count(len(m['skipped']), 'unusable file')}, {_count(len(m['duplicates']), 'duplicate')}:")
        for p in (m["skipped"] + m["duplicates"])[:10]:
            print(f"  {p['path']}: {p['reason']}")
        extra = len(m["skipped"]) + len(m["duplicates"]) - 10
        if extra > 0:
            print(f"  ... and {extra} more (see metrics.json)")
    _print_data_checks(m)
    print(f"\nRun directory: {run.dir}\nReport: {run.dir / 'report.html'}")


def _count(n: int, noun: str) -> str:
    """'1 duplicate', '2 duplicates'."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _print_data_checks(m: dict) -> None:
    """Near-duplicates left out or in conflict, and the first suspect labels."""
    near = m.get("near_duplicates") or {}
    left, conflicts = near.get("left_out") or [], near.get("label_conflicts") or []
    if left:
        print(f"\nLeft out of evaluation: {len(left)} near-identical cop{'y' if len(left) == 1 else 'ies'} "
              "of photos in an earlier split:")
        for item in left[:5]:
            print(f"  {item['path']} ~ {item['copy_of']}")
    if conflicts:
        print(f"\nLikely label conflicts (the same shot in two classes): {len(conflicts)}")
        for item in conflicts[:5]:
            print(f"  {item['a']} ~ {item['b']}")
    suspects = m.get("suspect_labels") or {}
    if suspects.get("items"):
        print(f"\nSuspect labels: {suspects['count']} photo(s) look like another class (out-of-fold predictions):")
        for item in suspects["items"][:5]:
            print(f"  {item['path']}: filed as {item['label']} ({item['p_label']:.0%}), "
                  f"looks like {item['suggested']} ({item['p_suggested']:.0%})")


def cmd_demo(args) -> int:
    from .demo import demo

    progress = _Progress(args.epochs)
    run = demo(out=args.out, epochs=args.epochs, callbacks=[progress.callback], on_stage=_err,
               precision=args.precision, device=args.device)
    _print_result(run)
    return 0


def cmd_summary(args) -> int:
    from . import summary

    result = summary(args.model, num_classes=args.classes, print_fn=None if args.json else print)
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


def _set_values(items: list[str] | None) -> dict[str, Any]:
    """--set KEY=VALUE pairs; values are JSON when they parse, strings otherwise."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set takes KEY=VALUE (e.g. --set label_smoothing=0.1), received {item!r}.")
        try:
            out[key.strip().replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip().replace("-", "_")] = value
    return out


def _check_before_torch(data, models: list[str]) -> None:
    """Wrong model names and data paths, answered before PyTorch loads (seconds)."""
    from .data.scan import check_data_folder

    for name in models:
        check_model_name(name)
    check_data_folder(data)


def cmd_train(args) -> int:
    if args.resume is None and args.data is None:
        raise ValueError("diycnn train needs a DATA folder (or --resume RUN_DIR).")
    if args.resume is None:
        _check_before_torch(args.data, [args.model] if args.model is not None else [])  # None: config's or auto
    from . import train

    overrides: dict[str, Any] = {k: getattr(args, k) for k in
                                 ("epochs", "batch_size", "lr", "seed", "val_split", "test_split", "patience",
                                  "device", "precision", "backbone", "weights", "budget", "crop", "no_face",
                                  "max_minutes")}
    for flag in ("tta", "val_as_test"):
        if getattr(args, flag):
            overrides[flag] = True
    if args.no_near_duplicates:
        overrides["near_duplicates"] = False
    if args.suspects is not None:
        overrides["suspects"] = args.suspects == "on"
    if args.cv is not None:
        overrides["cross_validate"] = args.cv == "on"
    overrides.update(_set_values(args.set))
    model = args.model
    if model is None:  # a config file may name the model; otherwise auto
        from .settings import read_config_file

        model = (read_config_file(args.config).get("model") if args.config else None) or "auto"
    if args.devices and args.devices > 1:
        return _launch_torchrun(args)
    from .training import distributed

    main_process = int(os.environ.get("RANK", "0")) == 0
    progress = _Progress(args.epochs)
    try:
        run = train(args.data, model=model, out=args.out, split=args.split, resume=args.resume,
                    config=args.config, callbacks=[progress.callback] if main_process else [],
                    on_stage=_err if main_process else (lambda text: None),
                    **{k: v for k, v in overrides.items() if v is not None})
    finally:
        distributed.shutdown()
    if run is not None:  # None on the other processes under torchrun
        _print_result(run)
    return 0


def _launch_torchrun(args) -> int:
    """`diycnn train --devices N ...` = `torchrun --standalone --nproc_per_node N -m diycnn train ...`."""
    import subprocess

    if "WORLD_SIZE" in os.environ:
        raise ValueError("--devices is for starting training; under torchrun, leave it out.")
    argv, skip = [], False
    for a in args.argv:
        if skip:
            skip = False
        elif a == "--devices":
            skip = True
        elif not a.startswith("--devices="):
            argv.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(args.devices),
           "-m", "diycnn", *argv]
    _err("Starting: " + " ".join(cmd[2:]).replace("torch.distributed.run", "torchrun", 1))
    return subprocess.call(cmd)


def cmd_predict(args) -> int:
    from . import load

    run = load(args.run, device=args.device)
    preds = run.predict(args.paths, top_k=args.top_k)
    for problem in preds.problems:
        _err(f"skipped {problem.path}: {problem.reason}")
    if args.json:
        print(json.dumps(list(preds), indent=2, ensure_ascii=False))
    elif args.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["path", "label"] + run.class_names)
        for p in preds:
            writer.writerow([p["path"], p["label"]] + [f"{p['probabilities'][c]:.6f}" for c in run.class_names])
    else:
        k = args.top_k or 1
        width = max([len(p["path"]) for p in preds] + [4])
        for p in preds:
            top = sorted(p["probabilities"].items(), key=lambda kv: -kv[1])[:k]
            print(f"{p['path']:<{width}}  " + "  ".join(f"{c} {v:6.1%}" for c, v in top))
    if not preds:
        _err("Nothing could be predicted.")
        return 1
    return 0


def cmd_evaluate(args) -> int:
    from . import load

    run = load(args.run, device=args.device)
    result = run.evaluate(args.data, near_duplicates=not args.no_near_duplicates)
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return 0
    lo, hi = result["accuracy_ci95"]
    print(f"Accuracy: {result['accuracy']:.1%} (95% CI {lo:.1%}-{hi:.1%}, {result['correct']}/{result['n']})   "
          f"loss: {result['loss']:.4f}   macro-F1: {result['macro_f1']:.3f}")
    for c, v in result["per_class"].items():
        if v["support"]:
            print(f"  {c}: precision {v['precision']:.3f} recall {v['recall']:.3f} f1 {v['f1']:.3f} support {v['support']}")
    for p in result["skipped"]:
        _err(f"skipped {p['path']}: {p['reason']}")
    if result.get("seen_in_training"):
        _err(f"warning: {len(result['seen_in_training'])} photo(s) are byte-identical copies of training/validation "
             "photos.")
    near = result.get("near_duplicates_of_training") or []
    if near:
        _err(f"warning: {len(near)} photo(s) are near-identical copies (resized, re-encoded or re-cropped) of "
             f"training/validation photos, e.g. {near[0]['path']} ~ {near[0]['training_photo']}.")
    if "unseen" in result:
        u = result["unseen"]
        if u["n"]:
            lo, hi = u["accuracy_ci95"]
            print(f"Without the photos it has seen (copies): accuracy {u['accuracy']:.1%} (95% CI {lo:.1%}-{hi:.1%}, "
                  f"{u['correct']}/{u['n']})   loss: {u['loss']:.4f}")
        else:
            print("Every photo here is a copy of a training/validation photo: there is no held-out figure.")
    return 0


def cmd_compare(args) -> int:
    if not args.runs and args.data is not None and args.models is not None:
        _check_before_torch(args.data, [name.strip() for name in args.models.split(",")])
    from . import compare
    from .comparison import format_table

    settings: dict[str, Any] = {k: getattr(args, k) for k in ("epochs", "seed", "device", "precision", "budget")
                                if getattr(args, k) is not None}
    if args.val_as_test:
        settings["val_as_test"] = True
    if args.no_near_duplicates:
        settings["near_duplicates"] = False
    settings.update(_set_values(args.set))
    if args.runs:
        out = compare(runs=args.runs, out=args.out, on_stage=_err)
    else:
        if args.data is None or args.models is None:
            raise ValueError("diycnn compare needs DATA and --models a,b,... (or --runs RUN RUN ...).")
        progress = _Progress(args.epochs)
        out = compare(args.data, args.models, split=args.split, folds=args.folds, out=args.out,
                      callbacks=[progress.callback], on_stage=_err, **settings)
    result = json.loads((out / "comparison.json").read_text(encoding="utf-8"))
    print(format_table(result))
    print(f"\nComparison: {out / 'comparison.html'}")
    return 0


def cmd_explain(args) -> int:
    from . import explain

    results = explain(args.run, args.paths, class_name=args.class_name, out=args.out)
    for r in results:
        if "skipped" in r:
            _err(f"skipped {r['path']}: {r['skipped']}")
        else:
            print(f"{r['path']}: {r['class']} {r['probability']:.1%} (predicted {r['predicted']}) -> {r['file']}")
    return 0


def cmd_export(args) -> int:
    from . import export

    out = export(args.run, args.format, out=args.out, int8=args.int8, force=args.force)
    from .exports.runtime import read_export_info

    info = read_export_info(out)
    check = info["check"]
    print(f"Exported {args.format}: {out / info['model_file']}")
    print(f"Checked on {check['source']}: max probability difference from the run {check['max_abs_diff']:.2g} "
          f"(tolerance {check['tolerance']}), same label on {check['same_labels']}/{check['photos']}.")
    if "int8" in info:
        q = info["int8"]
        line = f"int8: {out / q['file']} ({q['size_bytes'] / 1e6:.1f} MB vs {q['fp32_size_bytes'] / 1e6:.1f} MB)"
        if "accuracy_change" in q:
            line += (f", test accuracy {q['test_accuracy_int8']:.1%} vs {q['test_accuracy_fp32']:.1%} "
                     f"({q['accuracy_change']:+.1%})")
        print(line)
    print(f"How to use it: {out / 'README.txt'}")
    return 0


def cmd_ui(args) -> int:
    from .webapp.server import serve

    serve(args.project, host=args.host, port=args.port)
    return 0


def cmd_backbones(args) -> int:
    from . import backbones

    rows = backbones()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(r["name"]) for r in rows) + 2
    print(f"{'backbone':<{width}} {'offline weights':<46} about")
    for r in rows:
        print(f"{r['name']:<{width}} {(r['offline'] or 'no (downloads when online)'):<46} {r['about']}")
    print("\nAny timm model name works with --backbone; --weights FILE gives weights for any of them.")
    return 0


def cmd_weights(args) -> int:
    from . import face_weights

    if args.action == "fetch":
        folder = face_weights(source=args.source, fetch=True)["folder"]
        print(f"Face weights ready in {folder}")
        return 0
    info = face_weights()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{info['name']}: {'present' if info['present'] else 'missing'} ({info['folder']})")
    if info["present"] and info["source"].get("tarball_sha256"):
        print(f"  checked: package tarball SHA-256 {info['source']['tarball_sha256']}")
    if not info["present"]:
        print(f"  {info['how_to_get']}")
    print("Used by the face-probe and face-finetune recipes (backbone face_recognition_net); the timm "
          "backbones' weights: diycnn backbones.")
    return 0 if info["present"] else 1


def cmd_cache(args) -> int:
    import time

    from .data.caches import KINDS, cache_entries, clear_cache, human_bytes
    from .io import cache_root

    root = cache_root()
    if args.action == "list":
        entries = cache_entries(root)
        if args.json:
            print(json.dumps({"root": str(root), "entries": [e.to_dict() for e in entries]}, indent=2))
            return 0
        if not entries:
            print(f"The cache in {root} is empty.")
            return 0
        print(f"{'kind':<10} {'size':>9} {'files':>6}  {'last used':<16}  about")
        for e in entries:
            used = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.last_used))
            print(f"{e.kind:<10} {human_bytes(e.bytes):>9} {e.files:>6}  {used:<16}  {e.about}\n{'':<46}{e.path}")
        print(f"\n{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}, {human_bytes(sum(e.bytes for e in entries))}"
              f" in {root}. Free it with: diycnn cache clear [--older-than DAYS]")
        return 0
    if args.older_than is not None and args.older_than < 0:
        raise ValueError(f"--older-than must be 0 or more days, received {args.older_than}.")
    kinds = tuple(k for k in KINDS if getattr(args, k)) or KINDS
    removed, errors = clear_cache(kinds, args.older_than, root, dry_run=args.dry_run)
    for msg in errors:
        _err(msg)
    verb = "Would remove" if args.dry_run else "Removed"
    for e in removed:
        print(f"{verb} {e.kind}: {e.path} ({human_bytes(e.bytes)})")
    print(f"{verb} {len(removed)} entr{'y' if len(removed) == 1 else 'ies'}, "
          f"{human_bytes(sum(e.bytes for e in removed))}, from {root}.")
    return EXIT_ERROR if errors else 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .settings import DEVICES, PRECISIONS

    parser = argparse.ArgumentParser(prog="diycnn", description="Photo folders in, a classifier you can trust out.")
    parser.add_argument("--version", action="version", version=f"diycnn {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="more log output")
    sub = parser.add_subparsers(dest="command", required=True)

    def device_args(p):
        p.add_argument("--device", choices=DEVICES, default=None, help="default: auto (cuda if present)")

    def near_args(p):
        p.add_argument("--no-near-duplicates", action="store_true",
                       help="do not look for near-identical photos (resized, re-encoded, slightly cropped copies); "
                            "by default they are kept on one side of the split, and copies of training photos "
                            "are left out of evaluation")

    p = sub.add_parser("demo", help="train the blog's model on the bundled face/non-face photos (no network)")
    p.add_argument("--out", help="output folder (default: runs/demo, numbered)")
    p.add_argument("--epochs", type=int, default=None, help="default: 12")
    p.add_argument("--precision", choices=PRECISIONS, default="auto")
    device_args(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("summary", help="Keras-style table of a model's layers and parameters")
    p.add_argument("model", help="built-in name (seed-cnn) or a .yaml/.json spec")
    p.add_argument("--classes", type=int, default=2, help="number of classes (default 2)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("train", help="train a model on a photo folder", formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Train a model on a photo folder (one sub-folder per class) and write a run\n"
                                   "directory with the model, its metrics and an HTML report.",
                       epilog="recipes:\n" + "\n".join(f"  {n:<14} {g['about']}" for n, g in RECIPE_GUIDE.items())
                              + "\n\nexamples:\n"
                                "  diycnn train photos                          # auto: picks a recipe for you\n"
                                "  diycnn train photos --model face-probe       # telling people apart\n"
                                "  diycnn train photos --model seed-cnn --epochs 50 --batch-size 16\n"
                                "  diycnn train photos --model tm --split runs/photos-seed-cnn/split.json\n"
                                "  diycnn train --resume runs/photos-seed-cnn  # after Ctrl-C")
    p.add_argument("data", nargs="?", help="DATA/<class>/* or DATA/{train,val,test}/<class>/*")
    p.add_argument("--model", default=None,
                   help="auto (default: looks for faces, then tries the recipes within --budget, keeps the best "
                        "by validation loss), " + ", ".join(RECIPE_NAMES) + ", or a .yaml/.json spec")
    p.add_argument("--epochs", type=int, help="passes over the training photos; " + recipe_defaults_help("epochs"))
    p.add_argument("--batch-size", type=int, help="photos per step; " + recipe_defaults_help("batch_size"))
    p.add_argument("--lr", type=float, help="learning rate; " + recipe_defaults_help("lr"))
    p.add_argument("--seed", type=int, help="seed of the split, the weights and the shuffling (default 0): "
                                            "the same seed, data and machine give the same model")
    p.add_argument("--val-split", type=float, help="fraction of each class for validation (default 0.15)")
    p.add_argument("--test-split", type=float, help="fraction of each class held out for the test (default 0.15)")
    p.add_argument("--patience", type=int, help="stop after N epochs without a better val loss and keep the best "
                                                "weights; " + recipe_defaults_help("patience"))
    p.add_argument("--precision", choices=PRECISIONS, help="default: auto (bf16 where the CPU or GPU has it, "
                                                           "else fp32)")
    device_args(p)
    p.add_argument("--backbone", help="timm backbone for tm/linear-probe/finetune (default tf_efficientnet_lite0)")
    p.add_argument("--weights", help="pretrained backbone weights file (.safetensors or state-dict .pth)")
    p.add_argument("--tta", action="store_true", help="test-time augmentation (average with the mirrored photo)")
    p.add_argument("--budget", type=float, help="minutes for --model auto (default 20)")
    p.add_argument("--max-minutes", type=float, help="stop training after this long, keeping the best/last weights")
    p.add_argument("--crop", choices=["faces"], help="crop the largest face before training and prediction")
    p.add_argument("--no-face", choices=["keep", "skip"], help="with --crop faces: photos without a face (default keep)")
    p.add_argument("--val-as-test", action="store_true",
                   help="with train/val folders: test on the given val folder (val carved from train)")
    near_args(p)
    p.add_argument("--suspects", choices=["on", "off"],
                   help="list photos whose label looks wrong, from 5-fold out-of-fold predictions (default: on for "
                        "recipes on cached features -- tm, linear-probe, face-probe; off for the others)")
    p.add_argument("--cv", choices=["on", "off"],
                   help="also estimate accuracy by 5-fold cross-validation over all photos (default: on for recipes "
                        "on cached features when the test split has fewer than 30 photos; the others: use "
                        "diycnn compare --folds)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="any other setting, e.g. --set label_smoothing=0.05 --set freeze_fraction=0.3")
    p.add_argument("--split", help="reuse a split.json (compare models on the same photos)")
    p.add_argument("--config", help="YAML/JSON file of settings (flags override it)")
    p.add_argument("--out", help="run directory (default runs/<data>-<model>, numbered)")
    p.add_argument("--resume", metavar="RUN", help="continue an interrupted run")
    p.add_argument("--devices", type=int, metavar="N",
                   help="train with N processes (torchrun + DistributedDataParallel; gloo on CPUs, NCCL on GPUs); "
                        "--batch-size is the global batch")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("backbones", help="list pretrained backbones and whether their weights are here offline")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_backbones)

    p = sub.add_parser("weights", help="the face-recognition weights (npm package @vladmandic/face-api): "
                                       "present or missing, and fetch them",
                       description="Without arguments: say whether the face weights are installed and how to get "
                                   "them. 'fetch' downloads the pinned package (needs npm and the npm registry) "
                                   "and checks its SHA-256; 'fetch --from PATH' installs it from the package "
                                   "tarball or its model/ folder instead (no network).")
    p.add_argument("action", nargs="?", choices=["list", "fetch"], default="list", help="default: list")
    p.add_argument("--from", dest="source", metavar="PATH",
                   help="fetch: the package tarball (face-api-1.7.15.tgz) or its model/ folder")
    p.add_argument("--json", action="store_true", help="list: machine-readable")
    p.set_defaults(func=cmd_weights)

    p = sub.add_parser("predict", help="classify photos with a trained run or an ONNX export")
    p.add_argument("run", help="run directory, or an ONNX export folder (predicts without torch)")
    p.add_argument("paths", nargs="+", help="files, folders or glob patterns")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true")
    fmt.add_argument("--csv", action="store_true")
    p.add_argument("--top-k", type=int, default=None)
    device_args(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("compare", help="train several models on one split and compare them (McNemar, galleries, "
                                       "Grad-CAM)")
    p.add_argument("data", nargs="?", help="DATA folder (omit with --runs)")
    p.add_argument("--models", help="comma-separated recipes or spec files, e.g. seed-cnn,seed-cnn-plus,tm,finetune")
    p.add_argument("--runs", nargs="+", metavar="RUN", help="compare already-trained runs (same split) instead")
    p.add_argument("--split", help="reuse a split.json for every model")
    p.add_argument("--folds", type=int, help="stratified K-fold: mean ± std and a paired test across folds")
    p.add_argument("--epochs", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--budget", type=float, help="minutes for an 'auto' model")
    p.add_argument("--precision", choices=PRECISIONS)
    device_args(p)
    p.add_argument("--val-as-test", action="store_true", help="with train/val folders: test on the given val folder")
    near_args(p)
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="a training setting for every model")
    p.add_argument("--out", help="comparison folder (default runs/<data>-compare, numbered)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("explain", help="Grad-CAM heatmaps: where the model looked")
    p.add_argument("run", help="run directory")
    p.add_argument("paths", nargs="+", help="photos, folders or glob patterns")
    p.add_argument("--class", dest="class_name", help="explain this class (default: the predicted one)")
    p.add_argument("--out", help="folder for the overlays (default RUN/explain)")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("export", help="export a run (ONNX, TorchScript, Keras, TensorFlow.js, Teachable Machine "
                                      "files), checked to predict the same")
    p.add_argument("run", help="run directory")
    p.add_argument("--format", default="onnx", choices=EXPORT_FORMATS,
                   help="onnx (default); torchscript; keras (Keras-style spec models); tfjs (TensorFlow.js "
                        "layers model: spec models, EfficientNet-Lite and face runs; checked in TF.js under "
                        "Node.js); tm (Teachable Machine's format for tmImage.load: the TF.js model taking TM's "
                        "pixels + metadata.json; ONNX + TM's files for runs TF.js cannot carry)")
    p.add_argument("--out", help="export folder (default RUN/export-FORMAT)")
    p.add_argument("--int8", action="store_true", help="ONNX: also write an int8 model and report its accuracy")
    p.add_argument("--force", action="store_true", help="replace an existing export folder")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("evaluate", help="score a run on a labelled photo folder")
    p.add_argument("run", help="run directory (or ONNX export folder)")
    p.add_argument("data", help="DATA/<class>/*")
    p.add_argument("--json", action="store_true")
    device_args(p)
    near_args(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("ui", help="local web app: classes, uploads, webcam, training, live preview, export")
    p.add_argument("--project", default="diycnn-project",
                   help="project folder: one sub-folder of photos per class (created if missing; default "
                        "./diycnn-project); the app's runs go in its hidden .diycnn/ folder")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="default 7860")
    p.set_defaults(func=cmd_ui)

    p = sub.add_parser("cache", help="list or clear diycnn's cache (decoded photos, backbone features, scans)",
                       description="The cache folder is DIYCNN_CACHE (default ~/.cache/diycnn). Its entries are "
                                   "safe to delete: a later run recomputes what it needs.")
    p.add_argument("action", nargs="?", choices=["list", "clear"], default="list", help="default: list")
    p.add_argument("--features", action="store_true", help="clear: only backbone feature caches")
    p.add_argument("--decoded", action="store_true", help="clear: only decoded-photo files")
    p.add_argument("--scan", action="store_true", help="clear: only scan records (the next scan reads every file)")
    p.add_argument("--older-than", type=float, default=None, metavar="DAYS",
                   help="clear: only entries last used more than DAYS days ago")
    p.add_argument("--dry-run", action="store_true", help="clear: say what would go, delete nothing")
    p.add_argument("--json", action="store_true", help="list: machine-readable")
    p.set_defaults(func=cmd_cache)
    return parser


HUGE_PAGE_COMMANDS = ("train", "compare", "predict", "evaluate", "demo")


def _ask_for_huge_pages() -> None:
    """Large CPU tensors on 2 MB pages for the commands that train or predict: PyTorch reads
    THP_MEM_ALLOC_ENABLE once, at its first large allocation, so it is set here, before any
    tensor (training/device.py:reuse_freed_memory says why: page faults on the blog model's
    150 MB activations). Never at `import diycnn`; DIYCNN_MALLOC=system opts out."""
    if os.environ.get("DIYCNN_MALLOC") != "system":
        os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")


def main(argv: list[str] | None = None) -> int:
    """Entry point for `diycnn` and `python -m diycnn`; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if getattr(args, "device", None) is None and "device" in args:
        args.device = "auto" if args.command in ("predict", "evaluate", "demo") else None
    if args.command in HUGE_PAGE_COMMANDS:
        _ask_for_huge_pages()
    if args.command == "demo" and args.epochs is None:
        from .demo import DEMO_EPOCHS

        args.epochs = DEMO_EPOCHS
    try:
        return args.func(args)
    except KeyboardInterrupt as exc:
        _err(f"\n{exc}" if str(exc) else "\nInterrupted.")
        return EXIT_INTERRUPTED
    except (ValueError, TypeError, OSError) as exc:  # OSError: missing, existing, unwritable, disk full
        if args.verbose:
            raise
        _err(f"error: {exc.strerror if isinstance(exc, OSError) and exc.strerror and not exc.filename else exc}")
        return EXIT_ERROR
