"""Do a folder's photos show faces? A quick survey of a sample, for `--model auto`'s choice of
recipe (face recipes for people). Beside faces.py and images.py, which it uses."""

from __future__ import annotations

import time

import numpy as np
from PIL import ImageOps

from .faces import detector
from .images import ImageError, load_rgb


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
    import cv2  # OpenCV: only where faces are looked for  # noqa: PLC0415 (lazy: loads OpenCV)

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
        found = detector().detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side))
        if len(found) == 0:
            continue
        x, y, w, h = max(found, key=lambda f: f[2] * f[3])
        if w * h >= 0.04 * grey.shape[0] * grey.shape[1]:
            areas.append(min(1.0, w * h / (im.width * im.height)))
    return {"sampled": len(chosen), "with_face": len(areas), "fraction": len(areas) / len(chosen) if chosen else 0.0,
            "median_face_area": float(np.median(areas)) if areas else None,
            "seconds": round(time.perf_counter() - start, 2)}
