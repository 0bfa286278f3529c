"""Training under PyTorch's distributed engine (torchrun / DistributedDataParallel).

`torchrun --nproc_per_node N -m diycnn train ...` starts N processes with RANK, WORLD_SIZE and
LOCAL_RANK set; `setup()` joins them into a process group (gloo on CPUs, NCCL on GPUs). Every
process scans the folder and computes the same seeded split; process 0 alone writes the run
directory. Each optimisation step takes one global batch (`--batch-size`, split evenly
across the processes) in the order a single-process run would use, so N processes follow
the single-process run step for step (see ShardedBatches); DDP averages the gradients.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import os
from typing import Any

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Context:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


_context = Context()


def context() -> Context:
    """This process's place in the group (rank 0 of 1 when not distributed)."""
    return _context


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: str = "auto") -> Context:
    """Join the process group torchrun set up (once); a no-op outside torchrun.

    Raises:
        ValueError: --device cuda asked for, but there are fewer GPUs than local processes.
    """
    global _context
    if not launched_by_torchrun() or _context.active:
        return _context
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device in ("auto", "cuda") and torch.cuda.is_available()
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"Local process {local_rank} has no GPU (this node has {torch.cuda.device_count()}); "
                             "start fewer processes per node (--nproc_per_node).")
        torch.cuda.set_device(local_rank)
    backend = "nccl" if use_cuda else "gloo"
    if not dist.is_initialized():
        # Long enough for process 0's evaluation and report while the others wait at the final barrier.
        dist.init_process_group(backend, timeout=_dt.timedelta(hours=2))
    _context = Context(dist.get_rank(), dist.get_world_size(), local_rank, backend)
    log.info("distributed: rank %d of %d (%s)", _context.rank, _context.world, backend)
    return _context


def device_for(device: torch.device) -> torch.device:
    """A CUDA device means this process's own GPU under torchrun."""
    if _context.active and device.type == "cuda":
        return torch.device("cuda", _context.local_rank)
    return device


def broadcast(value: Any) -> Any:
    """Process 0's `value` on every process."""
    if not _context.active:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def on_main(fn) -> Any:
    """Run `fn` on process 0 only and return its result everywhere; an error it raises is
    raised on every process (so none waits forever for the others)."""
    if not _context.active:
        return fn()
    result: tuple[str, Any] = ("ok", None)
    if _context.main:
        try:
            result = ("ok", fn())
        except Exception as exc:  # re-raised below, on every process
            result = ("error", exc)
    status, value = broadcast(result)
    if status == "error":
        raise value
    return value


def barrier() -> None:
    if _context.active:
        dist.barrier()


def all_reduce_sums(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sums over all processes (float64)."""
    if not _context.active:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device if _context.backend == "nccl" else "cpu")
    dist.all_reduce(t)
    return t.tolist()


def wrap(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel around `module` (returned unchanged outside torchrun)."""
    if not _context.active:
        return module
    from torch.nn.parallel import DistributedDataParallel  # noqa: PLC0415 (lazy: loads torch)

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids)


def shutdown() -> None:
    """Leave the group once every process is done (the others wait here while process 0
    evaluates and writes, so none is torn down under it)."""
    global _context
    if dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()
    _context = Context()
