"""What the commands share: messages on stderr, the training progress and epoch lines, the result
of a run, --set values, the early checks that answer before PyTorch loads, and common flags."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import sys
from typing import Any

from ..settings import DEVICES, PRECISIONS, check_model_name

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


def err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# Control characters other than newline, carriage return (progress bars) and tab: ESC starts the
# sequences that move the cursor, recolour, retitle the terminal or write to the clipboard (OSC 52).
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


class TerminalSafe(io.TextIOBase):
    """A text stream that replaces control characters with '?' before they reach the terminal: class
    and file names come from folders someone else made, and a name holding ESC ] ... BEL would
    otherwise act on the user's terminal when printed. diycnn's own output needs none of them."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(_CONTROL.sub("?", text))
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    @property
    def encoding(self):
        return getattr(self._stream, "encoding", "utf-8")

    def __getattr__(self, name):
        return getattr(self._stream, name)


@contextlib.contextmanager
def terminal_safe_output():
    """sys.stdout and sys.stderr as TerminalSafe streams for the duration of a command."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = TerminalSafe(saved[0]), TerminalSafe(saved[1])
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


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


class Progress:
    """Training progress on stderr: in a terminal, a batch bar during each epoch that gives way to
    one compact line per epoch; piped or redirected, only the epoch lines (no carriage returns)."""

    def __init__(self, epochs: int | None = None, stream=None):
        from ..training.trainer import Callback

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


def print_result(run) -> None:
    m = run.metrics
    lo, hi = m["test_accuracy_ci95"]
    print(f"\nTest accuracy: {m['test_accuracy']:.1%}  (95% CI {lo:.1%}-{hi:.1%}, "
          f"{m['test_correct']}/{m['counts']['test']} photos)   test loss: {m['test_loss']:.4f}")
    cv = m.get("cross_validation") or {}
    if cv.get("checked"):
        from ..training.crossval import CV_BELOW, describe  # torch is loaded by now: training ran

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
        print(f"\nLeft out: {count(len(m['skipped']), 'unusable file')}, {count(len(m['duplicates']), 'duplicate')}:")
        for p in (m["skipped"] + m["duplicates"])[:10]:
            print(f"  {p['path']}: {p['reason']}")
        extra = len(m["skipped"]) + len(m["duplicates"]) - 10
        if extra > 0:
            print(f"  ... and {extra} more (see metrics.json)")
    print_data_checks(m)
    print(f"\nRun directory: {run.dir}\nReport: {run.dir / 'report.html'}")


def count(n: int, noun: str) -> str:
    """'1 duplicate', '2 duplicates'."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def print_data_checks(m: dict) -> None:
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


def set_values(items: list[str] | None) -> dict[str, Any]:
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


def check_before_torch(data, models: list[str]) -> None:
    """Wrong model names and data paths, answered before PyTorch loads (seconds)."""
    from ..data.scan import check_data_folder

    for name in models:
        check_model_name(name)
    check_data_folder(data)


def device_args(p, precision: bool = False) -> None:
    p.add_argument("--device", choices=DEVICES, default=None, help="default: auto (cuda if present)")
    if precision:
        p.add_argument("--precision", choices=PRECISIONS, default=None,
                       help="default: fp32, which the run's exports give too; bf16 is faster where the CPU has "
                            "it, but its probabilities differ by up to a few points")


def near_args(p) -> None:
    p.add_argument("--no-near-duplicates", action="store_true",
                   help="do not look for near-identical photos (resized, re-encoded, slightly cropped copies); "
                        "by default they are kept on one side of the split, and copies of training photos "
                        "are left out of evaluation")
