"""The fp32 CPU training paths of models/fast_conv.py compute what the standard path computes:
the fast weight gradient, and the fused convolution -> 2x2 max pooling -> ReLU."""

import numpy as np
import pytest
import torch

from diycnn.models import fast_conv
from diycnn.models.modules import KConv2d, KPool2d


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


@pytest.mark.slow
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
    real, real_pool = fast_conv.applies, fast_conv.pool_applies
    fused = []
    monkeypatch.setattr(fast_conv, "conv_pool_relu", lambda *a, f=fast_conv.conv_pool_relu: fused.append(1) or f(*a))

    def run(fast: bool):
        monkeypatch.setattr(fast_conv, "applies", real if fast else (lambda *a: False))
        monkeypatch.setattr(fast_conv, "pool_applies", real_pool if fast else (lambda *a: False))
        recipe = get_recipe("seed-cnn", 2)
        trainer = Trainer(recipe.build(seed=0), ArrayBatches(x, y, 4), ArrayBatches(x, y, 4),
                          image_input_fn(recipe.preprocessing), FitConfig(epochs=1, lr=1e-3, patience=None, seed=0),
                          torch.device("cpu"), "fp32")
        trainer.module.train()
        torch.manual_seed(0)  # the same dropout masks
        losses = [float(trainer._train_step(torch.from_numpy(x), torch.from_numpy(y))[0]) for _ in range(2)]
        return losses, {k: v.detach().clone() for k, v in trainer.module.state_dict().items()}

    fast_losses, fast_state = run(True)
    assert len(fused) == 2, "the first block did not run fused"
    plain_losses, plain_state = run(False)
    assert len(fused) == 2
    assert fast_losses == pytest.approx(plain_losses, rel=1e-5)
    for name, value in plain_state.items():
        # Adam's first steps move each weight by about lr * sign(gradient): a gradient within fp32
        # rounding of zero may take the other sign, so allow a few such weights and nothing else.
        diff = (fast_state[name] - value).abs()
        assert float(diff.max()) <= 2.5e-3 and int((diff > 1e-5).sum()) <= max(2, value.numel() // 10_000), name


def conv_pool_block(c_in=3, c_out=24, kernel=(3, 3), bias=True):
    torch.manual_seed(0)
    conv = KConv2d(c_in, c_out, kernel, bias=bias)
    pool = KPool2d("max", (2, 2), (2, 2), None)
    pool.post_act = torch.nn.ReLU()  # the conv's ReLU, moved after the pooling as sequential.py does
    return conv, pool


def block_grads(conv, pool, x, fused: bool, weight_grad_out):
    conv.zero_grad(set_to_none=True)
    assert fast_conv.pool_applies(conv, pool, x)
    out = fast_conv.conv_pool_relu(conv, x) if fused else pool(conv(x))
    (out * weight_grad_out).sum().backward()
    return out.detach(), conv.weight.grad, None if conv.bias is None else conv.bias.grad


@pytest.mark.parametrize("size, kernel, bias, channels_last", [
    ((100, 100), (3, 3), True, True),    # the blog model's first block, shrunk in channels
    ((13, 11), (3, 3), False, False),    # odd sizes: the pooling drops the last row/column
    ((12, 17), (5, 3), True, True),
])
def test_fused_conv_pool_relu_equals_the_three_layers(size, kernel, bias, channels_last):
    conv, pool = conv_pool_block(kernel=kernel, bias=bias)
    x = torch.rand(2, 3, *size)
    x[:, :, 2:9, 3:10] = 0.5  # a flat patch: equal convolution outputs, ties inside pooling windows
    if channels_last:
        conv = conv.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        shape = pool(conv(x)).shape
    g = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    fused = block_grads(conv, pool, x, True, g)
    plain = block_grads(conv, pool, x, False, g)
    assert torch.equal(fused[0], plain[0])  # the forward is exactly the same numbers
    assert (fused[0] == 0).any() and (fused[0] > 0).any()
    for a, b in zip(fused[1:], plain[1:]):
        if b is not None:
            assert a.stride() == b.stride()
            # sums of thousands of products in another order: fp32 rounding relative to their scale
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * float(b.abs().max()))


def test_fused_ties_go_to_the_first_corner_as_in_max_pool2d():
    """A window whose four values are equal: max_pool2d sends the whole gradient to its top-left
    corner; a wrong tie rule would send it elsewhere and change the weight gradient."""
    conv, pool = conv_pool_block(c_out=4)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[:, :, 1, 1] = 1.0  # the convolution copies the centre pixel (summed over channels)
        conv.bias.fill_(0.1)
    x = torch.zeros(1, 3, 6, 6)
    x[0, :, 1:3, 1:3] = 1.0  # window (0, 0) of the 4x4 output: four equal values
    x[0, :, 4, 4] = 2.0       # window (1, 1): its bottom-right corner wins
    g = torch.ones(1, 4, 2, 2)
    fused = block_grads(conv, pool, x, True, g)
    plain = block_grads(conv, pool, x, False, g)
    torch.testing.assert_close(fused[1], plain[1], rtol=0, atol=1e-6)
    torch.testing.assert_close(fused[2], plain[2], rtol=0, atol=1e-6)


def test_fused_only_where_it_is_the_same_computation():
    conv, pool = conv_pool_block()
    x = torch.rand(1, 3, 10, 10)
    assert fast_conv.pool_applies(conv, pool, x)
    with torch.no_grad():
        assert not fast_conv.pool_applies(conv, pool, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not fast_conv.pool_applies(conv, pool, x)
    assert not fast_conv.pool_applies(conv, pool, x.requires_grad_(True))  # not the first layer
    x = x.detach()
    for other in (KPool2d("max", (3, 3), (2, 2), None), KPool2d("avg", (2, 2), (2, 2), None),
                  KPool2d("max", (2, 2), (2, 2), (0, 1, 0, 1))):
        other.post_act = torch.nn.ReLU()
        assert not fast_conv.pool_applies(conv, other, x)
    no_relu = KPool2d("max", (2, 2), (2, 2), None)
    assert not fast_conv.pool_applies(conv, no_relu, x)
    assert not fast_conv.pool_applies(KConv2d(3, 8, (3, 3), padding=1), pool, x)
    assert not fast_conv.pool_applies(KConv2d(3, 8, (3, 3), pad=(0, 1, 0, 1)), pool, x)
    assert not fast_conv.pool_applies(KConv2d(3, 8, (3, 3), act=torch.nn.ReLU()), pool, x)
    assert not fast_conv.pool_applies(conv, pool, x.double())
    handle = pool.register_forward_hook(lambda *a: None)  # Grad-CAM watches a layer: it must run
    assert not fast_conv.pool_applies(conv, pool, x)
    handle.remove()
    handle = pool.post_act.register_forward_hook(lambda *a: None)  # or the ReLU inside the pool
    assert not fast_conv.pool_applies(conv, pool, x)
    handle.remove()
    assert fast_conv.pool_applies(conv, pool, x)
