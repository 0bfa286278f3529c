"""A faster fp32 weight gradient for 3x3-style convolutions on CPUs.

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
