"""Faster fp32 training of convolutions on CPUs: a weight gradient, and a fused conv-pool block.

Profiling a training step of the blog's model in fp32 on a 2-core AVX2 CPU (AMD Zen 3): the
second convolution's weight gradient (oneDNN, through `convolution_backward`) ran at 47-78
GFLOP/s while the same CPU multiplies fp32 matrices at ~150 and runs that convolution's
forward at ~147; it was the largest single cost of the step (bench/keras_speed.py, README
"Speed on CPUs without bf16").

The weight gradient is a sum over every output position of (output gradient) x (input patch):
for each kernel offset (a, b), dW[:, :, a, b] = sum_n G_n^T @ X_n[shifted by (a, b)]. With the
input in channels-last layout, each image's rows flattened, and the output gradient padded to
the input's width, every shifted input is a plain *view* (row offset a * width + b; the two
padding columns of each row multiply zeros), so the gradient is 9 batched matrix products with
no copy of the input: ~147 GFLOP/s here. The input gradient stays oneDNN's (already ~120).

Used only where it is the same computation: training on the CPU in fp32 (no autocast), stride
1, no dilation, one group, at least MIN_CHANNELS input channels (below that the matrix products
are too thin); results equal the standard path up to the order of fp32 summation (tested).

The second part (`conv_pool_relu`) runs a network's first block, convolution -> 2x2 max pooling
-> ReLU, as four stride-2 convolutions and an elementwise maximum (see `_ConvPoolReLU`). On the
blog's model that block's full-size output and the pooling's indices were the step's largest
tensors (470 MB for 16 photos); allocating, zero-filling and scattering into them each step cost
about as much as the second convolution's forward pass. Without them a training step took 2.33 s
instead of 3.04 s here, and peak memory fell by ~550 MB. The forward output is bit-identical;
gradients equal the standard path up to fp32 summation order, with max_pool2d's tie rule.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MIN_CHANNELS = 32


def applies(conv: torch.nn.Conv2d, x: torch.Tensor) -> bool:
    """Whether `conv`'s forward on `x` should use the fast weight gradient."""
    if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling():
        return False  # exporters and compilers see the plain convolution
    return (torch.is_grad_enabled() and conv.weight.requires_grad and x.device.type == "cpu"
            and x.dtype == torch.float32 and conv.weight.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu") and conv.stride == (1, 1) and conv.dilation == (1, 1)
            and conv.groups == 1 and conv.in_channels >= MIN_CHANNELS and conv.padding_mode == "zeros"
            and isinstance(conv.padding, tuple))


def conv2d(conv: torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """`conv(x)` with the fast weight gradient (see `applies`)."""
    ph, pw = conv.padding
    if ph or pw:
        x = F.pad(x, (pw, pw, ph, ph))
    return _Conv2dFastWeightGrad.apply(x, conv.weight, conv.bias)


def weight_grad(x: torch.Tensor, grad: torch.Tensor, kernel: tuple[int, int]) -> torch.Tensor:
    """dL/dW (out, in, kh, kw) of a stride-1, unpadded convolution of x (N, in, H, W) whose output
    gradient is `grad` (N, out, H-kh+1, W-kw+1)."""
    n, c_in, h, w = x.shape
    c_out, oh, ow = grad.shape[1], grad.shape[2], grad.shape[3]
    kh, kw = kernel
    rows = x.permute(0, 2, 3, 1).contiguous().view(n, h * w, c_in)  # free for a channels-last x
    padded = grad.new_zeros(n, oh, w, c_out)
    padded[:, :, :ow, :] = grad.permute(0, 2, 3, 1)
    span = (oh - 1) * w + ow  # the last row's padding columns are never needed
    g = padded.view(n, oh * w, c_out)[:, :span, :].transpose(1, 2)  # (n, out, span)
    out = grad.new_empty(c_out, kh, kw, c_in)
    for a in range(kh):
        for b in range(kw):
            start = a * w + b
            out[:, a, b, :] = torch.bmm(g, rows[:, start:start + span, :]).sum(0)
    return out.permute(0, 3, 1, 2)


class _Conv2dFastWeightGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(grad, x, weight, None, [1, 1], [0, 0], [1, 1], False,
                                                         [0, 0], 1, [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            grad_w = weight_grad(x, grad, tuple(weight.shape[2:]))
            if weight.is_contiguous(memory_format=torch.channels_last):
                grad_w = grad_w.contiguous(memory_format=torch.channels_last)
            else:
                grad_w = grad_w.contiguous()
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 2, 3))
        return grad_x, grad_w, grad_b


# --- convolution -> 2x2 max pooling -> ReLU in one step (the blog model's first block) ---

OFFSETS = ((0, 0), (0, 1), (1, 0), (1, 1))  # a 2x2 window in max_pool2d's scan order
_U8 = torch.uint8


def pool_applies(conv: torch.nn.Conv2d, pool: torch.nn.Module, x: torch.Tensor) -> bool:
    """Whether `pool(conv(x))` (a KConv2d then a KPool2d, told apart by their attributes: modules.py
    imports this module, not the other way round) should run as one fused step."""
    if not (isinstance(conv, torch.nn.Conv2d) and all(hasattr(conv, a) for a in ("pad", "act"))
            and all(hasattr(pool, a) for a in ("kind", "pool", "strides", "pad", "post_act"))):
        return False  # the common case, checked first: it runs for every pair of layers in every forward
    if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling():
        return False
    if any(_hooked(m) for m in (*conv.modules(), *pool.modules())):
        return False  # someone watches these layers' outputs (Grad-CAM): run them one by one
    return (conv.pad is None and conv.act is None
            and pool.kind == "max" and pool.pool == (2, 2) and pool.strides == (2, 2) and pool.pad is None
            and isinstance(pool.post_act, torch.nn.ReLU)
            and torch.is_grad_enabled() and conv.weight.requires_grad and not x.requires_grad
            and x.device.type == "cpu" and x.dtype == torch.float32 and conv.weight.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu") and conv.stride == (1, 1) and conv.dilation == (1, 1)
            and conv.groups == 1 and conv.padding in ((0, 0), "valid"))


def _hooked(module: torch.nn.Module) -> bool:
    from torch.nn.modules import module as torch_module  # noqa: PLC0415 (lazy: loads torch)

    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or module._backward_pre_hooks or torch_module._global_forward_hooks
                or torch_module._global_forward_pre_hooks or torch_module._global_backward_hooks
                or torch_module._global_backward_pre_hooks)


def conv_pool_relu(conv: torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """relu(max_pool2d(conv(x), 2, 2)) for a network's first convolution (see `pool_applies`)."""
    return _ConvPoolReLU.apply(x, conv.weight, conv.bias)


def _window_input(x: torch.Tensor, dy: int, dx: int, ph: int, pw: int, kh: int, kw: int) -> torch.Tensor:
    """The part of x that the pooled grid's (dy, dx) corner positions read, as a view."""
    return x[:, :, dy:dy + 2 * ph + kh - 2, dx:dx + 2 * pw + kw - 2]


class _ConvPoolReLU(torch.autograd.Function):
    """The 2x2 max pooling of a stride-1 convolution is the elementwise maximum of four stride-2
    convolutions (one per corner of the window), so the full-size convolution output (98x98x512
    per photo on the blog's model, 315 MB for a batch of 16) and the pooling's int64 indices are
    never made. What the backward pass needs is one byte per pooled value: which corner won
    (ties go to the first in max_pool2d's scan order, as there), plus 4 when the ReLU cut it."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        kh, kw = weight.shape[2:]
        ph, pw = (x.shape[2] - kh + 1) // 2, (x.shape[3] - kw + 1) // 2
        pooled = code = None
        for corner, (dy, dx) in enumerate(OFFSETS):
            c = F.conv2d(_window_input(x, dy, dx, ph, pw, kh, kw), weight, bias, stride=2)
            if pooled is None:
                pooled, code = c, torch.zeros_like(c, dtype=_U8)  # same layout as c
                continue
            # the later corner wins only when strictly larger: max_pool2d keeps the first maximum
            torch.maximum(code, torch.gt(c, pooled).view(_U8).mul_(corner), out=code)
            torch.maximum(pooled, c, out=pooled)
            del c
        out = pooled.clamp_min_(0)
        code.bitwise_or_(torch.eq(out, 0).view(_U8).mul_(4))
        ctx.save_for_backward(x, code)
        ctx.kernel = (kh, kw)
        ctx.weight_format = _format(weight)
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    def backward(ctx, grad):
        x, code = ctx.saved_tensors
        kh, kw = ctx.kernel
        n, c_out, ph, pw = grad.shape
        c_in = x.shape[1]
        # For each corner, the gradient of the positions it won (a masked copy of grad, into one
        # reused buffer) times that corner's input patches; a row of ones in the patches gives the
        # bias gradient from the same product.
        sums = grad.new_zeros(c_in * kh * kw + 1, c_out)
        rows = grad.new_empty(n, ph * pw, c_out)
        won = rows.view(n, ph, pw, c_out).permute(0, 3, 1, 2)  # (n, c, h, w) channels-last view of rows
        zero, ones = grad.new_zeros(()), x.new_ones(n, 1, ph * pw)
        for corner, (dy, dx) in enumerate(OFFSETS):
            patches = F.unfold(_window_input(x, dy, dx, ph, pw, kh, kw), (kh, kw), stride=2)  # n, k, L
            torch.where(code == corner, grad, zero, out=won)
            sums += torch.bmm(torch.cat([patches, ones], 1), rows).sum(0)
        grad_w = sums[:-1].t().reshape(c_out, c_in, kh, kw).contiguous(memory_format=ctx.weight_format)
        grad_b = sums[-1] if ctx.has_bias else None
        return None, grad_w, grad_b


def _format(t: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) \
        else torch.contiguous_format
