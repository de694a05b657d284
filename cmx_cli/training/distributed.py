"""Data-parallel training under ``torchrun``: who this process is, and what it shares.

`cmx train`, `pretrain` and `finetune` read the ``torchrun`` environment (``WORLD_SIZE``,
``RANK``, ``LOCAL_RANK``). With more than one process, every process reads the same data and
draws the same shuffled batches from the same seed; each global batch (``--max-tokens`` per
process, times the number of processes) is then shared out by sequences, so no token is seen
twice in an epoch. Each process scales its share's loss by the whole batch's weight and the
gradients are summed across processes, so a step equals a single-process step on the whole
global batch. Only rank 0 writes the run directory, validates and prints.

Gradients are summed by one all-reduce after backward rather than by DistributedDataParallel:
a batch passes only the blocks its length needs, which DistributedDataParallel can follow only
with ``find_unused_parameters`` (an extra graph traversal every step, and a false warning).
"""
from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
import torch.distributed as dist

from cmx_cli.errors import CmxError
from cmx_cli.runtime import resolve_device

#: How long a process waits for the others at a collective (rank 0 validating, say).
COLLECTIVE_TIMEOUT = datetime.timedelta(hours=2)


@dataclass(frozen=True)
class Processes:
    """This process's place among the training processes (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this process writes files and prints (rank 0)."""
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        """Whether there is more than one process."""
        return self.world_size > 1

    def device(self, name: str) -> torch.device:
        """The device this process computes on: ``cuda`` means the GPU of its local rank."""
        device = resolve_device(name)
        if self.parallel and device.type == "cuda":
            if self.local_rank >= torch.cuda.device_count():
                raise CmxError(
                    f"local rank {self.local_rank} has no GPU ({torch.cuda.device_count()} visible)",
                    "start no more processes per node than it has GPUs (--nproc-per-node).")
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        return device

    def barrier(self) -> None:
        """Wait for every process."""
        if self.parallel:
            dist.barrier()

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true in any process (so all take the same branch)."""
        if not self.parallel:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=_collective_device())
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item() > 0)

    def total(self, values: torch.Tensor) -> torch.Tensor:
        """The sum over processes of a small float tensor (a new tensor; no gradient)."""
        if not self.parallel:
            return values.detach().clone()
        summed = values.detach().to(_collective_device(), torch.float64).clone()
        dist.all_reduce(summed)
        return summed.to(values.device, values.dtype)

    def copy_parameters_from_main(self, model: torch.nn.Module) -> None:
        """Give every process rank 0's weights (they start equal anyway: same seed, same
        checkpoint; this makes it certain)."""
        if self.parallel:
            for tensor in model.state_dict().values():
                dist.broadcast(tensor, src=0)

    def sum_gradients(self, model: torch.nn.Module) -> None:
        """Replace each gradient by its sum over processes, in one all-reduce.

        A parameter that had no gradient in a process (a block the batch's length does not
        need) counts as zero there, and ends with a gradient in every process or in none.
        """
        if not self.parallel:
            return
        parameters = [p for p in model.parameters() if p.requires_grad]
        if not parameters:
            return
        used = torch.tensor([p.grad is not None for p in parameters], dtype=torch.float32,
                            device=_collective_device())
        dist.all_reduce(used, op=dist.ReduceOp.MAX)
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                          for p in parameters])
        dist.all_reduce(flat)
        for parameter, gradient, in_use in zip(
                parameters, flat.split([p.numel() for p in parameters]), used.tolist()):
            parameter.grad = gradient.view_as(parameter).clone() if in_use else None

    def from_main(self, value: Any) -> Any:
        """Rank 0's ``value`` in every process (any picklable object)."""
        if not self.parallel:
            return value
        holder = [value]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]


SINGLE = Processes()


def _collective_device() -> torch.device:
    """NCCL reduces CUDA tensors; gloo reduces CPU ones."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def from_environment(environment: Optional[dict] = None) -> Processes:
    """The process layout ``torchrun`` describes in the environment (one process without it)."""
    environment = os.environ if environment is None else environment
    try:
        world_size = int(environment.get("WORLD_SIZE", "1"))
        rank = int(environment.get("RANK", "0"))
        local_rank = int(environment.get("LOCAL_RANK", "0"))
    except ValueError:
        raise CmxError("WORLD_SIZE, RANK and LOCAL_RANK must be integers",
                       "start parallel training with torchrun, which sets them.") from None
    if world_size < 1 or not 0 <= rank < world_size:
        raise CmxError(f"RANK {rank} does not fit WORLD_SIZE {world_size}",
                       "start parallel training with torchrun, which sets them.")
    return Processes(rank, world_size, local_rank)


def start(device_name: str) -> Processes:
    """Join the process group that ``torchrun`` set up (nothing to do for one process).

    The backend is NCCL when the processes compute on CUDA and gloo otherwise.
    """
    processes = from_environment()
    if not processes.parallel or dist.is_initialized():
        return processes
    on_cuda = resolve_device(device_name).type == "cuda"
    if on_cuda:
        processes.device(device_name)  # bind the GPU before NCCL starts
    dist.init_process_group("nccl" if on_cuda else "gloo", timeout=COLLECTIVE_TIMEOUT)
    return processes


def stop() -> None:
    """Leave the process group, if one was joined, all processes together: a process that
    tore its connections down while rank 0 still evaluated could abort at exit ("terminate
    called without an active exception", seen with gloo)."""
    if dist.is_initialized():
        with contextlib.suppress(RuntimeError):  # a process that failed: leave all the same
            dist.barrier()
        dist.destroy_process_group()


def share_members(lengths: Sequence[int], parts: int) -> list[list[int]]:
    """Share the members of a global batch among ``parts`` processes, balancing tokens.

    Longest first, each member goes to the process with the fewest tokens so far (the lowest
    rank on a tie); each share keeps the batch's order. A share is empty when the batch has
    fewer members than processes.

    Args:
        lengths: Tokens of each member of the batch.
        parts: Number of processes.

    Returns:
        ``parts`` lists of positions in the batch; each position is in exactly one.
    """
    shares: list[list[int]] = [[] for _ in range(parts)]
    loads = [0] * parts
    for position in sorted(range(len(lengths)), key=lambda p: (-int(lengths[p]), p)):
        target = min(range(parts), key=lambda part: (loads[part], part))
        shares[target].append(position)
        loads[target] += int(lengths[position])
    return [sorted(share) for share in shares]
