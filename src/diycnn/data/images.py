"""Decode any photo the same way at train and predict time, and describe that preprocessing.

Images are recognised by content, not by extension. Every mode is converted to RGB
by one function (`to_rgb`), transparency is composited on a fixed background, EXIF
orientation is applied, and animated files use their first frame.
"""

from __future__ import annotations

import dataclasses
import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from ..io import shown
from .align import align_face
from .faces import crop_face

# Formats we accept, by the name Pillow detects from the bytes. MPO is a JPEG variant
# written by many cameras.
SUPPORTED_FORMATS = {"JPEG", "MPO", "PNG", "GIF", "BMP", "WEBP", "TIFF"}
# Pillow's own decompression-bomb threshold (~89.5 megapixels); larger files are skipped.
MAX_PIXELS = 89_478_485
INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


class ImageError(ValueError):
    """A file that cannot be used as a photo; `reason` says why in words a user understands."""

    def __init__(self, path: str | Path | None, reason: str):
        self.path = str(path) if path is not None else None
        self.reason = reason
        super().__init__(f"{self.path}: {reason}" if self.path else reason)


def open_image(source: str | Path | bytes) -> Image.Image:
    """Open an image lazily (header only) and check its format and size."""
    path = None if isinstance(source, (bytes, bytearray)) else source
    data = source if path is None else None
    if path is not None:
        try:
            size = Path(path).stat().st_size
        except OSError as exc:
            raise ImageError(path, f"cannot read file ({exc.strerror or exc})") from None
        if size == 0:
            raise ImageError(path, "empty file (0 bytes)")
    elif len(data) == 0:
        raise ImageError(None, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data) if path is None else path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(path, f"oversized image, refused as a possible decompression bomb ({exc})") from None
    except Image.UnidentifiedImageError:
        raise ImageError(path, "not an image (content is not JPEG, PNG, GIF, BMP, WebP or TIFF)") from None
    except PermissionError:
        raise ImageError(path, "cannot read file (permission denied)") from None
    except Exception as exc:  # Pillow plugins raise many types on malformed headers
        what = "truncated or corrupt image" if "truncated" in str(exc).lower() else "unreadable image header"
        raise ImageError(path, f"{what} ({type(exc).__name__}: {exc})") from None
    if im.format not in SUPPORTED_FORMATS:
        fmt = im.format
        im.close()
        raise ImageError(path, f"unsupported image format {fmt} (supported: JPEG, PNG, GIF, BMP, WebP, TIFF)")
    w, h = im.size
    if w < 1 or h < 1:
        im.close()
        raise ImageError(path, f"image has no pixels ({w}x{h})")
    if w * h > MAX_PIXELS:
        im.close()
        raise ImageError(path, f"oversized image ({w}x{h} pixels is over the {MAX_PIXELS:,}-pixel limit)")
    return im


def probe(source: str | Path | bytes) -> tuple[str, tuple[int, int]]:
    """Read only the header: return (format, (width, height)).

    Raises:
        ImageError: not a supported, sane image.
    """
    im = open_image(source)
    try:
        return im.format, im.size
    finally:
        im.close()


def _scale_to_8bit(im: Image.Image) -> Image.Image:
    """16-bit, 32-bit integer and float greyscale to 8-bit 'L', keeping relative brightness."""
    arr = np.asarray(im)
    if im.mode == "F":
        arr = arr.astype(np.float64)
        arr = arr * 255.0 if np.nanmax(arr) <= 1.0 else arr
    elif im.mode.startswith("I;16") or arr.max(initial=0) > 255:
        arr = arr.astype(np.float64) / 257.0  # 0..65535 -> 0..255
    arr = np.nan_to_num(arr, nan=0.0)
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")


def to_rgb(im: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Convert any Pillow mode to RGB; transparent pixels become `background`."""
    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        im = _scale_to_8bit(im)
    if im.mode == "P" or (im.mode in ("L", "RGB") and "transparency" in im.info):
        im = im.convert("RGBA")
    if im.mode in ("LA", "La", "PA", "RGBa"):
        im = im.convert("RGBA")
    if im.mode == "RGBA":
        canvas = Image.new("RGB", im.size, background)
        canvas.paste(im, mask=im.getchannel("A"))
        return canvas
    return im.convert("RGB") if im.mode != "RGB" else im


def load_rgb(source: str | Path | bytes, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Fully decode a photo to an upright RGB image (first frame of animations).

    Raises:
        ImageError: unreadable, truncated, unsupported or oversized.

    Example:
        >>> load_rgb("photos/iu/001.jpg").size
    """
    path = None if isinstance(source, (bytes, bytearray)) else source
    im = open_image(source)
    try:
        if getattr(im, "n_frames", 1) > 1:
            im.seek(0)
        im.load()
        out = to_rgb(ImageOps.exif_transpose(im), background)
        return im.copy() if out is im else out  # `im` is closed below
    except ImageError:
        raise
    except Exception as exc:  # truncated data, bad EXIF, corrupt frames...
        reason = str(exc) or type(exc).__name__
        if "truncated" in reason.lower():
            reason = f"truncated or corrupt image data ({reason})"
        else:
            reason = f"cannot decode image ({type(exc).__name__}: {reason})"
        raise ImageError(path, reason) from None
    finally:
        im.close()


MAX_INPUT_SIDE = 4096  # pixels per side of a model's input: bounds what a model.json can ask to allocate
_RUNTIME_FIELDS = {"landmarks"}  # carried while loaded, never written to model.json or export.json


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """How a photo becomes the model's input; saved in model.json and reused by predict.

    The pipeline: decode to RGB (`load_rgb`) -> resize to `size` (H, W) by `resize` ->
    optional centre `crop` (H, W) -> uint8 (H, W, 3) -> float * `input_scale` ->
    (x - mean) / std per channel -> (B, 3, H, W).

    resize: "squash" stretches to size (Keras' image_dataset_from_directory); "center-crop"
    crops the largest centred square, then resizes (Teachable Machine); "shorter" scales
    the shorter side to size[0] keeping the aspect ratio (timm's eval transform; needs `crop`).
    """

    size: tuple[int, int] = (100, 100)
    resize: str = "squash"
    interpolation: str = "bilinear"
    input_scale: float = 1.0 / 255.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    background: tuple[int, int, int] = (255, 255, 255)
    crop: tuple[int, int] | None = None
    faces: bool = False  # crop the largest face (with face_margin) before resizing
    face_margin: float = 0.3
    no_face: str = "keep"  # when faces is on and none is found: "keep" the whole photo or "skip" it
    align: bool = False  # level the eyes and frame the face the same way (data/align.py; face recipes)
    # The landmark network that aligns (align.LandmarkRunner): owned by the run or export that loaded this
    # preprocessing (models/recipes.py attaches PyTorch's, exports/runtime.py the folder's ONNX one).
    # Not a setting: never saved, compared or hashed.
    landmarks: Any = dataclasses.field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("size", "crop"):
            value = getattr(self, name)
            if value is None and name == "crop":
                continue
            if (not isinstance(value, tuple) or len(value) != 2
                    or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 1 <= v <= MAX_INPUT_SIDE for v in value)):
                raise ValueError(f"preprocessing {name} must be two whole numbers from 1 to {MAX_INPUT_SIDE} "
                                 f"(height, width), received {shown(value)}.")
        if self.resize not in ("squash", "center-crop", "shorter"):
            raise ValueError(f"resize must be 'squash', 'center-crop' or 'shorter', received {shown(self.resize)}.")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"interpolation must be one of {sorted(INTERPOLATIONS)}, received {shown(self.interpolation)}."
            )
        if self.resize == "shorter" and self.crop is None:
            raise ValueError("resize 'shorter' needs a crop size, so every photo gets the same shape.")
        if self.crop is not None and (self.crop[0] > self.size[0] or self.crop[1] > self.size[1]):
            raise ValueError(f"crop {self.crop} is larger than the resized size {self.size}.")

    @property
    def output_size(self) -> tuple[int, int]:
        """(H, W) of the model's input."""
        return tuple(self.crop) if self.crop is not None else tuple(self.size)

    def to_dict(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in _RUNTIME_FIELDS}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Preprocessing":
        names = {f.name for f in dataclasses.fields(cls)} - _RUNTIME_FIELDS
        unknown = set(values) - names
        if unknown:
            raise ValueError(f"Unknown preprocessing field(s) {sorted(unknown)}; valid fields: {sorted(names)}.")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

    def for_cache(self) -> "Preprocessing":
        """What to decode and keep in memory: everything but the final crop (augmentation crops
        at random from it; evaluation crops the centre with `center_crop`). Fixed-size output."""
        if self.crop is None:
            return self
        keep = (self.size[0], self.size[0]) if self.resize == "shorter" else None
        return dataclasses.replace(self, crop=keep)

    def resize_image(self, im: Image.Image) -> Image.Image:
        h, w = self.size
        resample = INTERPOLATIONS[self.interpolation]
        if self.resize == "center-crop":
            side = min(im.size)
            left, top = (im.width - side) // 2, (im.height - side) // 2
            im = im.crop((left, top, left + side, top + side)).resize((w, h), resample)
        elif self.resize == "shorter":
            short, long = min(im.size), max(im.size)
            long_new = max(int(h * long / short), h)
            new = (h, long_new) if im.width <= im.height else (long_new, h)
            im = im.resize(new, resample)
        else:
            im = im.resize((w, h), resample)
        if self.crop is not None:
            ch, cw = self.crop
            left, top = (im.width - cw) // 2, (im.height - ch) // 2
            im = im.crop((left, top, left + cw, top + ch))
        return im

    def load(self, source: str | Path | bytes, notes: list[str] | None = None) -> np.ndarray:
        """Decode and resize one photo to uint8 (H, W, 3).

        Args:
            notes: receives remarks that are not failures (e.g. no face found, whole photo used).

        Raises:
            ImageError: unreadable, or no face found with no_face="skip".
        """
        im = load_rgb(source, self.background)
        if self.faces:

            im = self._face_step(im, crop_face(im, self.face_margin), source, notes, "no face found",
                                 "use the whole photo", "the whole photo was used")
        if self.align:

            if self.landmarks is None:  # an internal mistake: whoever built this preprocessing owns a network
                raise RuntimeError("This preprocessing aligns faces but carries no landmark network; build it "
                                   "through the run (diycnn.load) or its recipe.")
            im = self._face_step(im, align_face(im, max(self.size), self.landmarks), source, notes, "no face landmarks found",
                                 "use the photo as it is", "the photo was used without alignment")
        return np.array(self.resize_image(im), dtype=np.uint8)

    def _face_step(self, im, result, source, notes, missing: str, keep: str, kept: str) -> Image.Image:
        """The face crop or alignment's result; without one, skip the photo or keep it as no_face says."""
        if result is not None:
            return result
        if self.no_face == "skip":
            path = None if isinstance(source, (bytes, bytearray)) else source
            raise ImageError(path, f"{missing} (skipped; use --no-face keep to {keep})")
        if notes is not None:
            notes.append(f"{missing}; {kept}")
        return im

    def center_crop(self, batch_u8):
        """Crop a cached uint8 batch (B, H, W, 3) to the output size, as `resize_image` crops."""
        ch, cw = self.output_size
        h, w = batch_u8.shape[1:3]
        if (h, w) == (ch, cw):
            return batch_u8
        top, left = (h - ch) // 2, (w - cw) // 2
        return batch_u8[:, top:top + ch, left:left + cw]

    def normalise(self, batch_u8, dtype=None):
        """uint8 torch tensor (B, H, W, 3) -> float (B, 3, H, W), channels-last in memory."""
        import torch  # noqa: PLC0415 (lazy: loads torch)

        x = batch_u8.permute(0, 3, 1, 2).to(dtype or torch.float32)  # a view: keeps NHWC strides
        x = x * self.input_scale
        if any(self.mean) or any(s != 1.0 for s in self.std):
            mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
            std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
            x = (x - mean) / std
        return x.contiguous(memory_format=torch.channels_last)
