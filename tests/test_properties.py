"""Property-based tests (hypothesis): random Keras-style specs agree with the torch modules they
build, and random bytes never make the image loader raise anything but ImageError."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from diycnn.data.images import ImageError, Preprocessing, load_rgb, probe
from diycnn.models.layers import (
    Activation,
    AveragePooling2D,
    BatchNormalization,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAveragePooling2D,
    Input,
    MaxPooling2D,
    Rescaling,
)
from diycnn.models.sequential import Sequential

ACTS = ["relu", "linear", "sigmoid", "tanh", "swish", "gelu", "leaky_relu", "elu", "relu6"]


@st.composite
def specs(draw):
    """A random image classifier spec; specs whose shapes shrink below 1x1 are rejected by Sequential."""
    size = draw(st.integers(4, 20))
    layers = [Input(shape=(size, draw(st.integers(4, 20)), 3))]
    if draw(st.booleans()):
        layers.append(Rescaling(1 / 255))
    for _ in range(draw(st.integers(0, 3))):
        layers.append(Conv2D(draw(st.integers(1, 6)), (draw(st.integers(1, 3)), draw(st.integers(1, 3))),
                             strides=draw(st.integers(1, 2)), padding=draw(st.sampled_from(["valid", "same"])),
                             activation=draw(st.sampled_from(ACTS)), use_bias=draw(st.booleans())))
        if draw(st.booleans()):
            layers.append(BatchNormalization())
            layers.append(Activation(draw(st.sampled_from(ACTS))))
        if draw(st.booleans()):
            pool = draw(st.sampled_from([MaxPooling2D, AveragePooling2D]))
            layers.append(pool(draw(st.integers(1, 3)), strides=draw(st.sampled_from([None, 1, 2])),
                               padding=draw(st.sampled_from(["valid", "same"]))))
    layers.append(draw(st.sampled_from([Flatten, GlobalAveragePooling2D]))())
    if draw(st.booleans()):
        layers += [Dense(draw(st.integers(1, 16)), activation=draw(st.sampled_from(ACTS))), Dropout(0.25)]
        if draw(st.booleans()):
            layers.append(BatchNormalization())
    layers.append(Dense(draw(st.integers(2, 5)), activation=draw(st.sampled_from(["softmax", "linear"]))))
    return layers


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs(), st.integers(1, 3))
def test_random_specs_summary_equals_the_torch_module(layers, batch):
    try:
        spec = Sequential(layers)
    except ValueError as exc:  # the only allowed refusal: a shape shrinking below 1x1
        assert "smaller than 1x1" in str(exc)
        assume(False)
    module = spec.build(seed=0).eval()
    rows = spec.rows()
    # Keras counts BatchNormalization's moving mean and variance as (non-trainable) parameters
    buffers = sum(b.numel() for name, b in module.named_buffers() if name.endswith(("running_mean", "running_var")))
    assert spec.count_params() == sum(p.numel() for p in module.parameters()) + buffers
    assert sum(r["non_trainable"] for r in rows) == buffers
    shapes = []
    hooks = [m.register_forward_hook(lambda mod, i, out: shapes.append(tuple(out.shape))) for m in module.body.values()]
    h, w, _ = spec.input_shape
    with torch.no_grad():
        out = module(torch.rand(batch, 3, h, w))
    for hook in hooks:
        hook.remove()
    for row, got in zip(rows, shapes):
        want = row["output_shape"][1:]
        keras_order = (got[2], got[3], got[1]) if len(got) == 4 else got[1:]  # NCHW -> HWC
        assert keras_order == tuple(want), (row["name"], got, want)
    assert out.shape == (batch, spec.output_shape[0]) and torch.isfinite(out).all()


MAGIC = [b"", b"\xff\xd8\xff\xe0", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"BM", b"RIFF\x00\x00\x00\x00WEBP", b"II*\x00"]


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")
@settings(max_examples=300, deadline=None)
@given(st.sampled_from(MAGIC), st.binary(max_size=2048))
def test_random_bytes_raise_only_image_error(magic, body):
    data = magic + body
    for fn in (probe, load_rgb, Preprocessing(size=(8, 8)).load):
        try:
            result = fn(data)
        except ImageError as exc:
            assert exc.reason  # always says why
        else:  # random bytes that happen to decode must give a sane result
            if fn is load_rgb:
                assert result.mode == "RGB"
            elif fn is not probe:
                assert result.shape == (8, 8, 3) and result.dtype == np.uint8


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.sampled_from(["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "F"]),
       st.sampled_from(["PNG", "TIFF", "GIF", "BMP", "WEBP", "JPEG"]), st.integers(0, 2**32 - 1))
def test_every_mode_and_format_decodes_to_rgb(w, h, mode, fmt, seed):
    rng = np.random.default_rng(seed)
    im = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB").convert(mode)
    buf = io.BytesIO()
    try:
        im.save(buf, format=fmt)
    except (OSError, ValueError, KeyError):
        assume(False)  # Pillow cannot write this mode in this format
    out = Preprocessing(size=(8, 8)).load(buf.getvalue())
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
