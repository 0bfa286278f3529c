"""Learning curves and confusion matrices as PNG bytes (matplotlib, no display needed)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


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
