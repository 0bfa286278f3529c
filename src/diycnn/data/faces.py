"""Crop the largest face, with OpenCV's Haar cascade that ships inside opencv-python-headless.

Used by `--crop faces`: the same crop runs before training and before every prediction,
so a model trained on face crops is always shown face crops.
"""

from __future__ import annotations

import threading

import numpy as np
from PIL import Image

_local = threading.local()  # a CascadeClassifier per thread: detectMultiScale is not thread-safe


def detector():
    """OpenCV's frontal-face Haar cascade, one per thread."""
    det = getattr(_local, "detector", None)
    if det is None:
        import cv2  # noqa: PLC0415 (lazy: loads OpenCV)

        path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
        det = cv2.CascadeClassifier(path)
        if det.empty():
            raise RuntimeError(f"OpenCV's face cascade is missing ({path}); reinstall opencv-python-headless<5.")
        _local.detector = det
    return det


def largest_face(im: Image.Image, max_side: int = 640) -> tuple[int, int, int, int] | None:
    """(left, top, right, bottom) of the largest frontal face in an RGB image, or None."""
    import cv2  # noqa: PLC0415 (lazy: loads OpenCV)

    scale = min(1.0, max_side / max(im.size))
    small = im if scale == 1.0 else im.resize((max(1, int(im.width * scale)), max(1, int(im.height * scale))))
    grey = cv2.cvtColor(np.asarray(small), cv2.COLOR_RGB2GRAY)
    grey = cv2.equalizeHist(grey)
    min_side = max(24, int(min(grey.shape) * 0.08))
    faces = detector().detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side))
    if len(faces) == 0:
        return None
    x, y, w, h = max(faces, key=lambda f: f[2] * f[3])
    return (int(x / scale), int(y / scale), int((x + w) / scale), int((y + h) / scale))


def crop_face(im: Image.Image, margin: float = 0.3) -> Image.Image | None:
    """A square crop around the largest face with `margin` (fraction of the face size) on each side,
    clipped to the photo; None when no face is found."""
    box = largest_face(im)
    if box is None:
        return None
    left, top, right, bottom = box
    side = max(right - left, bottom - top) * (1 + 2 * margin)
    cx, cy = (left + right) / 2, (top + bottom) / 2
    x0, y0 = max(0, int(cx - side / 2)), max(0, int(cy - side / 2))
    x1, y1 = min(im.width, int(cx + side / 2)), min(im.height, int(cy + side / 2))
    return im.crop((x0, y0, x1, y1))
