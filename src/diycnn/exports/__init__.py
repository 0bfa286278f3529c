"""Export a run so it predicts the same everywhere: ONNX, TorchScript, Keras, TensorFlow.js and Teachable
Machine's files.

Every export is checked when it is written: the exported model runs the run's test photos
(or, when the data folder is gone, seeded synthetic photos) and its probabilities must equal
torch's within `TOLERANCE`, or the export fails and nothing is left behind.

ONNX and TorchScript exports take what `Preprocessing.load` gives: uint8 photos (N, H, W, 3),
already decoded, face-cropped, resized and centre-cropped as export.json records; pixel
scaling, mean/std normalisation, the softmax and (when the run uses it) test-time
augmentation are inside the exported graph, so they cannot be forgotten or done differently.
The Keras export is the spec's own layers (as the blog's readers wrote them), so it takes
float pixels already scaled and normalised, as export.json says; so does the TF.js export. The
`tm` export is what Teachable Machine's own export gives (TF.js files + metadata.json, for
`tmImage.load`): the TF.js model with a first layer that takes pixels as Teachable Machine's
library feeds them (p / 127 - 1). Runs TF.js cannot carry get ONNX with Teachable Machine's files.

Each format has its own module: onnx_format (ONNX, int8, the landmark network), torchscript_format,
keras_export (with keras_format, which builds the Keras model), tfjs_export (with tfjs_format and
tfjs_backbone, which write the TF.js files), tm_format. checking finds the photos an export is
checked on and the run's own probabilities for them; job holds what the writers share; readme
writes the words; driver runs one export. onnx_sizes bounds what an ONNX file allocates (also at
load, in runtime, which predicts with an ONNX export without torch). This package re-exports.
"""

from __future__ import annotations

from ..settings import EXPORT_FORMATS as FORMATS
from .checking import SYNTHETIC_PHOTOS, check_photos
from .driver import WRITERS, export, formats_for, tm_is_tfjs
from .job import TOLERANCE, ExportError, check_line
from .onnx_format import OPSET, onnx_probs, onnx_session
from .runtime import MODEL_FILES

__all__ = ["export", "FORMATS", "formats_for", "check_line", "ExportError", "TOLERANCE", "WRITERS", "OPSET",
           "SYNTHETIC_PHOTOS", "MODEL_FILES", "check_photos", "tm_is_tfjs", "onnx_session", "onnx_probs"]
