"""Command line: `diycnn COMMAND ...`. Each command is a module in commands/ that declares its
arguments (`add_parser`) beside the code that runs it through the public API (`run`); this
module assembles the parser and turns errors into one line and an exit status."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from . import __version__
from .commands import COMMANDS
from .commands.common import EXIT_ERROR, EXIT_INTERRUPTED, epoch_line, err, terminal_safe_output


def build_parser() -> argparse.ArgumentParser:

    parser = argparse.ArgumentParser(prog="diycnn", description="Photo folders in, a classifier you can trust out.")
    parser.add_argument("--version", action="version", version=f"diycnn {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="more log output")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        command = importlib.import_module(f".commands.{name}", __package__)
        command.add_parser(sub).set_defaults(func=command.run)
    return parser


HUGE_PAGE_COMMANDS = ("train", "compare", "predict", "evaluate", "demo")
PEOPLE_STDOUT = ("train", "compare", "demo")  # commands whose stdout is only ever read by people


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
    with terminal_safe_output(wrap_stdout=True):  # --help and usage errors are for people
        args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    # names from someone else's folders never reach the terminal raw; lines fit the terminal, on
    # stdout too where it is meant for people (not predict's --json or --csv)
    with terminal_safe_output(wrap_stdout=args.command in PEOPLE_STDOUT):
        return _run(args)


def _run(args) -> int:
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s" if args.verbose else "%(levelname)s: %(message)s")
    if getattr(args, "device", None) is None and "device" in args:
        args.device = "auto" if args.command in ("predict", "evaluate", "demo") else None
    if args.command in HUGE_PAGE_COMMANDS:
        _ask_for_huge_pages()
    if args.command == "demo" and args.epochs is None:
        from .demo import DEMO_EPOCHS  # noqa: PLC0415 (lazy: the CLI answers --help and usage errors before the library loads)

        args.epochs = DEMO_EPOCHS
    try:
        return args.func(args)
    except KeyboardInterrupt as exc:
        err(f"\n{exc}" if str(exc) else "\nInterrupted.")
        return EXIT_INTERRUPTED
    except (ValueError, TypeError, OSError) as exc:  # OSError: missing, existing, unwritable, disk full
        if args.verbose:
            raise
        err(f"error: {exc.strerror if isinstance(exc, OSError) and exc.strerror and not exc.filename else exc}")
        return EXIT_ERROR


__all__ = ["main", "build_parser", "epoch_line"]
