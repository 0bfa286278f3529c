"""The Keras export's writer: model.keras (keras_format builds it), checked in Keras itself.
"""

from __future__ import annotations

import numpy as np

from .job import Job, compare, image_input, mirror_note, normalised
from .keras_format import export_keras


def write_keras(job: Job) -> None:
    """model.keras (Keras 3), run through Keras itself."""

    run, info = job.run, job.info
    scaled = normalised(run.preprocessing, job.images)
    model, info["versions"]["keras"] = export_keras(run, job.model_path)

    def predict(x):
        return np.asarray(model.predict(np.ascontiguousarray(x), verbose=0, batch_size=32))

    info["input"] = {**image_input(job.images), "dtype": "float32", "pixels": "scaled and normalised as 'steps' says"}
    got = predict(scaled)
    if run.tta:
        info["tta_note"] = mirror_note("Keras", "average model(x) and model(x[:, :, ::-1]) to get the same numbers")
        got = (got + predict(scaled[:, :, ::-1])) / 2
    info["check"] = compare("Keras", got, job.want, job.source)
