"""`diycnn cache`: list or clear diycnn's cache."""

from __future__ import annotations

import json
import time
from typing import Any

from .common import EXIT_ERROR, err


def add_parser(sub) -> Any:
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
    return p


def run(args) -> int:

    from ..data.caches import KINDS, cache_entries, clear_cache, human_bytes  # noqa: PLC0415 (lazy: the CLI answers --help and usage errors before the library loads)
    from ..io import cache_root  # noqa: PLC0415 (lazy: the CLI answers --help and usage errors before the library loads)

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
        err(msg)
    verb = "Would remove" if args.dry_run else "Removed"
    for e in removed:
        print(f"{verb} {e.kind}: {e.path} ({human_bytes(e.bytes)})")
    print(f"{verb} {len(removed)} entr{'y' if len(removed) == 1 else 'ies'}, "
          f"{human_bytes(sum(e.bytes for e in removed))}, from {root}.")
    return EXIT_ERROR if errors else 0
