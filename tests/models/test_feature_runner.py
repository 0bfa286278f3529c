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


def test_a_run_trained_on_onnxruntime_features_predicts_them_in_pytorch(two_class_data, tmp_path, monkeypatch, caplog):
    """tm trained on features from onnxruntime (PyTorch made to look slower on the check batch, and the
    photo count that tries it lowered to this folder's): the saved model, predicting in PyTorch, gives
    the probabilities the run scored its test photos with."""
    import itertools

    import diycnn
    from diycnn import pipeline
    from diycnn.exports import onnx_format

    clock = itertools.chain([0.0, 10.0, 10.0, 11.0], itertools.repeat(11.0))  # PyTorch 10 s, onnxruntime 1 s

    class Clock:
        @staticmethod
        def perf_counter():
            return next(clock)

    monkeypatch.setattr(onnx_format, "time", Clock)
    monkeypatch.setattr(pipeline, "ONNX_FROM", 1)
    with caplog.at_level(logging.INFO, logger="diycnn"):
        run = diycnn.train(two_class_data, model="tm", out=tmp_path / "run", epochs=2, seed=0)
    assert "Features extracted with onnxruntime" in caplog.text
    stored = run.metrics["test_probabilities"]
    names = run.class_names
    again = diycnn.load(run.dir).predict([two_class_data / p for p in stored])
    for item, path in zip(again, stored):
        assert np.allclose([item["probabilities"][c] for c in names], stored[path], atol=1e-4)
