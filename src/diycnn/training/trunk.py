"""Fine-tuning the later stages of a network without running its frozen stages every epoch.

A recipe that fine-tunes only the later stages (`freeze_fraction`) leaves the earlier ones, the
trunk, as they were: its output depends on its input alone (no dropout, no batch statistics). So
each training photo goes through the trunk once per augmented view, drawn by the recipe's own
augmentation before training starts, and once un-augmented (validation photos only that way);
the epochs then train the rest of the network (the top) on those activations, each photo in one
of its views, drawn at random per photo and per epoch (torch's generator, which the trainer
seeds per epoch, so runs stay reproducible and resumable). The trunk runs in the training
precision, as it would inside each training step.

Where the network averages each face with its mirror image inside its forward (the face
network), both passes' trunk activations are kept. What is trained and saved is the whole
network: `TopOfTrunk` shares its modules and reads and writes the network's own state dict, so
checkpoints, the kept weights, evaluation, calibration, exports and resuming are as on the
plain path. The difference from the plain path: a photo's augmentations are `views` fixed draws
instead of a fresh draw per epoch (bench/default_pipeline.py measures what that costs in accuracy
and saves in time).

Only networks that can be cut this way (`trunk(x, k)` and `top(h, k)`, as the face network
offers) take this path, and only when the activations fit in MAX_BYTES; others train as before.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .device import autocast

MAX_BYTES = 1 << 30  # the activations of every view of every photo, in float32


class TopOfTrunk(nn.Module):
    """The classifier after its first `stages` stages: (B, P, C, H, W) trunk activations -> logits
    (P = 2 where the network averages a face with its mirror image, else 1)."""

    def __init__(self, classifier: nn.Module, stages: int):
        super().__init__()
        self.classifier = classifier
        self.stages = stages

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        net = self.classifier.backbone
        descriptor = net.top(h[:, 0], self.stages)
        if h.shape[1] == 2:
            descriptor = (descriptor + net.top(h[:, 1], self.stages)) / 2
        return self.classifier.head(descriptor)

    # The classifier's own keys: checkpoints and kept weights are those of the plain path.
    def state_dict(self, *args, **kwargs):  # type: ignore[override]
        return self.classifier.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # type: ignore[override]
        return self.classifier.load_state_dict(state_dict, strict=strict, assign=assign)


def frozen_trunk(module: Any) -> int:
    """How many leading stages of `module`'s backbone are frozen and can be cut off (0: none, or a
    network this path does not cut)."""
    net = getattr(module, "backbone", None)
    if not all(hasattr(net, name) for name in ("trunk", "top", "frozen_stages", "stages")):
        return 0
    k = int(net.frozen_stages())
    return k if 0 < k < len(net.stages()) - 1 else 0


def _shape(module: Any, stages: int, size: tuple[int, int]) -> tuple[int, ...]:
    """(P, C, H, W): one photo's activations of one view."""
    net = module.backbone
    with torch.no_grad():
        shape = net.trunk(torch.zeros(1, 3, *size, device=next(net.parameters()).device), stages).shape
    return (2 if getattr(net, "mirror", False) else 1, *shape[1:])


def views_that_fit(module: Any, stages: int, size: tuple[int, int], train_photos: int, other_photos: int,
                   wanted: int) -> int:
    """How many views (at most `wanted`) of each of `train_photos` photos fit in MAX_BYTES beside one
    view of each of `other_photos` (0: not even `min(wanted, 2)`)."""
    per_view = int(np.prod(_shape(module, stages, size))) * 4
    fit = (MAX_BYTES // per_view - other_photos) // max(train_photos, 1)
    return min(wanted, fit) if fit >= min(wanted, 2) else 0


@torch.no_grad()
def activations(module: Any, stages: int, x: Any, to_input: Callable[..., torch.Tensor], views: int,
                size: tuple[int, int], device: torch.device, precision: str, seed: int) -> np.ndarray:
    """(N, V, P, C, H, W) float32 trunk activations of photos `x` (uint8 (N, H, W, 3)) for inputs of
    `size`: V = `views` augmented draws, or one un-augmented view when `views` is 0."""
    net = module.backbone.to(device).eval()
    passes = 2 if getattr(net, "mirror", False) else 1
    out = np.empty((len(x), max(views, 1), *_shape(module, stages, size)), dtype=np.float32)
    generator_state = torch.get_rng_state()
    torch.manual_seed(seed * 7_919 + 17)  # the views are the same on every run with this seed (and on resume)
    try:
        for v in range(max(views, 1)):
            for start in range(0, len(x), 64):
                batch = torch.from_numpy(np.asarray(x[start:start + 64])).to(device)
                inputs = to_input(batch, views > 0).to(memory_format=torch.channels_last)
                with autocast(device, precision):
                    h = [net.trunk(inputs, stages)]
                    if passes == 2:
                        h.append(net.trunk(torch.flip(inputs, dims=[3]), stages))
                out[start:start + len(batch), v] = torch.stack([a.float() for a in h], dim=1).cpu().numpy()
    finally:
        torch.set_rng_state(generator_state)
    return out


def view_input(x: torch.Tensor, train: bool) -> torch.Tensor:
    """A batch of (B, V, P, C, H, W) activations -> (B, P, C, H, W): one view per photo drawn at
    random in training, the first (the only one of validation photos) otherwise."""
    if train and x.shape[1] > 1:
        pick = torch.randint(x.shape[1], (x.shape[0],))
        return x[torch.arange(x.shape[0]), pick].float()
    return x[:, 0].float()
