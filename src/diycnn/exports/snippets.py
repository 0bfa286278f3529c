"""Copy-paste code that loads an export, as Teachable Machine's export dialog offers.

`snippets(info)` reads an export's export.json (as a dict) and returns code in the languages
the format runs in. Pure text from the recorded preprocessing: no model is loaded, so the web
app and the export README share it.
"""

from __future__ import annotations

from typing import Any

from ..settings import EXPORTS, TFJS_MODEL_FILE
from .runtime import MODEL_FILES

PYTHON_FORMATS = tuple(name for name, f in EXPORTS.items() if f.python)  # (tm: when it is ONNX)
SERVE_NOTE = "// Serve the unzipped folder over HTTP (a browser cannot load model.json from file://).\n"
FACES_NOTE = ("// this run crops faces first (see README.txt): give it a face photo cropped as the "
              "steps say\n")
ALIGN_NOTE = ("// this model takes an aligned face, {w}x{h} (eyes level at 30%/70% across, 30% down), not a whole "
              "photo:\n// make it with 'python predict.py --save-inputs inputs/ photo.jpg' (README.txt)\n")
RESAMPLE = {"nearest": "NEAREST", "bilinear": "BILINEAR", "bicubic": "BICUBIC", "lanczos": "LANCZOS"}


def _checked(info: dict[str, Any]) -> dict[str, Any]:
    """The fields the snippets quote, as numbers and text only: a run folder may come from anyone, and
    its export.json must not put code into a snippet someone pastes. ValueError/TypeError/KeyError if odd."""
    p = info["preprocessing"]
    h, w = (int(v) for v in p["size"])
    mean, std = [float(v) for v in p["mean"]], [float(v) for v in p["std"]]
    if len(mean) != 3 or len(std) != 3:
        raise ValueError("mean and std need 3 values")
    names = [str(c) for c in info["class_names"]]
    interpolation = str(p.get("interpolation", "bilinear"))
    if interpolation not in RESAMPLE:
        raise ValueError(f"unknown interpolation {interpolation!r}")
    resize = str(p.get("resize", "squash"))
    if resize not in ("squash", "center-crop", "shorter"):
        raise ValueError(f"unknown resize {resize!r}")
    crop = p.get("crop")
    model_file = str(info.get("model_file", ""))
    if model_file not in MODEL_FILES.values():
        raise ValueError(f"unknown model file {model_file!r}")
    return {"export_format": str(info["export_format"]), "model_file": model_file, "class_names": names,
            "preprocessing": {"size": (h, w), "input_scale": float(p["input_scale"]), "mean": mean, "std": std,
                              "interpolation": interpolation, "resize": resize, "faces": bool(p.get("faces")),
                              "align": bool(p.get("align")),
                              "crop": None if crop is None else tuple(int(v) for v in crop)}}


def _pillow_steps(info: dict[str, Any]) -> str:
    """Python lines that turn 'photo.jpg' into `photo`, the model's input size, as the run did (no face crop)."""
    p = info["preprocessing"]
    h, w = p["size"]
    resample = f"Image.Resampling.{RESAMPLE[p['interpolation']]}"
    lines = ["photo = ImageOps.exif_transpose(Image.open('photo.jpg')).convert('RGB')"]
    if p["faces"] or p["align"]:
        lines.insert(0, f"# the model takes the {'aligned' if p['align'] else 'cropped'} face, not the photo: "
                        "'python predict.py --save-inputs inputs/ photo.jpg' writes it (README.txt); open that")
    if p["resize"] == "squash":
        lines.append(f"photo = photo.resize(({w}, {h}), {resample})")
    elif p["resize"] == "center-crop":
        lines.append(f"photo = ImageOps.fit(photo, ({w}, {h}), {resample})   # the largest centred square")
    else:
        lines.append(f"scale = {h} / min(photo.size)   # the shorter side to {h}")
        lines.append(f"photo = photo.resize((round(photo.width * scale), round(photo.height * scale)), {resample})")
    if p["crop"]:
        ch, cw = p["crop"]
        lines.append(f"left, top = (photo.width - {cw}) // 2, (photo.height - {ch}) // 2")
        lines.append(f"photo = photo.crop((left, top, left + {cw}, top + {ch}))")
    return "\n".join(lines)


def _python(fmt: str, info: dict[str, Any]) -> str:
    if fmt in ("onnx", "tm"):
        return (
            "# pip install onnxruntime pillow numpy    (unzip the export and run this beside its files)\n"
            "from PIL import Image\n"
            "from predict import Classifier   # predict.py is in the zip: it repeats diycnn's preprocessing\n"
            "\n"
            "model = Classifier('.')\n"
            "probabilities = model.predict_image(Image.open('photo.jpg'))   # {class: probability}\n"
            "print(probabilities)\n"
        )
    if fmt == "torchscript":
        return (
            "# pip install torch pillow numpy\n"
            "import numpy as np, torch\n"
            "from PIL import Image, ImageOps\n"
            "\n"
            "model = torch.jit.load('model.torchscript.pt').eval()\n"
            f"labels = {list(info['class_names'])!r}\n"
            f"{_pillow_steps(info)}\n"
            "x = torch.from_numpy(np.asarray(photo, dtype=np.uint8))[None]   # uint8 (1, H, W, 3)\n"
            "probabilities = model(x)[0].tolist()\n"
            "print(dict(zip(labels, probabilities)))\n"
        )
    return (
        "# pip install keras tensorflow pillow numpy   (Keras 3, any backend)\n"
        "import keras, numpy as np\n"
        "from PIL import Image, ImageOps\n"
        "\n"
        "model = keras.saving.load_model('model.keras')\n"
        f"labels = {list(info['class_names'])!r}\n"
        f"{_pillow_steps(info)}\n"
        f"{_numpy_scaling(info)}\n"
        "probabilities = model.predict(x[None], verbose=0)[0]\n"
        "print(dict(zip(labels, probabilities.tolist())))\n"
    )


def _numpy_scaling(info: dict[str, Any]) -> str:
    p = info["preprocessing"]
    return (f"x = (np.asarray(photo, dtype=np.float32) * {p['input_scale']:.8g} - np.array({list(p['mean'])}, "
            f"dtype=np.float32)) / np.array({list(p['std'])}, dtype=np.float32)")


def _face_note(p: dict[str, Any]) -> str:
    """The comment a JavaScript snippet needs when the model takes a face, not a photo."""
    if p["align"]:
        h, w = p["crop"] or p["size"]
        return ALIGN_NOTE.format(w=w, h=h)
    return FACES_NOTE if p["faces"] else ""


PREDICT_JS = (
    "// diycnnPredict (predict.js, in this folder) prepares the photo as the run did (Pillow's resizing, to the\n"
    "// pixel) and answers 'none of these' from predict.json's class means and threshold\n"
    "const settings = await (await fetch('predict.json')).json();\n"
    "const net = settings.unknown ? diycnnPredict.withFeatures(tf, model) : model;\n"
    "const w = photo.naturalWidth || photo.videoWidth || photo.width, h = photo.naturalHeight || photo.videoHeight "
    "|| photo.height;\n"
    "const canvas = Object.assign(document.createElement('canvas'), { width: w, height: h });\n"
    "const context = canvas.getContext('2d');\n"
    "context.drawImage(photo, 0, 0);\n"
    "const x = diycnnPredict.input(context.getImageData(0, 0, w, h).data, w, h, settings, 4);   // RGBA\n"
    "const [answer] = await diycnnPredict.predict(tf, net, [x], settings);\n"
    "// answer.probabilities: one per class; answer.unknown: true when the photo is of none of the classes\n"
    "// (answer.unknown_score above settings.unknown.threshold)\n"
    "settings.class_names.forEach((label, i) => console.log(label, answer.probabilities[i]));\n"
    "console.log('none of these:', answer.unknown, answer.unknown_score);\n"
)
SCRIPTS = ("// <script src=\"https://cdn.jsdelivr.net/npm/@tensorflow/tfjs@4.22.0\"></script>\n"
           "// <script src=\"predict.js\"></script>\n")


def _javascript(info: dict[str, Any]) -> str:
    return (SCRIPTS + SERVE_NOTE
            + "const model = await tf.loadLayersModel('model.json');\n"
            "const photo = document.querySelector('img');   // an <img>, <canvas> or <video>\n"
            + _face_note(info["preprocessing"]) + PREDICT_JS)


def _teachable(info: dict[str, Any]) -> str:
    return (
        SCRIPTS
        + "// <script src=\"https://cdn.jsdelivr.net/npm/@teachablemachine/image@0.8/dist/teachablemachine-image.min.js"
        "\"></script>\n"
        + SERVE_NOTE
        + "const tm = await tmImage.load('model.json', 'metadata.json');\n"
        "const photo = document.querySelector('img');   // an <img>, <canvas> or <video>\n"
        + _face_note(info["preprocessing"])
        + "const predictions = await tm.predict(photo);   // [{className, probability}]: Teachable Machine's way\n"
        "predictions.forEach((p) => console.log(p.className, p.probability));\n"
        "// or the run's own way, with 'none of these':\n"
        "const model = await tf.loadLayersModel('model.json');   // the same model, for predict.js\n"
        + PREDICT_JS
    )


def snippets(info: dict[str, Any]) -> list[dict[str, str]]:
    """[{"language", "code"}] that load the export described by `info` (export.json's contents).

    Raises:
        KeyError, TypeError, ValueError: `info` lacks a field or holds a value of the wrong kind.
    """
    info = _checked(info)
    fmt = info["export_format"]
    if fmt == "tm" and info["model_file"] == TFJS_MODEL_FILE:  # Teachable Machine's own format (TF.js)
        return [{"language": "JavaScript", "code": _teachable(info)}]
    out = []
    if fmt in PYTHON_FORMATS:
        out.append({"language": "Python", "code": _python(fmt, info)})
    if fmt == "tfjs":
        out.append({"language": "JavaScript", "code": _javascript(info)})
    if fmt == "webpage":
        out.append({"language": "Shell", "code": WEBPAGE_SERVE})
    return out


WEBPAGE_SERVE = ("# open the page on this computer (the webcam needs localhost or https):\n"
                 "python -m http.server 8000 --directory THIS_FOLDER\n"
                 "# then browse to http://localhost:8000/ ; or copy the folder to any static host\n")
