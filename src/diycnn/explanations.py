"""Why did it decide? Grad-CAM heatmaps for spec models and timm backbones alike.

Grad-CAM (Selvaraju et al., 2017): the last feature map A_k before the network flattens or
pools it, weighted by the mean gradient of the class score over each channel,
ReLU(sum_k w_k A_k), upsampled to the photo. The target layer is found by running the model
once: the last module whose output is still an image-shaped (N, C, H, W) map.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .data.loader import decode_all
from .data.scan import find_images
from .io import atomic_write_bytes
from .report.html import data_uri
from .run import Run, slug

CHUNK = 16


def _target_layer(module, x):
    """Name of the last leaf module with a 4-D output of more than 1x1 pixels."""
    import torch  # noqa: PLC0415 (lazy: loads torch)

    seen: list[str] = []
    hooks = []
    for name, m in module.named_modules():
        if name and not list(m.children()):
            hooks.append(m.register_forward_hook(
                lambda mod, inp, out, name=name: seen.append(name)
                if torch.is_tensor(out) and out.dim() == 4 and out.shape[2] * out.shape[3] > 1 else None))
    try:
        with torch.no_grad():
            module(x[:1])
    finally:
        for h in hooks:
            h.remove()
    if not seen:
        raise ValueError("Grad-CAM needs a model with image-shaped feature maps; this one has none.")
    return seen[-1]


def _forward_keeping_map(module, layer, x):
    """(logits, the target layer's map) with the graph kept, to differentiate later."""
    import torch  # noqa: PLC0415 (lazy: loads torch)

    captured = {}

    def keep(mod, inp, out):
        if not out.requires_grad:  # frozen layers below it: the map is a leaf; differentiate from here
            out.requires_grad_(True)
        captured["act"] = out
        return out.clone()  # later in-place ops (ReLU(inplace=True)) change the clone, not the map we differentiate

    handle = layer.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            logits = module(x)
    finally:
        handle.remove()
    return logits, captured["act"]


def _cam(logits, act, classes, size):
    """Un-normalised Grad-CAM maps (N, H, W) of `classes`, upsampled to `size`."""
    import torch  # noqa: PLC0415 (lazy: loads torch)
    import torch.nn.functional as F  # noqa: PLC0415 (lazy: loads torch)

    (grads,) = torch.autograd.grad(logits.gather(1, classes[:, None]).sum(), act)
    cam = F.relu((grads.mean(dim=(2, 3), keepdim=True) * act.detach()).sum(dim=1, keepdim=True))
    return F.interpolate(cam, size=size, mode="bilinear", align_corners=False)[:, 0]


def gradcam(module, preprocessing, images_u8: np.ndarray, class_index: int | None = None,
            tta: bool = False) -> dict[str, Any]:
    """Heatmaps for decoded photos (N, H, W, 3) from `preprocessing.load`, for a classifier
    `module` that maps normalised (N, 3, H, W) photos to logits (a run's `.module`).

    Args:
        class_index: explain this class for every photo; None: each photo's predicted class.
        tta: the run predicts the average of each photo and its mirror image (test-time
            augmentation): then the predicted class and probabilities are that average's, and
            the map is the average of both passes' maps (the mirrored one mirrored back).

    Returns:
        {"cams": float (N, H, W) in [0, 1], "probs": (N, classes), "classes": explained class per
        photo, "layer": the target layer's name}
    """
    import torch  # noqa: PLC0415 (lazy: loads torch)

    module = module.to("cpu", dtype=torch.float32).eval()
    x = preprocessing.normalise(torch.from_numpy(np.ascontiguousarray(images_u8)))
    # A backbone that averages each face with its mirror inside its forward (the face network)
    # would run its layers twice per call: switch that off and explain both passes here instead
    # (the explained probabilities are then the mean of the two passes' probabilities).
    mirrored = [m for m in module.modules() if getattr(m, "mirror", None) is True]
    for m in mirrored:
        m.mirror = False
    try:
        return _gradcam(module, x, class_index, tta or bool(mirrored))
    finally:
        for m in mirrored:
            m.mirror = True


def _gradcam(module, x, class_index, tta: bool) -> dict[str, Any]:
    import torch  # noqa: PLC0415 (lazy: loads torch)

    layer_name = _target_layer(module, x)
    layer = module.get_submodule(layer_name)
    passes = [_forward_keeping_map(module, layer, v) for v in ([x, x.flip(3)] if tta else [x])]
    probs = sum(torch.softmax(logits.detach().float(), dim=1) for logits, _ in passes) / len(passes)
    classes = (torch.full((len(x),), class_index, dtype=torch.long) if class_index is not None
               else probs.argmax(1))
    cams = [_cam(logits, act, classes, x.shape[2:]) for logits, act in passes]
    cam = (cams[0] + cams[1].flip(2)) / 2 if tta else cams[0]
    top = cam.flatten(1).max(dim=1).values.clamp_min(1e-12)[:, None, None]
    return {"cams": (cam / top).numpy(), "probs": probs.numpy(), "classes": classes.numpy(),
            "layer": layer_name}


def overlay(image_u8: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The photo with the heatmap blended on top (jet colours), uint8 (H, W, 3)."""
    from matplotlib import colormaps  # noqa: PLC0415 (lazy: loads matplotlib)

    heat = colormaps["jet"](cam)[..., :3] * 255
    return np.clip((1 - alpha) * image_u8 + alpha * heat, 0, 255).astype(np.uint8)


def overlay_jpeg(image_u8: np.ndarray, cam: np.ndarray, size: int | None = None) -> bytes:

    im = Image.fromarray(overlay(image_u8, cam))
    if size:
        im.thumbnail((size, size))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def cam_samples(module, preprocessing, class_names: list[str], predictions: list[dict[str, Any]], data_root: Path,
                per_kind: int = 3, tta: bool = False) -> list[dict[str, Any]]:
    """Grad-CAM overlays (JPEG data URIs) for up to `per_kind` wrong and `per_kind` right test
    predictions ({"path" relative to data_root, "true", "predicted"}), for reports."""

    wrong = [p for p in predictions if p["predicted"] != p["true"]][:per_kind]
    right = [p for p in predictions if p["predicted"] == p["true"]][:per_kind]
    chosen = wrong + right
    images, ok, _ = decode_all([Path(data_root) / p["path"] for p in chosen], preprocessing)
    if not ok:
        return []
    result = gradcam(module, preprocessing, images, tta=tta)
    out = []
    for j, i in enumerate(ok):
        cls = int(result["classes"][j])
        out.append({"path": chosen[i]["path"], "true": chosen[i]["true"], "predicted": class_names[cls],
                    "probability": float(result["probs"][j, cls]),
                    "uri": data_uri(overlay_jpeg(images[j], result["cams"][j], 200), "image/jpeg")})
    return out


def explain(run_dir: str | Path, paths, class_name: str | None = None, out: str | Path | None = None,
            device: str = "cpu") -> list[dict[str, Any]]:
    """Write Grad-CAM overlays (`<photo>.gradcam.jpg`) for photos into `out` (default RUN/explain).

    Returns:
        One dict per photo: path, file written, explained class, its probability, predicted label.

    Raises:
        ValueError: unknown class name (lists the known ones), or nothing readable.
    """

    run = Run(run_dir, device=device)
    index = None
    if class_name is not None:
        if class_name not in run.class_names:
            raise ValueError(f"Unknown class '{class_name}'; the model knows {run.class_names}.")
        index = run.class_names.index(class_name)
    files, problems = find_images(list(paths) if not isinstance(paths, (str, Path)) else [paths])
    images, ok, failed = decode_all(files, run.preprocessing)
    problems += failed
    if not ok:
        raise ValueError("No readable photos to explain: " + "; ".join(f"{p.path}: {p.reason}" for p in problems))
    out = Path(out) if out is not None else run.dir / "explain"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for start in range(0, len(ok), CHUNK):  # bounded memory: activations and gradients of CHUNK photos
        result = gradcam(run.module, run.preprocessing, images[start:start + CHUNK], index, tta=run.tta)
        for j, i in enumerate(ok[start:start + CHUNK]):
            target = out / f"{slug(Path(files[i]).stem)}.gradcam.jpg"
            atomic_write_bytes(target, overlay_jpeg(images[start + j], result["cams"][j]))
            cls = int(result["classes"][j])
            written.append({"path": str(files[i]), "file": str(target), "class": run.class_names[cls],
                            "probability": float(result["probs"][j, cls]),
                            "predicted": run.class_names[int(result["probs"][j].argmax())],
                            "layer": result["layer"]})
    for p in problems:
        written.append({"path": p.path, "skipped": p.reason})
    return written


__all__ = ["gradcam", "overlay", "cam_samples", "explain"]
