"""`diycnn train`: train a model on a photo folder (or resume one; --devices N starts torchrun)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from ..models.registry import CACHED_FEATURE_RECIPES, RECIPE_GUIDE, RECIPE_NAMES, listing, recipe_defaults_help
from ..settings import (
    DEFAULT_BUDGET_MINUTES,
    DEFAULT_MODEL,
    DEFAULT_TEST_SPLIT,
    DEFAULT_VAL_SPLIT,
    PRECISIONS,
    TrainSettings,
    read_config_file,
)
from .common import Progress, check_before_torch, device_args, err, near_args, print_result, set_values


def add_parser(sub) -> Any:
    p = sub.add_parser("train", help="train a model on a photo folder", formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Train a model on a photo folder (one sub-folder per class) and write a run\n"
                                   "directory with the model, its metrics and an HTML report.",
                       epilog="recipes:\n" + "\n".join(textwrap.fill(f"  {n:<14} {g['about']}", 78, subsequent_indent=" " * 17)
                                                   for n, g in RECIPE_GUIDE.items())
                              + "\n\nexamples:\n"
                                "  diycnn train photos                          # auto: picks a recipe for you\n"
                                "  diycnn train photos --model face-probe       # telling people apart\n"
                                "  diycnn train photos --model seed-cnn --epochs 50 --batch-size 16\n"
                                "  diycnn train photos --model tm --split runs/photos-seed-cnn/split.json\n"
                                "  diycnn train --resume runs/photos-seed-cnn  # after Ctrl-C")
    p.add_argument("data", nargs="?", help="DATA/<class>/* or DATA/{train,val,test}/<class>/*")
    p.add_argument("--model", default=None,
                   help=f"{DEFAULT_MODEL} (default: looks for faces, then tries the recipes within --budget, keeps the best "
                        "by validation loss), " + ", ".join(RECIPE_NAMES) + ", or a .yaml/.json spec")
    p.add_argument("--epochs", type=int, help="passes over the training photos; " + recipe_defaults_help("epochs"))
    p.add_argument("--batch-size", type=int, help="photos per step; " + recipe_defaults_help("batch_size"))
    p.add_argument("--lr", type=float, help="learning rate; " + recipe_defaults_help("lr"))
    p.add_argument("--seed", type=int, help="seed of the split, the weights and the shuffling (default 0): "
                                            "the same seed, data and machine give the same model")
    p.add_argument("--val-split", type=float, help=f"fraction of each class for validation (default {DEFAULT_VAL_SPLIT})")
    p.add_argument("--test-split", type=float, help=f"fraction of each class held out for the test (default {DEFAULT_TEST_SPLIT})")
    p.add_argument("--patience", type=int, help="stop after N epochs without a better val loss and keep the best "
                                                "weights; " + recipe_defaults_help("patience"))
    p.add_argument("--precision", choices=PRECISIONS, help="default: auto (bf16 where the CPU or GPU has it, "
                                                           "else fp32)")
    device_args(p)
    p.add_argument("--backbone", help="timm backbone for tm/linear-probe/finetune (default tf_efficientnet_lite0)")
    p.add_argument("--weights", help="pretrained backbone weights file (.safetensors or state-dict .pth)")
    p.add_argument("--tta", action="store_true", help="test-time augmentation (average with the mirrored photo)")
    p.add_argument("--budget", type=float, help=f"minutes for --model {DEFAULT_MODEL} (default {DEFAULT_BUDGET_MINUTES:g})")
    p.add_argument("--max-minutes", type=float, help="stop training after this long, keeping the best/last weights")
    p.add_argument("--crop", choices=["faces"], help="crop the largest face before training and prediction")
    p.add_argument("--no-face", choices=["keep", "skip"], help="with --crop faces: photos without a face (default keep)")
    p.add_argument("--val-as-test", action="store_true",
                   help="with train/val folders: test on the given val folder (val carved from train)")
    near_args(p)
    p.add_argument("--suspects", choices=["on", "off"],
                   help="list photos whose label looks wrong, from 5-fold out-of-fold predictions (default: on for "
                        f"recipes on cached features -- {listing(CACHED_FEATURE_RECIPES)}; off for the others)")
    p.add_argument("--cv", choices=["on", "off"],
                   help="also estimate accuracy by 5-fold cross-validation over all photos (default: on for recipes "
                        "on cached features when the test split has fewer than 30 photos; the others: use "
                        "diycnn compare --folds)")
    p.add_argument("--calibrate", choices=["on", "off"],
                   help="fit a temperature on held-out photos so that the probabilities mean what they say "
                        "(default on; it never changes the predicted class)")
    p.add_argument("--no-unknown", action="store_true",
                   help="always answer one of the classes (by default a photo far from every class is called "
                        "unknown, with its score)")
    p.add_argument("--unknown-folder", metavar="DIR",
                   help="photos of none of the classes (any layout; for a face run, other people): the run "
                        "compares each photo with them too, and calls more strangers unknown")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="any other setting, e.g. --set label_smoothing=0.05 --set freeze_fraction=0.3")
    p.add_argument("--split", help="reuse a split.json (compare models on the same photos)")
    p.add_argument("--config", help="YAML/JSON file of settings (flags override it)")
    p.add_argument("--out", help="run directory (default runs/<data>-<model>, numbered)")
    p.add_argument("--resume", metavar="RUN", help="continue an interrupted run")
    p.add_argument("--devices", type=int, metavar="N",
                   help="train with N processes (torchrun + DistributedDataParallel; gloo on CPUs, NCCL on GPUs); "
                        "--batch-size is the global batch")
    return p


def run(args) -> int:
    if args.resume is None and args.data is None:
        raise ValueError("diycnn train needs a DATA folder (or --resume RUN_DIR).")
    if args.resume is None:
        check_before_torch(args.data, [args.model] if args.model is not None else [])  # None: config's or auto
    from .. import train  # noqa: PLC0415 (lazy: the CLI answers --help and usage errors before the library loads)

    # every setting with a flag of its own name, when given (a flag not given is None, or False for a switch)
    overrides: dict[str, Any] = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainSettings)
                                 if f.name != "model" and getattr(args, f.name, None) not in (None, False)}
    if args.no_near_duplicates:
        overrides["near_duplicates"] = False
    if args.suspects is not None:
        overrides["suspects"] = args.suspects == "on"
    if args.cv is not None:
        overrides["cross_validate"] = args.cv == "on"
    if args.no_unknown:
        overrides["unknown"] = False
    if args.unknown_folder is not None:  # absolute: model.json keeps it for --resume from anywhere
        overrides["unknown_folder"] = str(Path(args.unknown_folder).resolve())
    if args.calibrate is not None:
        overrides["calibrate"] = args.calibrate == "on"
    overrides.update(set_values(args.set))
    model = args.model
    if model is None:  # a config file may name the model; otherwise auto

        model = (read_config_file(args.config).get("model") if args.config else None) or DEFAULT_MODEL
    if args.devices and args.devices > 1:
        return _launch_torchrun(args)
    from ..training import distributed  # noqa: PLC0415 (lazy: loads torch)

    main_process = int(os.environ.get("RANK", "0")) == 0
    progress = Progress(args.epochs)
    try:
        run = train(args.data, model=model, out=args.out, split=args.split, resume=args.resume,
                    config=args.config, callbacks=[progress.callback] if main_process else [],
                    on_stage=err if main_process else (lambda text: None),
                    **{k: v for k, v in overrides.items() if v is not None})
    finally:
        distributed.shutdown()
    if run is not None:  # None on the other processes under torchrun
        print_result(run)
    return 0


def _launch_torchrun(args) -> int:
    """`diycnn train --devices N ...` = `torchrun --standalone --nproc_per_node N -m diycnn train ...`."""

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
    err("Starting: " + " ".join(cmd[2:]).replace("torch.distributed.run", "torchrun", 1))
    return subprocess.call(cmd)
