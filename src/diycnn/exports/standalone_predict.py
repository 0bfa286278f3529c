"""Classify photos with this folder's ONNX model. Needs only: pip install onnxruntime pillow numpy
(and opencv-python-headless if export.json says the model was trained on face crops).

    python predict.py photo.jpg more_photos/ [--model model.int8.onnx] [--top-k 3]
    python predict.py --save-inputs DIR photo.jpg ...   # the model's input images as PNG, no prediction

Prints a JSON list like `diycnn predict --json`. `--save-inputs` writes each photo as the model
takes it (face-cropped and aligned where the run did that), e.g. for a TensorFlow.js export of a
face run, whose model.json takes the aligned face and which has no ONNX model to predict with here. Copy this file and the folder's model.onnx
and export.json into your own app; `Classifier(folder).predict_image(pil_image)` gives the
probabilities for one Pillow image, `predict_scored` also the "none of these" score, where export.json's
"unknown" names the output and its threshold (above it: none of the classes). The preprocessing below
follows export.json step by step.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import onnxruntime
from PIL import Image, ImageOps

RESAMPLE = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
            "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS}


def rgb(im: Image.Image, background) -> Image.Image:
    """Any Pillow mode -> RGB, transparent pixels on `background` (diycnn's rules)."""
    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        a = np.asarray(im).astype(np.float64)
        a = a * 255.0 if im.mode == "F" and np.nanmax(a) <= 1.0 else (a / 257.0 if a.max(initial=0) > 255
                                                                       or im.mode.startswith("I;16") else a)
        im = Image.fromarray(np.clip(np.rint(np.nan_to_num(a)), 0, 255).astype(np.uint8), "L")
    has_alpha = im.mode in ("P", "LA", "La", "PA", "RGBa", "RGBA") or (
        im.mode in ("L", "RGB") and "transparency" in im.info)
    if has_alpha:
        im = im.convert("RGBA")
        flat = Image.new("RGB", im.size, tuple(background))
        flat.paste(im, mask=im.getchannel("A"))
        return flat
    return im.convert("RGB")


def face_crop(im: Image.Image, margin: float):
    """The largest frontal face with `margin` per side (as diycnn's --crop faces), or None."""
    import cv2  # noqa: PLC0415 (lazy: loads OpenCV)

    detector = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    scale = min(1.0, 640 / max(im.size))
    small = im if scale == 1.0 else im.resize((max(1, int(im.width * scale)), max(1, int(im.height * scale))))
    grey = cv2.equalizeHist(cv2.cvtColor(np.asarray(small), cv2.COLOR_RGB2GRAY))
    side_min = max(24, int(min(grey.shape) * 0.08))
    found = detector.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, minSize=(side_min, side_min))
    if len(found) == 0:
        return None
    x, y, w, h = (int(v) for v in max(found, key=lambda f: f[2] * f[3]))
    box = [int(x / scale), int(y / scale), int((x + w) / scale), int((y + h) / scale)]
    side = max(box[2] - box[0], box[3] - box[1]) * (1 + 2 * margin)
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return im.crop((max(0, int(cx - side / 2)), max(0, int(cy - side / 2)),
                    min(im.width, int(cx + side / 2)), min(im.height, int(cy + side / 2))))


def align_face(im: Image.Image, landmarks, eyes, size: int):
    """As diycnn's data/align.py: landmarks on the photo padded to a black square at 112x112, eye
    centres (points 36-41, 42-47) moved to `eyes` of a size x size square; None if implausible."""

    side = max(im.size)
    ox, oy = (side - im.width) // 2, (side - im.height) // 2
    square = Image.new("RGB", (side, side), (0, 0, 0))
    square.paste(im, (ox, oy))
    x = np.asarray(square.resize((112, 112), Image.BILINEAR), dtype=np.uint8)[None]
    points = landmarks.run(None, {"image": x})[0][0].astype(np.float32) * side - np.array([ox, oy], dtype=np.float32)
    left, right = points[36:42].mean(axis=0), points[42:48].mean(axis=0)
    dx, dy = float(right[0] - left[0]), float(right[1] - left[1])
    dist, angle = math.hypot(dx, dy), math.atan2(dy, dx)
    if not (0.1 * min(im.size) <= dist <= 0.9 * min(im.size)) or abs(angle) > math.pi / 4:
        return None
    lx, rx, ey = eyes
    scale = (rx - lx) * size / dist
    a, d = math.cos(angle) / scale, math.sin(angle) / scale
    b, e = -d, a
    u0, v0 = lx * size, ey * size
    c, f = float(left[0]) - a * u0 - b * v0, float(left[1]) - d * u0 - e * v0
    return im.transform((size, size), Image.AFFINE, (a, b, c, d, e, f), resample=Image.BILINEAR)


class Classifier:
    def __init__(self, folder: str | Path = ".", model_file: str | None = None):
        folder = Path(folder)
        self.meta = json.loads((folder / "export.json").read_text(encoding="utf-8"))
        self.labels = self.meta["class_names"]
        self.prep = self.meta["preprocessing"]
        name = model_file or self.meta["model_file"]
        if not model_file and (not isinstance(name, str) or name != Path(name).name or name in ("", ".", "..")):
            raise SystemExit(f"export.json's model_file {name!r} must be a plain file name in {folder}")
        self.session = None  # a TF.js export (model.json): this file only prepares its inputs (--save-inputs)
        if name.endswith(".onnx"):
            self.session = onnxruntime.InferenceSession(str(folder / name), providers=["CPUExecutionProvider"])
        self.landmarks = None
        if self.prep.get("align"):
            lm = self.meta["landmarks"]["file"]
            if lm != Path(lm).name:
                raise SystemExit(f"export.json's landmarks file {lm!r} must be a plain file name in {folder}")
            self.landmarks = onnxruntime.InferenceSession(str(folder / lm), providers=["CPUExecutionProvider"])

    def prepare(self, im: Image.Image) -> np.ndarray:
        """A decoded photo -> uint8 (H, W, 3), the model's input for one photo."""
        p = self.prep
        if getattr(im, "n_frames", 1) > 1:
            im.seek(0)
        im = rgb(ImageOps.exif_transpose(im), p["background"])
        if p.get("faces"):
            face = face_crop(im, p["face_margin"])
            if face is not None:
                im = face
            elif p["no_face"] == "skip":
                raise ValueError("no face found")
        if self.landmarks is not None:
            aligned = align_face(im, self.landmarks, self.meta["landmarks"]["eyes"], max(p["size"]))
            if aligned is not None:
                im = aligned
            elif p["no_face"] == "skip":
                raise ValueError("no face landmarks found")
        (h, w), resample = p["size"], RESAMPLE[p["interpolation"]]
        if p["resize"] == "center-crop":
            side = min(im.size)
            left, top = (im.width - side) // 2, (im.height - side) // 2
            im = im.crop((left, top, left + side, top + side)).resize((w, h), resample)
        elif p["resize"] == "shorter":
            long_new = max(int(h * max(im.size) / min(im.size)), h)
            im = im.resize((h, long_new) if im.width <= im.height else (long_new, h), resample)
        else:
            im = im.resize((w, h), resample)
        if p.get("crop"):
            ch, cw = p["crop"]
            left, top = (im.width - cw) // 2, (im.height - ch) // 2
            im = im.crop((left, top, left + cw, top + ch))
        return np.array(im, dtype=np.uint8)

    def predict_image(self, im: Image.Image) -> dict[str, float]:
        return self.predict_scored(im)[0]

    def predict_scored(self, im: Image.Image):
        """(probabilities by label, the "none of these" score or None where the model has none)."""
        if self.session is None:
            raise SystemExit(f"This folder's model ({self.meta['model_file']}) runs in TensorFlow.js, not here: "
                             "use --save-inputs DIR to write the images it takes (see README.txt).")
        outputs = self.session.run(None, {"image": self.prepare(im)[None]})
        score = float(outputs[1][0]) if len(outputs) > 1 else None
        return {label: float(p) for label, p in zip(self.labels, outputs[0][0])}, score


def files(paths):
    for path in map(Path, paths):
        if path.is_dir():
            yield from sorted(f for f in path.rglob("*") if f.is_file() and not f.name.startswith("."))
        else:
            yield path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--model", help="model file in this folder (default: export.json's model_file)")
    parser.add_argument("--top-k", type=int)
    parser.add_argument("--save-inputs", metavar="DIR", help="write each photo as the model takes it (PNG), "
                                                             "instead of predicting")
    args = parser.parse_args(argv)
    model = Classifier(Path(__file__).resolve().parent, args.model)
    out = []
    for n, path in enumerate(files(args.paths)):
        try:
            with Image.open(path) as im:
                if args.save_inputs:
                    target = Path(args.save_inputs) / f"{n:05d}-{path.stem}.png"
                    target.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(model.prepare(im)).save(target)
                    out.append({"path": str(path), "input": str(target)})
                    continue
                probs, score = model.predict_scored(im)
        except Exception as exc:  # unreadable photo: report it and go on
            print(f"skipped {path}: {exc}", file=sys.stderr)
            continue
        item = {"path": str(path), "label": max(probs, key=probs.get), "probabilities": probs}
        threshold = (model.meta.get("unknown") or {}).get("threshold")
        if score is not None and threshold is not None:  # far from every class: "none of these"
            item.update({"unknown": score > threshold, "unknown_score": score})
            if item["unknown"]:
                item["label"] = "unknown"
        if args.top_k:
            item["top_k"] = sorted(probs.items(), key=lambda kv: -kv[1])[:args.top_k]
        out.append(item)
    print(json.dumps(out, indent=2, ensure_ascii=False))
    return 0 if out else 1


if __name__ == "__main__":
    sys.exit(main())
