"""Learning curves, confusion matrices and reliability diagrams as PNG bytes (matplotlib, no display needed)."""

from __future__ import annotations

import functools
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


@functools.lru_cache(maxsize=1)
def _font_rc() -> dict:
    """DejaVu Sans, then installed Noto CJK fonts: matplotlib falls back glyph by glyph, so class
    names in Hangul, kana or hanzi draw as letters rather than empty boxes."""
    from matplotlib import font_manager  # noqa: PLC0415 (lazy: loads matplotlib)

    cjk = sorted({f.name for f in font_manager.fontManager.ttflist if f.name.startswith("Noto Sans CJK")})
    return {"font.family": ["DejaVu Sans", *cjk[:3]]}


def _fonts(fn):
    @functools.wraps(fn)
    def drawn(*args, **kwargs):
        with plt.rc_context(_font_rc()):
            return fn(*args, **kwargs)
    return drawn


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


@_fonts
def curves_png(history: list[dict[str, float]], title: str = "") -> bytes:
    """Accuracy and loss per epoch, train vs val (the blog's 'look at the loss too')."""
    epochs = [h["epoch"] for h in history]
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, name in ((ax_acc, "accuracy", "Accuracy"), (ax_loss, "loss", "Loss")):
        ax.plot(epochs, [h[key] for h in history], "o-", label=f"train {key}", markersize=3)
        ax.plot(epochs, [h[f"val_{key}"] for h in history], "s-", label=f"val {key}", markersize=3)
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend()
    ax_acc.set_ylim(-0.02, 1.02)
    if title:
        fig.suptitle(title)
    return _png(fig)


@_fonts
def confusion_png(matrix: list[list[int]], class_names: list[str], title: str = "Confusion matrix (test)") -> bytes:
    """Counts with row-normalised colours; rows are true classes."""
    cm = np.asarray(matrix)
    k = len(class_names)
    size = min(3 + 0.45 * k, 14)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm, dtype=float), where=rows > 0)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8 if k > 10 else 10,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(k), class_names, rotation=45 if k > 3 else 0, ha="right" if k > 3 else "center")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return _png(fig)


@_fonts
def reliability_png(before: list[dict], after: list[dict], bins: int, temperature: float | None) -> bytes:
    """Accuracy against confidence per confidence bin (evaluation/calibration.py's bins), without
    and with the run's temperature: on the diagonal, "84%" is right 84% of the time."""
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    ax.plot([0, 1], [0, 1], color="#999", lw=1, label="perfect calibration")
    curves = [("uncalibrated", before, "o--")]
    if temperature is not None:
        curves.append((f"temperature {temperature:.2f}", after, "s-"))
    for name, points, style in curves:
        sizes = [b["count"] for b in points]
        ax.plot([b["confidence"] for b in points], [b["accuracy"] for b in points], style, label=name, markersize=4)
        for b, n in zip(points, sizes):
            ax.annotate(str(n), (b["confidence"], b["accuracy"]), fontsize=6, color="#555",
                        xytext=(2, -8), textcoords="offset points")
    ax.set_xlim(min(1 / 2, *(b["low"] for b in before + after)) - 0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(f"confidence (top-class probability, {bins} bins)")
    ax.set_ylabel("accuracy")
    ax.set_title("Reliability (test split)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    return _png(fig)


@_fonts
def overlay_curves_png(histories: dict[str, list[dict[str, float]]]) -> bytes:
    """Every model's accuracy and loss curves on shared axes: solid validation, dashed training."""
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(12, 4.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, history) in enumerate(histories.items()):
        colour = colours[i % len(colours)]
        epochs = [h["epoch"] for h in history]
        for ax, key in ((ax_acc, "accuracy"), (ax_loss, "loss")):
            ax.plot(epochs, [h[key] for h in history], "--", color=colour, alpha=0.6, label=f"{name} train")
            ax.plot(epochs, [h[f"val_{key}"] for h in history], "-", color=colour, label=f"{name} val")
    for ax, title in ((ax_acc, "Accuracy"), (ax_loss, "Loss")):
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    ax_acc.set_ylim(-0.02, 1.02)
    ax_loss.legend(fontsize=8, loc="upper right")
    return _png(fig)


@_fonts
def confusions_png(matrices: dict[str, list[list[int]]], class_names: list[str]) -> bytes:
    """Confusion matrices side by side, one per model (rows: true class)."""
    k, m = len(class_names), len(matrices)
    side = min(2.5 + 0.35 * k, 8)
    fig, axes = plt.subplots(1, m, figsize=(side * m, side), squeeze=False)
    for ax, (name, matrix) in zip(axes[0], matrices.items()):
        cm = np.asarray(matrix)
        rows = cm.sum(axis=1, keepdims=True)
        norm = np.divide(cm, rows, out=np.zeros_like(cm, dtype=float), where=rows > 0)
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        if k <= 12:
            for i in range(k):
                for j in range(k):
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if norm[i, j] > 0.5 else "black")
        ax.set_xticks(range(k), class_names, rotation=90 if k > 3 else 0, fontsize=7 if k > 6 else 9)
        ax.set_yticks(range(k), class_names, fontsize=7 if k > 6 else 9)
        ax.set_xlabel("predicted")
        ax.set_title(name)
    axes[0][0].set_ylabel("true")
    return _png(fig)
