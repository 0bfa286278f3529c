"""The fp32 CPU weight gradient (models/fast_conv.py) computes what the standard path computes."""

import numpy as np
import pytest
import torch

from diycnn.models import fast_conv
from diycnn.models.layers import KConv2d


def reference_weight_grad(x, grad, weight):
    return torch.ops.aten.convolution_backward(grad, x, weight, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1,
                                               [False, True, False])[1]


@pytest.mark.parametrize("shape, kernel, channels_last", [
    ((3, 40, 13, 11), (3, 3), True),
    ((2, 33, 9, 16), (3, 5), False),
    ((1, 64, 7, 7), (1, 1), True),
    ((2, 32, 6, 5), (6, 5), True),  # the kernel covers the whole input: one output position
])
def test_weight_grad_matches_onednn(shape, kernel, channels_last):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(24, shape[1], *kernel, generator=g)
    grad = torch.randn(shape[0], 24, shape[2] - kernel[0] + 1, shape[3] - kernel[1] + 1, generator=g)
    ours = fast_conv.weight_grad(x, grad, kernel)
    ref = reference_weight_grad(x, grad, weight)
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def grads(conv, x, fast: bool, monkeypatch):
    monkeypatch.setattr(fast_conv, "applies", fast_conv.applies if fast else (lambda *a: False))
    conv.zero_grad(set_to_none=True)
    xr = x.clone().requires_grad_(True)
    out = conv(xr)
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    return out.detach(), xr.grad, conv.weight.grad, None if conv.bias is None else conv.bias.grad


@pytest.mark.parametrize("padding, pad, bias", [(0, None, True), ((1, 1), None, False), (0, (0, 1, 0, 1), True)])
def test_layer_gradients_equal_the_standard_path(padding, pad, bias, monkeypatch):
    torch.manual_seed(0)
    conv = KConv2d(48, 16, (3, 3), padding=padding, bias=bias, pad=pad, act=torch.nn.ReLU())
    conv = conv.to(memory_format=torch.channels_last)
    x = torch.randn(3, 48, 12, 10).contiguous(memory_format=torch.channels_last)
    called = []
    real = fast_conv.weight_grad
    monkeypatch.setattr(fast_conv, "weight_grad", lambda *a: called.append(1) or real(*a))
    fast = grads(conv, x, True, monkeypatch)
    assert called, "the fast weight gradient was not used"
    plain = grads(conv, x, False, monkeypatch)
    for a, b in zip(fast, plain):
        if b is not None:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_only_where_it_is_the_same_computation():
    conv = KConv2d(64, 8, (3, 3))
    x = torch.randn(1, 64, 8, 8)
    assert fast_conv.applies(conv, x)
    with torch.no_grad():
        assert not fast_conv.applies(conv, x)  # prediction: the inference path's business
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not fast_conv.applies(conv, x)  # bf16 keeps oneDNN's kernels (and its speed figures)
    assert not fast_conv.applies(KConv2d(64, 8, (3, 3), stride=2), x)
    assert not fast_conv.applies(KConv2d(3, 8, (3, 3)), torch.randn(1, 3, 8, 8))  # too thin for matrix products
    assert not fast_conv.applies(conv, x.double())
    traced = torch.jit.trace(conv, x)  # an exporter sees aten::_convolution, not the custom gradient
    assert "_convolution" in str(traced.graph) and "PythonOp" not in str(traced.graph)
    conv.weight.requires_grad_(False)
    assert not fast_conv.applies(conv, x)


def test_training_the_blogs_model_follows_the_standard_path(monkeypatch):
    """Two Adam steps of seed-cnn at fp32: the same losses and weights as with oneDNN's weight
    gradient, up to fp32 summation order."""
    from diycnn.data.augment import image_input_fn
    from diycnn.data.loader import ArrayBatches
    from diycnn.models.recipes import get_recipe
    from diycnn.training.trainer import FitConfig, Trainer

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (4, 100, 100, 3), dtype=np.uint8)
    y = np.array([0, 1, 0, 1])
    real = fast_conv.applies

    def run(fast: bool):
        monkeypatch.setattr(fast_conv, "applies", real if fast else (lambda *a: False))
        recipe = get_recipe("seed-cnn", 2)
        trainer = Trainer(recipe.build(seed=0), ArrayBatches(x, y, 4), ArrayBatches(x, y, 4),
                          image_input_fn(recipe.preprocessing), FitConfig(epochs=1, lr=1e-3, patience=None, seed=0),
                          torch.device("cpu"), "fp32")
        trainer.module.train()
        torch.manual_seed(0)  # the same dropout masks
        losses = [float(trainer._train_step(torch.from_numpy(x), torch.from_numpy(y))[0]) for _ in range(2)]
        return losses, {k: v.detach().clone() for k, v in trainer.module.state_dict().items()}

    fast_losses, fast_state = run(True)
    plain_losses, plain_state = run(False)
    assert fast_losses == pytest.approx(plain_losses, rel=1e-5)
    for name, value in plain_state.items():
        # Adam's first steps move each weight by about lr * sign(gradient): a gradient within fp32
        # rounding of zero may take the other sign, so allow a few such weights and nothing else.
        diff = (fast_state[name] - value).abs()
        assert float(diff.max()) <= 2.5e-3 and int((diff > 1e-5).sum()) <= max(2, value.numel() // 10_000), name
