"""`diycnn summary`: a Keras-style table of a recipe's or spec's layers -- without PyTorch for the
spec models and the catalog's backbones (their figures are in catalog.BACKBONE_FACTS), so it
answers at once."""

from __future__ import annotations

from typing import Any, Callable

from .recipes import backbone_fact, get_recipe
from .sequential import Sequential, format_summary


def summary(model: str | Sequential = "seed-cnn", num_classes: int = 2,
            print_fn: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Keras-style summary of a built-in model, a spec file, or a Sequential.

    Returns the table as data (rows and parameter totals); prints it with `print_fn`
    unless that is None. For backbone recipes the table is the head on the backbone's features,
    and "backbone" gives the network below it (name, parameters, input, frozen or trained).

    Example:
        >>> diycnn.summary("seed-cnn")["total_params"]
        35900130
    """
    if isinstance(model, Sequential):
        return format_summary(model, print_fn=print_fn)
    recipe = get_recipe(model, num_classes)
    if recipe.kind != "backbone":
        return format_summary(recipe.spec, print_fn=print_fn)
    head = recipe.spec.count_params()
    total = backbone_fact(recipe.backbone, "params") + head
    h, w = recipe.preprocessing.output_size
    frozen = bool(recipe.defaults.get("frozen"))
    backbone = {"name": recipe.backbone, "params": total - head, "input_shape": [None, h, w, 3],
                "features": (recipe.spec.input_shape or [None])[-1], "frozen": frozen}
    if print_fn is not None:
        print_fn(f'Backbone: "{backbone["name"]}", {backbone["params"]:,} params, input (None, {h}, {w}, 3) -> '
                 f'{backbone["features"]} features; ' + ("frozen (its features are computed once and cached)"
                                                         if frozen else "trained with the head (fine-tuned)"))
    result = format_summary(recipe.spec, print_fn=print_fn)
    if print_fn is not None:
        print_fn(f" Backbone and head: {total:,} params, "
                 f"{head if frozen else total:,} trained")
    return {**result, "backbone": backbone, "total_with_backbone": total}
