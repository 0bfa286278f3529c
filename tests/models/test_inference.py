"""The exact shortcuts on the prediction path: the input crop and the oneDNN forward."""

import logging

import pytest
import torch

from diycnn.models import inference
from diycnn.models.inference import inference_forward
from diycnn.models.recipes import get_recipe
from diycnn.models.sequential import Sequential

CPU = torch.device("cpu")


def spec(*layers, size=(15, 15)):
    return Sequential.from_config({"layers": [{"Input": {"shape": [size[0], size[1], 3]}}, *layers]})


def conv(filters, activation="relu", **kw):
    return {"Conv2D": {"filters": filters, "kernel_size": 3, "activation": activation, **kw}}


POOL = {"MaxPooling2D": {"pool_size": 2}}
HEAD = ["Flatten", {"Dense": {"units": 8, "activation": "relu"}}, {"Dropout": {"rate": 0.5}}, {"Dense": {"units": 3}}]


def test_used_input_size_follows_valid_windows_back_to_the_photo():
    assert get_recipe("seed-cnn", 2).build(seed=0).crop == (98, 98)  # 100 -> 98 -> 49 (uses 48) -> 47 (uses 46)
    assert spec(conv(4), POOL, *HEAD, size=(16, 16)).used_input_size() is None  # 16 -> 14 -> 7: all used
    assert spec(conv(4), POOL, *HEAD, size=(15, 17)).used_input_size() == (14, 16)
    # 'same' padding and BatchNormalization (batch statistics over every position) need the whole map.
    assert spec(conv(4, padding="same"), POOL, *HEAD).used_input_size() is None
    assert spec(conv(4), "BatchNormalization", POOL, *HEAD).used_input_size() is None
    # Per-pixel layers pass the need through; global pooling needs everything.
    assert spec(conv(4), {"Activation": {"activation": "tanh"}}, POOL, *HEAD).used_input_size() == (14, 14)
    assert spec(conv(4), POOL, "GlobalAveragePooling2D", {"Dense": {"units": 3}}).used_input_size() == (14, 14)
    assert spec(conv(4), "GlobalAveragePooling2D", {"Dense": {"units": 3}}).used_input_size() is None


def test_pixels_outside_the_crop_never_reach_the_output():
    model = spec(conv(6), POOL, conv(4), POOL, *HEAD, size=(17, 19))
    module = model.build(seed=0).to(memory_format=torch.channels_last)
    assert module.crop == (14, 18)
    x = torch.randn(4, 3, 17, 19).contiguous(memory_format=torch.channels_last)
    changed = x.clone()
    changed[..., 14:, :] = 1e3  # rows and columns the crop drops
    changed[..., :, 18:] = -1e3
    grads = []
    for batch in (x, changed):
        module.zero_grad()
        torch.manual_seed(1)  # same dropout masks
        out = module(batch)
        out.square().sum().backward()
        grads.append((out.detach(), [p.grad.clone() for p in module.parameters()]))
    assert torch.equal(grads[0][0], grads[1][0])
    for a, b in zip(grads[0][1], grads[1][1]):
        assert torch.equal(a, b)


MODELS = {
    "blog-like": [conv(8), POOL, conv(6), POOL, *HEAD],
    "not-fused": [conv(8, activation="tanh"), {"AveragePooling2D": {"pool_size": 2}}, conv(6, padding="same"),
                  {"MaxPooling2D": {"pool_size": 2, "padding": "same"}}, *HEAD],
    "batchnorm": [conv(8, activation=None), "BatchNormalization", {"Activation": {"activation": "relu"}}, POOL,
                  conv(6), POOL, *HEAD],
}


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_inference_forward_equals_the_module(name, precision):
    if precision == "bf16" and inference._onednn_dtype(CPU, "bf16") is None:
        pytest.skip("this CPU has no oneDNN bf16")
    module = spec(*MODELS[name], size=(21, 21)).build(seed=0).eval().to(memory_format=torch.channels_last)
    x = torch.rand(5, 3, 21, 21).contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        expected = module(x).float()
        forward = inference_forward(module, CPU, precision)
        got = forward(x).float()
    if name == "blog-like":
        assert forward is not module  # the oneDNN path is really taken for conv/max-pool/ReLU runs
    tol = {"rtol": 1e-5, "atol": 1e-5} if precision == "fp32" else {"rtol": 2e-2, "atol": 2e-2}
    torch.testing.assert_close(got, expected, **tol)


def test_plan_is_kept_only_while_the_weights_are_unchanged():
    module = spec(*MODELS["blog-like"], size=(21, 21)).build(seed=0).eval()
    x = torch.rand(2, 3, 21, 21)
    with torch.no_grad():
        first = inference_forward(module, CPU, "fp32", keep=True)
        assert inference_forward(module, CPU, "fp32", keep=True) is first
        before = first(x)
        module.body["dense_1"].bias.add_(1.0)  # an optimiser step or load_state_dict does the same
        second = inference_forward(module, CPU, "fp32", keep=True)
        assert second is not first
        torch.testing.assert_close(second(x), module(x))
        assert not torch.allclose(second(x), before)
    fresh = spec(*MODELS["blog-like"], size=(21, 21)).build(seed=0).eval()
    inference_forward(fresh, CPU, "fp32")
    assert inference._CACHE not in fresh.__dict__  # training code's evaluations hold nothing afterwards


def test_falls_back_to_the_module(monkeypatch, caplog):
    module = spec(*MODELS["blog-like"], size=(21, 21)).build(seed=0).eval()
    x = torch.rand(2, 3, 21, 21)
    with torch.no_grad():
        expected = module(x)
        assert inference_forward(module, torch.device("meta"), "fp32") is module  # not a CPU
        monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
        assert inference_forward(module, CPU, "fp32") is module
        monkeypatch.undo()

        def broken(*args):
            raise RuntimeError("no oneDNN convolution in this build")

        monkeypatch.setattr(torch, "mkldnn_convolution", broken)
        forward = inference_forward(module, CPU, "fp32")
        with caplog.at_level(logging.WARNING, logger="diycnn.models.inference"):
            torch.testing.assert_close(forward(x), expected)
        assert "plain forward" in caplog.text
        torch.testing.assert_close(forward(x), expected)  # and stays on it


def test_a_pytorch_without_the_private_onednn_helpers_predicts_with_the_plain_forward(monkeypatch, caplog):
    """models/inference.py calls private PyTorch functions; a PyTorch that renamed them must still
    predict (the standard forward), saying so once."""
    assert inference.private_apis_present()  # this PyTorch has them
    monkeypatch.delattr(torch._C._nn, "mkldnn_reorder_conv2d_weight")
    assert not inference.private_apis_present()
    monkeypatch.setattr(inference._onednn_dtype, "warned", False, raising=False)
    module = spec(*MODELS["blog-like"], size=(21, 21)).build(seed=0).eval()
    x = torch.rand(2, 3, 21, 21)
    with torch.no_grad(), caplog.at_level("WARNING"):
        assert inference_forward(module, CPU, "fp32") is module
        inference_forward(module, CPU, "fp32")
    assert sum("lacks the oneDNN internals" in r.message for r in caplog.records) == 1
    with torch.no_grad():
        torch.testing.assert_close(inference_forward(module, CPU, "fp32")(x), module(x))
