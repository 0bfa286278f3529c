"""Over-fitting, said in plain words: validation loss rising for epochs while training loss falls.

The blog's author noted that loss matters as much as accuracy; on 15 photos a class the curves
usually show why: the training loss goes to zero while the validation loss, after a few epochs,
climbs. That is the model memorising its training photos, and more epochs make it worse.
"""

from __future__ import annotations

from typing import Any

from ..models.registry import PRETRAINED_RECIPES

RISING_EPOCHS = 3  # epochs after the best validation loss before it counts
RISE = 1.10  # the final validation loss at least 10% above the best


def what_to_try(model: str | None, app: bool = False) -> str:
    """More photos always; a pretrained recipe when this was not one; face features for faces.
    app: in the web app's words (its Recipe list and Advanced fields), not command-line flags."""
    tips = ["more photos per class"]
    if model not in PRETRAINED_RECIPES:
        tips.append("a pretrained recipe (auto, tm or linear-probe in Recipe)" if app
                    else "a pretrained recipe (tm, linear-probe)")
    if not (model or "").startswith("face-"):
        tips.append("the face-probe recipe if the classes are people" if app
                    else "--model face-probe if the classes are people")
    tips.append("fewer Epochs (under Advanced)" if app else "fewer epochs")
    return ", ".join(tips[:-1]) + " or " + tips[-1]


def overfitting(history: list[dict[str, Any]], kept_best: bool, model: str | None = None) -> dict[str, Any] | None:
    """None, or what happened and what to try when validation loss rose for at least
    RISING_EPOCHS epochs after its minimum (ending RISE times above it) while training loss fell.

    kept_best: whether the run restored its best-by-validation weights (early stopping);
    model: the recipe, so that the advice does not suggest the one just used."""
    val = [float(h["val_loss"]) for h in history]
    train = [float(h["loss"]) for h in history]
    if len(val) < RISING_EPOCHS + 1:
        return None
    best = min(range(len(val)), key=val.__getitem__)
    after = len(val) - 1 - best
    if after < RISING_EPOCHS or val[-1] < val[best] * RISE or train[-1] >= train[best]:
        return None
    what = (f"Over-fitting: validation loss was lowest at epoch {best + 1} ({val[best]:.4f}) and rose over the "
            f"{after} epochs after it (to {val[-1]:.4f}) while training loss kept falling ({train[best]:.4f} -> "
            f"{train[-1]:.4f}): the model is memorising its training photos.")
    if kept_best:
        cli_kept = app_kept = f"diycnn kept the weights of epoch {best + 1}, the best by validation loss."
    else:
        cli_kept = (f"The final weights were kept; --patience {RISING_EPOCHS} would stop early and keep epoch "
                    f"{best + 1}'s.")
        app_kept = f"The final weights were kept; Epochs {best + 1} (under Advanced) would stop there."
    message = f"{what} {cli_kept} To try: {what_to_try(model)}."
    app_message = f"{what} {app_kept} To try: {what_to_try(model, app=True)}."
    return {"best_epoch": best + 1, "best_val_loss": val[best], "final_val_loss": val[-1], "epochs_rising": after,
            "kept_best": kept_best, "message": message, "app_message": app_message}
