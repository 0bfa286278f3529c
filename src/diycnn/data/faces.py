"""Crop the largest face, with OpenCV's Haar cascade that ships inside opencv-python-headless.

Used by `--crop faces`: the same crop runs before training and before every prediction,
so a model trained on face crops is always shown face crops.
"""

from __future__ import annotations

import threading

import numpy as np
from PIL import Image

_local = threading.local()  # a CascadeClassifier per thread: detectMultiScale is not thread-safe


def _detector():
    det = getattr(_local, "detector", None)
    if det is None:
        import cv2

        path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
        det = cv2.CascadeClassifier(path)
        if det.empty():
            raise RuntimeError(f"OpenCV's face cascade is missing ({path}); reinstall opencv-python-headless<5.")
        _local.detector = det
    return det


def largest_face(im: Image.Image, max_side: int = 640) -> tuple[int, int, int, int] | None:
    """(left, top, right, bottom) of the largest frontal face in an RGB image, or None."""
    import cv2

    scale = min(1.0, max_side / max(im.size))
    small = im if scale == 1.0 else im.resize((max(1, int(im.width * scale)), max(1, int(im.height * scale))))
    grey = cv2.cvtColor(np.asarray(small), cv2.COLOR_RGB2GRAY)
    grey = cv2.equalizeHist(grey)
    min_side = max(24, int(min(grey.shape) * 0.08))
    faces = _detector().detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side))
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
    l, t = max(0, int(cx - side / 2)), max(0, int(cy - side / 2))
    r, b = min(im.width, int(cx + side / 2)), min(im.height, int(cy + side / 2))
    return im.crop((l, t, r, b))


def face_survey(paths: list, sample: int = 40, seed: int = 0) -> dict:
    """Do these photos show faces? Looks for a face in an evenly spread sample of them.

    Tight face crops (a face filling the frame, like most face datasets) defeat the Haar cascade
    unless the photo gets a border first, so each photo is padded by a quarter of its size with
    grey; a face must cover at least 4% of the padded photo (a smaller hit is usually noise: on
    40 photos each of hymenoptera and cats_and_dogs, 1 and 1 hit; on kpop_idols' face crops, 27).

    Returns:
        {"sampled", "with_face", "fraction", "median_face_area" (face box / photo area, over the
        photos with a face; None without any), "seconds"}
    """
    import time

    import cv2
    from PIL import ImageOps

    from .images import ImageError, load_rgb

    start = time.perf_counter()
    step = max(1, len(paths) // sample) if paths else 1
    chosen = list(paths)[seed % step::step][:sample]
    areas: list[float] = []
    for path in chosen:
        try:
            im = load_rgb(path)
        except ImageError:
            continue
        scale = min(1.0, 480 / max(im.size))
        if scale < 1.0:
            im = im.resize((max(1, int(im.width * scale)), max(1, int(im.height * scale))))
        pad = int(max(im.size) * 0.25)
        padded = ImageOps.expand(im, border=pad, fill=(128, 128, 128))
        grey = cv2.equalizeHist(cv2.cvtColor(np.asarray(padded), cv2.COLOR_RGB2GRAY))
        min_side = max(24, int(min(grey.shape) * 0.08))
        found = _detector().detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side))
        if len(found) == 0:
            continue
        x, y, w, h = max(found, key=lambda f: f[2] * f[3])
        if w * h >= 0.04 * grey.shape[0] * grey.shape[1]:
            areas.append(min(1.0, w * h / (im.width * im.height)))
    return {"sampled": len(chosen), "with_face": len(areas), "fraction": len(areas) / len(chosen) if chosen else 0.0,
            "median_face_area": float(np.median(areas)) if areas else None,
            "seconds": round(time.perf_counter() - start, 2)}
