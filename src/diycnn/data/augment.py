"""Turn cached batches into model inputs: training augmentation (torchvision transforms v2),
evaluation centre crops, and the flip used for test-time augmentation."""

from __future__ import annotations

from typing import Any, Callable

import torch

from .images import Preprocessing


class Augmenter:
    """Per-photo random resized crop, horizontal flip, small rotation and colour jitter on uint8 batches.

    Randomness comes from torch's global generator, which the trainer seeds per epoch and
    saves in checkpoints, so augmented runs stay reproducible and resumable.
    """

    def __init__(self, out_size: tuple[int, int], config: dict[str, Any]):
        from torchvision.transforms import v2  # noqa: PLC0415 (lazy: loads torch)

        steps = []
        rrc = config.get("random_resized_crop")
        if rrc:
            steps.append(v2.RandomResizedCrop(out_size, scale=tuple(rrc.get("scale", (0.25, 1.0))),
                                              ratio=tuple(rrc.get("ratio", (0.75, 4 / 3))), antialias=True))
        else:
            steps.append(v2.CenterCrop(out_size))
        if config.get("horizontal_flip"):
            steps.append(v2.RandomHorizontalFlip())
        if config.get("rotation"):  # small rotations (faces: a tilted head), corners filled with black
            steps.append(v2.RandomRotation(float(config["rotation"])))
        jitter = config.get("color_jitter")
        if jitter:
            steps.append(v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter))
        self.transform = v2.Compose(steps)

    def __call__(self, batch_u8: torch.Tensor) -> torch.Tensor:
        """(B, H, W, 3) uint8 -> (B, h, w, 3) uint8, each photo transformed independently."""
        chw = batch_u8.permute(0, 3, 1, 2)
        return torch.stack([self.transform(img) for img in chw]).permute(0, 2, 3, 1)


def image_input_fn(prep: Preprocessing, augment: dict[str, Any] | None = None
                   ) -> Callable[[torch.Tensor, bool], torch.Tensor]:
    """x uint8 (B, H, W, 3) from the cache -> normalised float (B, 3, h, w).

    Training batches are augmented when `augment` is given; evaluation batches are centre
    cropped exactly as `Preprocessing.load` crops a photo at predict time.
    """
    # Training crops may be smaller than the evaluation size: testing at a higher resolution
    # than training compensates for random-resized-crop zoom (Touvron et al., "FixRes").
    train_size = tuple(augment["size"]) if augment and augment.get("size") else prep.output_size
    augmenter = Augmenter(train_size, augment) if augment else None

    def to_input(x: torch.Tensor, train: bool) -> torch.Tensor:
        if train and augmenter is not None:
            x = augmenter(x.cpu()).to(x.device)
        else:
            x = prep.center_crop(x)
        return prep.normalise(x)

    return to_input


def feature_input_fn(x: torch.Tensor, train: bool) -> torch.Tensor:
    """Cached backbone features (B, F) are already the head's input."""
    return x.float()
