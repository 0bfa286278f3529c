"""Pick the device and numeric precision, and give one autocast context for train and predict."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import sys
import threading

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
GLIBC_MMAP_MAX, GLIBC_TRIM_THRESHOLD = 65536, 128 * 1024  # glibc's defaults


@functools.lru_cache(maxsize=1)
def _glibc():
    if sys.platform != "linux" or os.environ.get("DIYCNN_MALLOC") == "system":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018 - missing on musl: AttributeError
        return libc
    except (OSError, AttributeError):
        return None


_reuse_depth = 0
_reuse_lock = threading.Lock()


@contextlib.contextmanager
def reuse_freed_memory():
    """While predicting, keep freed memory in the heap for the next batch instead of unmapping it.

    PyTorch's CPU tensors come straight from malloc, and glibc serves blocks over 32 MB with
    fresh mmap pages that the kernel must fault in and zero on first touch — each time. On the
    blog's model a 16-photo batch has a 150 MB activation. diycnn turns on PyTorch's
    THP_MEM_ALLOC_ENABLE (see diycnn/__init__.py), so those pages are 2 MB ones, which makes
    first touch ~2.5x cheaper (measured: 50 -> 19 ms per 151 MB) and still returns memory
    when freed: the training policy. Prediction allocates the same large blocks batch after
    batch, so here glibc's mmap is switched off with a 1 GiB trim threshold and they are
    reused without any page faults. (Doing the same in training made it ~12% faster but
    cost ~300 MB more peak memory through heap fragmentation.) On exit glibc's default mmap
    count and trim threshold come back and the heap is trimmed, so nothing stays held; one
    thing does not come back: setting a trim threshold freezes glibc's self-adjusting mmap
    threshold at its value then (usually already raised to 32 MB by training). Linux/glibc
    only; DIYCNN_MALLOC=system leaves malloc alone.
    """
    global _reuse_depth
    libc = _glibc()
    if libc is None:
        yield
        return
    with _reuse_lock:
        _reuse_depth += 1
        if _reuse_depth == 1:
            libc.mallopt(M_MMAP_MAX, 0)
            libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)
    try:
        yield
    finally:
        with _reuse_lock:
            _reuse_depth -= 1
            if _reuse_depth == 0:
                libc.mallopt(M_MMAP_MAX, GLIBC_MMAP_MAX)
                libc.mallopt(M_TRIM_THRESHOLD, GLIBC_TRIM_THRESHOLD)
                libc.malloc_trim(0)
