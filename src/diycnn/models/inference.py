"""A faster forward pass for predicting with Keras-style models on the CPU.

PyTorch's CPU max-pooling always computes an int64 index for every output (it is what
the backward pass needs), even with gradients off. On the blog's model that index takes as
many bytes as the 98x98x512 bf16 activation it pools (measured: 39 ms of a ~180 ms batch;
oneDNN's pooling below takes 12.5). oneDNN (PyTorch's CPU convolution library)
has an inference pooling that writes no index, but only for tensors in its own layout.

So for prediction, each run of convolutions, max-poolings and ReLUs in a `SpecModule` is
executed in oneDNN's layout: the photo batch is converted once, the convolution weights
are reordered once per prediction call (not once per batch), pooling writes no index, and
the result is converted back before `Flatten`. Outputs equal the eager forward's (the same
oneDNN kernels compute them; the tests compare). Anything else — GPUs, other layers, a
PyTorch without oneDNN — runs the module as it is.
"""

from __future__ import annotations

import logging
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .modules import KConv2d, KLinear, KPool2d

log = logging.getLogger(__name__)


def _relu_or_none(act: nn.Module | None) -> bool:
    return act is None or type(act) is nn.ReLU


def _fits(layer: nn.Module) -> bool:
    """Can this layer run on a oneDNN-layout tensor?"""
    if isinstance(layer, KConv2d):
        return layer.pad is None and layer.padding_mode == "zeros" and _relu_or_none(layer.act)
    if isinstance(layer, KPool2d):
        return layer.kind == "max" and layer.pad is None and _relu_or_none(layer.post_act)
    return False


class _OneDNNStage:
    """Consecutive conv / max-pool / ReLU layers, run in oneDNN's layout with prepacked weights."""

    def __init__(self, layers: list[nn.Module], dtype: torch.dtype):
        self.dtype = dtype
        self.steps: list[Callable[[torch.Tensor], torch.Tensor]] = []
        for layer in layers:
            if isinstance(layer, KConv2d):
                self.steps.append(self._conv(layer))
                if layer.act is not None:
                    self.steps.append(torch.relu_)  # in place on the stage's own intermediate
            else:
                self.steps.append(self._pool(layer))
                if layer.post_act is not None:
                    self.steps.append(torch.relu_)  # in place on the stage's own intermediate

    def _conv(self, conv: KConv2d):
        padding, stride, dilation, groups = list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups
        weight = conv.weight.detach().to(self.dtype).to_mkldnn()
        weight = torch._C._nn.mkldnn_reorder_conv2d_weight(weight, padding, stride, dilation, groups)
        bias = conv.bias.detach().to(self.dtype) if conv.bias is not None else None
        return lambda x: torch.mkldnn_convolution(x, weight, bias, padding, stride, dilation, groups)

    @staticmethod
    def _pool(pool: KPool2d):
        return lambda x: F.max_pool2d(x, pool.pool, pool.strides)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.dtype).contiguous().to_mkldnn()
        for step in self.steps:
            x = step(x)
        return x.to_dense()


def _crop(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Top-left h x w of a (B, C, H, W) batch, copied in the batch's memory format (a strided view
    would send the convolution down a slower path)."""
    channels_last = x.is_contiguous(memory_format=torch.channels_last)
    x = x[..., :h, :w]
    return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def private_apis_present() -> bool:
    """Whether the PyTorch internals this path calls are there: `torch._C._nn.mkldnn_reorder_conv2d_weight`,
    `torch.mkldnn_convolution` and `torch.ops.mkldnn._is_mkldnn_bf16_supported` are private and may be
    renamed by a PyTorch upgrade (checked with torch 2.14.1). Without them prediction runs the plain
    forward -- slower, never wrong."""
    try:
        return (callable(getattr(getattr(torch._C, "_nn", None), "mkldnn_reorder_conv2d_weight", None))
                and callable(getattr(torch, "mkldnn_convolution", None))
                and callable(torch.ops.mkldnn._is_mkldnn_bf16_supported))
    except (AttributeError, RuntimeError):  # torch.ops raises when an operator is unknown
        return False


def _onednn_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return None
    if not private_apis_present():
        if not getattr(_onednn_dtype, "warned", False):
            _onednn_dtype.warned = True
            log.warning("This PyTorch (%s) lacks the oneDNN internals diycnn's fast CPU prediction uses; "
                        "predicting with the standard forward pass instead.", torch.__version__)
        return None
    if precision == "fp32":
        return torch.float32
    if precision == "bf16" and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return torch.bfloat16
    return None


def _linear(layer: KLinear, dtype: torch.dtype):
    """Dense with its weights cast once (autocast would cast them again for every batch)."""
    weight = layer.weight.detach().to(dtype)
    bias = layer.bias.detach().to(dtype) if layer.bias is not None else None
    act = layer.act

    def step(x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x.to(dtype), weight, bias)
        return act(y) if act is not None else y

    return step


_CACHE = "_diycnn_inference_plan"


def inference_forward(module: nn.Module, device: torch.device, precision: str,
                      keep: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function x -> logits for `module` in eval mode; call it inside the autocast context.

    It captures the weights as they are now (prepacked and cast: ~the model's size again in
    memory). keep=True stores it on the module for later calls, rebuilt whenever a parameter
    changes — for models that only predict; training code builds one per evaluation.
    """
    from .modules import SpecModule  # noqa: PLC0415 (lazy: loads torch)

    dtype = _onednn_dtype(device, precision)
    if dtype is None or not isinstance(module, SpecModule):
        return module
    key = (dtype, tuple((p.data_ptr(), p._version) for p in module.parameters()))
    cached = module.__dict__.get(_CACHE)
    if cached is not None and cached[0] == key:
        return cached[1]
    module.__dict__.pop(_CACHE, None)
    forward = _build(module, dtype)
    if keep:
        module.__dict__[_CACHE] = (key, forward)
    return forward


def _build(module: nn.Module, dtype: torch.dtype) -> Callable[[torch.Tensor], torch.Tensor]:
    plan: list[Callable] = [lambda x: _crop(x, *module.crop)] if module.crop is not None else []
    run: list[nn.Module] = []

    def close_run():
        if run:
            plan.append(_OneDNNStage(list(run), dtype))
            run.clear()

    for layer in module.body.values():
        if _fits(layer):
            run.append(layer)
        else:
            close_run()
            plan.append(_linear(layer, dtype) if isinstance(layer, KLinear) else layer)
    close_run()

    state = {"checked": False}

    def forward(x: torch.Tensor) -> torch.Tensor:
        if state["checked"]:
            return _run(plan, x)
        try:  # the first batch proves this PyTorch build runs the plan; otherwise use the module
            out = _run(plan, x)
        except RuntimeError as exc:
            log.warning("oneDNN prediction path unavailable (%s); using the plain forward.", exc)
            plan[:] = [module]
            out = module(x)
        state["checked"] = True
        return out

    return forward


def _run(plan: list[Callable], x: torch.Tensor) -> torch.Tensor:
    for step in plan:
        x = step(x)
    return x
