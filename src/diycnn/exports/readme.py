"""The words that go with an export: the preprocessing steps in order, and README.txt.
"""

from __future__ import annotations

from typing import Any

from ..data.align import EYES
from ..settings import TFJS_MODEL_FILE
from .job import check_line
from .snippets import snippets


def preprocessing_steps(prep, feed: str) -> list[str]:
    """The preprocessing in words, in order; `feed` is what the model takes: "uint8" pixels,
    "float32" pixels normalised as the run does, or "teachable" (pixels / 127 - 1)."""
    steps = ["decode the photo, apply its EXIF orientation, first frame of animations",
             f"convert to RGB; transparent pixels become RGB{tuple(prep.background)}"]
    if prep.faces:
        steps.append(f"crop the largest face (OpenCV haarcascade_frontalface_default) with a margin of "
                     f"{prep.face_margin} of its size per side; no face: {prep.no_face} the photo")
    if prep.align:

        steps.append(f"align the face: 68 landmarks from face-api.js's landmark network (landmarks.onnx in ONNX "
                     f"exports), then rotate and scale so the eye centres sit at ({EYES[0]:.0%}, {EYES[2]:.0%}) and "
                     f"({EYES[1]:.0%}, {EYES[2]:.0%}) of a {max(prep.size)}-pixel square (bilinear); landmarks "
                     f"that do not look like a face's: {prep.no_face} the photo")
    h, w = prep.size
    steps.append({"squash": f"resize to {w}x{h} (width x height), ignoring the aspect ratio",
                  "center-crop": f"crop the largest centred square, resize it to {w}x{h}",
                  "shorter": f"resize so the shorter side is {h}, keeping the aspect ratio"}[prep.resize]
                 + f" ({prep.interpolation} interpolation, Pillow)")
    if prep.crop:
        steps.append(f"crop the centre {prep.crop[1]}x{prep.crop[0]}")
    norm = f"pixels * {prep.input_scale:.8g}, then (x - mean {list(prep.mean)}) / std {list(prep.std)} per channel"
    if feed == "teachable":
        if prep.resize != "center-crop" or prep.crop:
            steps.append("(Teachable Machine's library crops the centred square and resizes it with the browser's "
                         "canvas instead of the resizing above: photos that are not square are seen differently)")
        steps.append(f"pixels / 127 - 1, as Teachable Machine's library feeds them; feed float32 (N, H, W, 3); the "
                     f"model's first layer does the run's own scaling ({norm}), softmax last")
    elif feed == "page":
        steps.append(f"{norm}, softmax: the page does every step itself in predict.js (decoding with the browser, "
                     "resizing exactly as Pillow does)")
    elif feed == "float32":
        steps.append(f"{norm}; feed float32 (N, H, W, 3)")
    else:
        steps.append(f"feed uint8 (N, H, W, 3); the model itself does: {norm}, softmax")
    return steps


def readme(fmt: str, run, info: dict[str, Any]) -> str:
    lines = [f"diycnn export of run '{run.name}' ({info['run']['recipe']}), format {fmt}.", "",
             f"Classes (output order): {', '.join(run.class_names)}", "", "Preprocessing, in order:"]
    lines += [f"  {i + 1}. {s}" for i, s in enumerate(info["steps"])]
    lines.append("")
    tfjs = info["model_file"] == TFJS_MODEL_FILE
    if fmt in ("onnx", "tm") and not tfjs:
        lines += ["Use it without diycnn (pip install onnxruntime pillow numpy):",
                  "    python predict.py photo.jpg [more photos or folders] [--model model.int8.onnx]",
                  "or with diycnn (torch is not imported):",
                  "    diycnn predict THIS_FOLDER photo.jpg --json"]
        unknown = info.get("unknown") or {}
        if unknown.get("output"):
            lines += ["", f"'None of these': the model's second output, {unknown['output']}, is the photo's distance "
                          f"from every class ({unknown['method']}). Above {unknown['threshold']:.4f} (export.json's "
                          "unknown.threshold) the photo is of none of the classes, whatever the probabilities say; "
                          "predict.py answers label 'unknown' then."]
        elif unknown.get("why"):
            lines += ["", f"This model always names one of the classes: {unknown['why']}."]
    elif fmt == "torchscript":
        lines += ["Load it with torch only:", "    model = torch.jit.load('model.torchscript.pt').eval()",
                  "    probabilities = model(uint8_tensor_of_shape_N_H_W_3)"]
        unknown = info.get("unknown") or {}
        if unknown.get("method_name"):
            lines += ["", f"'None of these': model.{unknown['method_name']}(the same tensor) is each photo's distance "
                          f"from every class ({unknown['method']}). Above {unknown['threshold']:.4f} (export.json's "
                          "unknown.threshold) the photo is of none of the classes, whatever the probabilities say."]
        elif unknown.get("why"):
            lines += ["", f"This model always names one of the classes: {unknown['why']}."]
    elif fmt == "tm" and info["model_file"] == TFJS_MODEL_FILE:
        lines += ["Teachable Machine's own export format: load it with its library (@teachablemachine/image 0.8 "
                  "or later reads imageSize from metadata.json) or with TensorFlow.js:",
                  "    const model = await tmImage.load('model.json', 'metadata.json');",
                  "    const predictions = await model.predict(imageOrCanvasOrVideo);",
                  "The model takes float32 (n, height, width, 3) pixels / 127 - 1, as Teachable Machine's library "
                  "feeds them."]
    elif fmt == "tfjs":
        lines += ["Load it with TensorFlow.js (browser or Node.js; serve this folder over HTTP for a browser):",
                  "    const model = await tf.loadLayersModel('model.json');",
                  "    const probabilities = model.predict(tf.tensor(float32Pixels, [n, height, width, 3]));",
                  "metadata.json has Teachable Machine's fields; pixels are scaled as the steps above say "
                  "(not as Teachable Machine's own library scales them)."]
    else:
        lines += ["Load it with Keras 3 (any backend):", "    model = keras.saving.load_model('model.keras')",
                  "    probabilities = model.predict(float32_array_of_shape_N_H_W_3)"]
    if tfjs:
        lines += ["", _predict_js_note(info)]
    if needs_face_inputs(run, info["model_file"]):
        lines += ["", _face_input_note(run.preprocessing)]
    for snippet in snippets(info):
        lines += ["", f"{snippet['language']}, to copy and paste:", ""]
        lines += ["    " + line for line in snippet["code"].splitlines()]
    lines += ["", "At export time: " + check_line(info["check"])]
    return "\n".join(lines) + "\n"


def needs_face_inputs(run, model_file: str) -> bool:
    """Whether the exported model takes a face the run cropped or aligned but cannot do that itself (every
    format but ONNX, whose folder crops and aligns): such folders ship predict.py --save-inputs."""
    return not model_file.endswith(".onnx") and (run.preprocessing.faces or run.preprocessing.align)


def _face_input_note(prep) -> str:
    """README.txt's words for an export whose model takes the cropped or aligned face (needs_face_inputs):
    what it takes and how to make that from a photo."""
    h, w = prep.output_size
    what = ("the face aligned as diycnn aligns it: eyes levelled at (30%, 30%) and (70%, 30%) of the image by "
            "face-api's 68-point landmark network (landmarks.onnx here)" if prep.align
            else "the largest face cropped with OpenCV's Haar cascade, as the steps above say")
    return (f"This model takes {what}, {w}x{h} pixels; a whole photo gives wrong answers. Make those images "
            "from photos with predict.py (pip install onnxruntime pillow numpy"
            + (" opencv-python-headless" if prep.faces else "") + "):\n"
            "    python predict.py --save-inputs inputs/ photo.jpg [more photos or folders]\n"
            "then give inputs/*.png to the model as the snippet below does.")


def _predict_js_note(info: dict[str, Any]) -> str:
    """README.txt's words on predict.js, the TF.js folders' own prediction code, and "none of these"."""
    text = ("predict.js (window.diycnnPredict in a page, require() in Node.js) does what the run does to a photo: "
            "its resizing, exactly as Pillow does it, its scaling, its mirror averaging; predict.json holds the "
            "classes, those steps and the class means. predict(tf, model, inputs, settings) answers probabilities, "
            "unknown_score and unknown.")
    unknown = info.get("unknown") or {}
    if unknown.get("script"):
        text += (f" 'None of these': unknown_score is the distance of the model's features from every class "
                 f"({unknown['method']}); above {unknown['threshold']:.4f} (predict.json's unknown.threshold) the "
                 "photo is of none of the classes, whatever the probabilities say, and unknown is true.")
    elif unknown.get("why"):
        text += f" This model always names one of the classes: {unknown['why']}."
    return text
