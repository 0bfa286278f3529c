"""What the commands share: messages on stderr, the training progress and epoch lines, the result
of a run, --set values, the early checks that answer before PyTorch loads, and common flags."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import sys
import textwrap
from typing import Any

from ..models.registry import check_model_name
from ..settings import DEVICES, PRECISIONS

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


def err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# Control characters other than newline, carriage return (progress bars) and tab: ESC starts the
# sequences that move the cursor, recolour, retitle the terminal or write to the clipboard (OSC 52).
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


ONE_LINE = ("error:",)  # lines never folded


class TerminalSafe(io.TextIOBase):
    """A text stream that replaces control characters with '?' before they reach the terminal: class
    and file names come from folders someone else made, and a name holding ESC ] ... BEL would
    otherwise act on the user's terminal when printed. diycnn's own output needs none of them.

    With `wrap`, whole lines longer than the terminal (COLUMNS, else 80 where it cannot be asked)
    are folded at spaces, continuation lines indented two more: a person reads every line without
    scrolling sideways. Lines ended by a carriage return (progress bars, which size themselves)
    are passed as they are, and so are error lines: an error is one line, whole, to read, search
    for and copy (it names the file and the fix, however long the path)."""

    def __init__(self, stream, wrap: bool = False):
        self._stream = stream
        self._wrap = wrap
        self._line = ""  # the unfinished line, when wrapping

    def write(self, text: str) -> int:
        clean = _CONTROL.sub("?", text)
        if not self._wrap:
            self._stream.write(clean)
            return len(text)
        self._line += clean
        while True:
            cut = min((i for i in (self._line.find("\n"), self._line.find("\r")) if i >= 0), default=-1)
            if cut < 0:
                break
            line, end, self._line = self._line[:cut], self._line[cut], self._line[cut + 1:]
            whole = end != "\n" or line.startswith(ONE_LINE)
            self._stream.write((line if whole else fold(line, output_width())) + end)
        return len(text)

    def flush(self) -> None:
        if self._line:  # an unfinished line (a prompt, a bar) goes out as it is
            self._stream.write(self._line)
            self._line = ""
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


def output_width() -> int:
    """Columns a line may take: the terminal's (COLUMNS first), 80 when there is no terminal."""
    return max(40, shutil.get_terminal_size((80, 24)).columns)


def fold(line: str, width: int) -> str:
    """`line` folded to `width` columns at spaces, keeping its indentation; continuation lines are
    indented two more. A word longer than a line (a long path) stays whole, to be copied."""
    if len(line) <= width:
        return line
    if not line.strip():
        return line[:width]
    indent = line[:len(line) - len(line.lstrip(" "))]
    return "\n".join(textwrap.wrap(line, width, subsequent_indent=indent + "  ", break_on_hyphens=False,
                                    break_long_words=False))


@contextlib.contextmanager
def terminal_safe_output(wrap_stdout: bool = False):
    """sys.stdout and sys.stderr as TerminalSafe streams for the duration of a command; messages
    (stderr) are always folded to the terminal's width, stdout only where it is meant for people
    (never --json or --csv output)."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = TerminalSafe(saved[0], wrap=wrap_stdout), TerminalSafe(saved[1], wrap=True)
    try:
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (BrokenPipeError, ValueError):  # the reader went away (| head), or the stream is closed
                pass
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
    """Training progress on stderr. In a terminal, a batch bar during each epoch gives way to one
    compact line per epoch. Piped or redirected, three epoch lines per training (the first, the
    middle one and the last). A brief training (a head on cached
    features: hundreds of epochs in seconds) prints no epoch lines at all. Every training ends
    with one line: epochs run, the best epoch and the time."""

    def __init__(self, epochs: int | None = None, stream=None):
        from ..training.trainer import Callback  # noqa: PLC0415 (lazy: loads torch)

        self.epochs = epochs
        self.bar = None
        self.seconds: list[float] = []
        self.best: tuple[float, int, dict] | None = None  # (val_loss, epoch, logs)
        self.brief = False
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        outer = self

        class Hooks(Callback):
            def on_train_begin(self, epochs, start_epoch):
                outer.epochs, outer.seconds, outer.best, outer.brief = epochs, [], None, self.brief

            def on_epoch_begin(self, epoch, num_batches, start_batch):
                if not outer.tty or outer.brief:
                    return
                from tqdm import tqdm  # noqa: PLC0415 (lazy: the CLI answers --help and usage errors before the library loads)

                total = f"/{outer.epochs}" if outer.epochs else ""
                outer.bar = tqdm(total=num_batches, initial=start_batch, desc=f"Epoch {epoch + 1}{total}",
                                 unit="batch", file=outer.stream, dynamic_ncols=True, leave=False)

            def on_batch_end(self, batch, logs):
                if outer.bar is not None:
                    outer.bar.set_postfix_str(f"loss {logs['loss']:.4f} acc {logs['accuracy']:.3f}", refresh=False)
                    outer.bar.update(1)

            def on_epoch_end(self, epoch, logs):
                outer.seconds.append(logs["seconds"])
                if outer.best is None or logs["val_loss"] < outer.best[0]:
                    outer.best = (logs["val_loss"], epoch, dict(logs))
                if outer.bar is not None:
                    outer.bar.close()
                    outer.bar = None
                if not outer.shows(epoch):
                    return
                left = None
                if outer.epochs and epoch + 1 < outer.epochs:
                    left = (outer.epochs - epoch - 1) * sum(outer.seconds) / len(outer.seconds)
                print(epoch_line(epoch, outer.epochs, logs, left, output_width()), file=outer.stream, flush=True)

            def on_train_end(self, interrupted):
                if outer.bar is not None:
                    outer.bar.close()
                    outer.bar = None
                if outer.best is not None and not interrupted:
                    print(outer.summary(), file=outer.stream, flush=True)

        self.callback = Hooks()

    def shows(self, epoch: int) -> bool:
        if self.brief:
            return False
        if self.tty or not self.epochs:
            return True
        step = max(1, -(-self.epochs // 2))
        return epoch == 0 or (epoch + 1) % step == 0 or epoch + 1 == self.epochs

    def summary(self) -> str:
        """'Trained 200 epochs in 3 s; best epoch 187: val_loss 0.2768 val_acc 0.944'."""
        val_loss, epoch, logs = self.best
        total = sum(self.seconds)
        took = f"{total:.0f} s" if total >= 1 else f"{total:.1f} s"
        return (f"Trained {count(len(self.seconds), 'epoch')} in {took}; best epoch {epoch + 1}: "
                f"val_loss {val_loss:.4f} val_acc {logs['val_accuracy']:.3f}")


TABLE_CLASSES = 6  # up to this many classes, the terminal gets the per-class table and confusion matrix


def print_result(run) -> None:
    """What a run scored, leading with the figure to trust (cross-validated where the test split is
    too small), then the auto contest in one line, time, the per-class figures (the weakest
    classes only when there are many: the report has them all) and data problems."""
    from ..training.crossval import CV_BELOW, describe  # noqa: PLC0415 (torch, loaded by now: training ran)

    m = run.metrics
    test = f"{m.test_accuracy:.1%} ({m.ci95_text + ', ' if m.ci95_text else ''}{m.test_correct}/{m.counts['test']} photos)"
    test_loss = f", loss {m.test_loss:.3f}"
    cv = m.cross_validation or {}
    auto = m.auto or {}
    print()
    if auto:
        trained = [c for c in auto.get("candidates", []) if c.get("status") == "trained"]
        sel = auto.get("selection") or {}
        verdict = ""
        if "p_value" in sel:
            verdict = (f" (clearly ahead of {sel['runner_up']})" if sel["clear"]
                       else f" (within noise of {sel['runner_up']})")
        print(f"Model: {auto['winner']}, best of {count(len(trained), 'candidate')}{verdict}")
    else:
        print(f"Model: {run.info.get('model', {}).get('name', 'model')}")
    if cv.get("checked") and m.counts["test"] < CV_BELOW:
        print(f"Accuracy to trust, cross-validated: {describe(cv)}")
        print(f"Held-out test: {test}; too few to trust alone")
    else:
        print(f"Test accuracy: {test}{test_loss}")
        if cv.get("checked"):
            print(f"Cross-validated: {describe(cv)}")
    cal = m.calibration or {}
    if cal.get("calibrated"):
        print(f"Calibrated: temperature {cal['temperature']:.2f} (fitted on {cal['fitted_on']}); expected "
              f"calibration error on the test photos {cal['test_ece_before']:.3f} -> {cal['test_ece_after']:.3f}")
    elif cal:
        print(f"Not calibrated: {cal['why']}")
    unknown = m.unknown or {}
    if unknown.get("enabled"):
        print(f"None of these: above score {unknown['threshold']:.3f} a photo is unknown; "
              f"{unknown['test_known_rejected']:.0%} of the test photos were (target at most "
              f"{unknown['target_known_rejected']:.0%})")
    if m.overfitting:
        print(f"\n{m['overfitting']['message']}\n")
    took = auto.get("seconds", m.train_seconds)
    print(f"Trained in {minutes(took)} ({m['device']}, {m['precision']})")
    names = m.class_names
    width = min(max(len(c) for c in names), 24) + 2
    rows = list(m.per_class.items())
    if len(names) > TABLE_CLASSES:
        rows = sorted(rows, key=lambda kv: (kv[1]["recall"], kv[1]["f1"]))[:3]
        print(f"\nWeakest of {len(names)} classes (all of them, and the confusion matrix, in the report):")
    print(f"\n{'class':<{width}} precision  recall      f1  support")
    for c, v in rows:
        print(f"{c[:width - 2]:<{width}} {v['precision']:9.3f} {v['recall']:7.3f} {v['f1']:7.3f} {v['support']:8d}")
    if len(names) <= TABLE_CLASSES:
        print("\nConfusion matrix (rows: true, columns: predicted)")
        print(" " * width + " ".join(f"{c[:8]:>8}" for c in names))
        for c, row in zip(names, m.confusion_matrix):
            print(f"{c[:width - 2]:<{width}}" + " ".join(f"{v:8d}" for v in row))
    if m.skipped or m.duplicates:
        print(f"\nLeft out: {count(len(m['skipped']), 'unusable file')}, {count(len(m['duplicates']), 'duplicate')} "
              "(all listed in the report)" + (":" if m.skipped else ""))
        for p in m.skipped[:3]:
            print(f"  {p['path']}: {p['reason']}")
        if len(m.skipped) > 3:
            print(f"  ... and {len(m['skipped']) - 3} more")
    print_data_checks(m)
    print(f"\nRun directory: {run.dir}\nReport: {run.dir / 'report.html'}")


def minutes(seconds: float) -> str:
    """'42 s', '3 min 5 s'."""
    seconds = round(seconds)
    return f"{seconds} s" if seconds < 60 else f"{seconds // 60} min {seconds % 60} s"


def count(n: int, noun: str) -> str:
    """'1 duplicate', '2 duplicates'."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def print_data_checks(m: dict) -> None:
    """Near-duplicates left out or in conflict, and the first suspect labels."""
    near = m.near_duplicates or {}
    left, conflicts = near.get("left_out") or [], near.get("label_conflicts") or []
    if left:
        print(f"\nLeft out of evaluation: {len(left)} near-identical cop{'y' if len(left) == 1 else 'ies'} "
              "of photos in an earlier split:")
        for item in left[:3]:
            print(f"  {item['path']} ~ {item['copy_of']}")
    if conflicts:
        print(f"\nLikely label conflicts (the same shot in two classes): {len(conflicts)}")
        for item in conflicts[:3]:
            print(f"  {item['a']} ~ {item['b']}")
    suspects = m.suspect_labels or {}
    if suspects.get("too_weak"):
        print(f"\nSuspect labels: none listed; {suspects['why']}.")
    if suspects.get("items"):
        print(f"\nSuspect labels: {suspects['count']} photo(s) look like another class (out-of-fold predictions):")
        for item in suspects["items"][:3]:
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
    from ..data.scan import check_data_folder  # noqa: PLC0415 (lazy: the CLI answers --help and usage errors before the library loads)

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
