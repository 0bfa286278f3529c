"""Pick the device and numeric precision, and give one autocast context for train and predict."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import sys

import torch

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """True when the CPU has native bf16 matrix instructions (AVX512-BF16 or AMX), where bf16 pays off."""
    if sys.platform != "linux":
        return False
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' -> cuda when available, else cpu.

    Raises:
        ValueError: 'cuda' was asked for but no CUDA GPU is visible.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but PyTorch sees no CUDA GPU here. Use --device cpu or auto.")
    return torch.device(device)


def resolve_precision(precision: str, device: torch.device, cpu_prefers: str | None = None) -> str:
    """'auto' -> bf16 on GPUs that support it and on CPUs with bf16 instructions, else fp32.

    cpu_prefers: a recipe's measured better choice on CPUs (e.g. fp32 for depthwise-heavy
    fine-tuning, whose bf16 backward is slower on CPUs).
    """
    if precision != "auto":
        if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError("This GPU does not support bf16; use --precision fp16 or fp32.")
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if cpu_prefers:
        return cpu_prefers
    return "bf16" if cpu_has_bf16() else "fp32"


def autocast(device: torch.device, precision: str):
    """Mixed-precision context for forward passes; a no-op for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4


@functools.lru_cache(maxsize=1)
def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse instead of handing every large block back to the OS.

    PyTorch's CPU tensors come straight from malloc, and glibc serves blocks over 32 MB with
    fresh mmap pages that the kernel must fault in and zero on first touch — each time. On the
    blog's model a 16-photo batch has a 157 MB activation, so ReLU and max-pooling spent most
    of their time in page faults (measured: ReLU 93 -> 19 ms, max-pool 111 -> 33 ms; seed-cnn
    training 16.7 -> 24 photos/s). With mmap off and a high trim threshold, freed blocks are
    reused. The cost: memory is not handed back until the process exits, and heap
    fragmentation raised seed-cnn's peak RSS from ~1.8 to ~2.15 GB. Linux/glibc only; set
    DIYCNN_MALLOC=system to leave malloc alone. Returns whether it was applied.
    """
    if sys.platform != "linux" or os.environ.get("DIYCNN_MALLOC") == "system":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
    if ok:
        log.debug("glibc malloc: mmap off, trim threshold 1 GiB")
    return ok
