"""Features of a frozen backbone extracted in onnxruntime (exports/onnx_format.feature_runner):
used only where they agree with PyTorch's and are faster; otherwise PyTorch extracts them."""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from diycnn.exports.onnx_format import FEATURES_AGREE, feature_runner
from diycnn.models.face_net import FaceRecognitionNet


def _net_and_photos():
    torch.manual_seed(0)
    return FaceRecognitionNet().eval(), torch.randn(4, 3, 150, 150)


def _slow(forward):
    def run(x):
        time.sleep(0.5)  # PyTorch made slower than any onnxruntime run of 4 photos here
        return forward(x)
    return run


def test_onnxruntime_features_are_pytorchs_where_they_are_used():
    net, x = _net_and_photos()
    run = feature_runner(net, x, _slow(net))
    assert run is not None
    with torch.no_grad():
        want = net(x).numpy()
    got = run(x[:3].clone())  # another batch size than the check's
    assert got.shape == (3, 128)
    assert np.abs(got - want[:3]).max() <= FEATURES_AGREE * np.abs(want).max()


def test_pytorch_extracts_where_onnxruntime_disagrees_or_is_slower(caplog):
    net, x = _net_and_photos()
    with caplog.at_level(logging.INFO, logger="diycnn"):
        assert feature_runner(net, x, _slow(lambda v: net(v) + 1e-2)) is None  # not the same numbers
        assert "differ" in caplog.text
        with torch.no_grad():
            known = net(x)
        assert feature_runner(net, x, lambda v: known) is None  # PyTorch instant, with the same numbers
        assert "Features extracted with PyTorch (onnxruntime" in caplog.text
        assert feature_runner(lambda v: v.numpy(), x, net) is None  # not a network it can export
        assert "could not run the backbone" in caplog.text
