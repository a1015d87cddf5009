"""Data-parallel training across processes: the torchrun environment, the process group, DDP, collectives.

``nmt-train`` runs unchanged under ``torchrun --nproc_per_node N [--nnodes M ...]``. Each process
reads its place from the variables torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``), joins the process group (NCCL on CUDA, gloo on the CPU),
trains on ``cuda:LOCAL_RANK`` (or the CPU) and wraps the model in DistributedDataParallel.
Without those variables it is a single process and every collective here is a no-op.

The training loop's contract with this module (see :func:`nmt.train.train_step`): DDP averages
the ranks' gradients, so each rank divides its summed NLL by ``all ranks' sentences /
world_size``; the update then equals one single-process update on the union of the ranks'
batches. Every decision that changes control flow (skip a non-finite update, stop on a
signal, early stopping) is taken from all-reduced numbers, so all ranks take it at the same step.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from nmt.errors import NMTError, first_line

log = logging.getLogger(__name__)

T = TypeVar("T")

BACKENDS = {"cuda": "nccl", "cpu": "gloo"}
"""The device type a rank trains on -> the process-group backend."""

TIMEOUT = datetime.timedelta(hours=1)
"""How long a rank waits for the others at a collective: long enough for rank 0 to train the
tokenizers and encode a large corpus the first time while the others wait for the result."""


@dataclass(frozen=True)
class Ranks:
    """This process's place among the data-parallel processes, and what they do together.

    With ``world_size == 1`` nothing is communicated, so single-process code pays nothing.

    Attributes:
        rank: this process's index among all processes (0 writes the files).
        world_size: the number of processes.
        local_rank: its index on this machine: the CUDA device it trains on.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """Where this rank trains: ``cuda:LOCAL_RANK`` for CUDA under torchrun, else ``device`` (say ``cuda:1``)."""
        return torch.device("cuda", self.local_rank) if device.type == "cuda" and self.world_size > 1 else device

    def sum(self, values: Sequence[float]) -> list[float]:
        """Each of ``values`` summed over the ranks (float64, so counts stay exact up to 2**53)."""
        if self.world_size == 1:
            return [float(v) for v in values]
        on = torch.device("cuda", self.local_rank) if dist.get_backend() == "nccl" else torch.device("cpu")
        total = torch.tensor(values, dtype=torch.float64, device=on)
        dist.all_reduce(total)
        return total.tolist()

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is set on any rank."""
        return self.sum([float(flag)])[0] > 0

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value`` (any picklable object) on every rank; the others wait for it."""
        if self.world_size == 1:
            return value
        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: T) -> list[T]:
        """Every rank's ``value``, in rank order, on every rank."""
        if self.world_size == 1:
            return [value]
        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` (already on :meth:`device`) wrapped so that backward averages gradients over the ranks."""
        if self.world_size == 1:
            return model
        on_cuda = next(model.parameters()).device.type == "cuda"
        return DistributedDataParallel(model, device_ids=[self.local_rank] if on_cuda else None)


ONE_PROCESS = Ranks()
"""A plain single-process run."""


def accumulating(model: nn.Module, *, last: bool) -> contextlib.AbstractContextManager:
    """Wrap the forward and backward of one of several accumulated batches.

    DDP averages gradients at every backward; within an accumulated update only the last
    batch's backward needs to, so the others run under ``no_sync`` (their gradients add up locally).
    """
    if isinstance(model, DistributedDataParallel) and not last:
        return model.no_sync()
    return contextlib.nullcontext()


def ranks_from_environment(environ: Mapping[str, str] = os.environ) -> Ranks:
    """The place torchrun gave this process (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``); one process without them."""
    if "WORLD_SIZE" not in environ and "RANK" not in environ:
        return Ranks()
    world_size = _int_variable(environ, "WORLD_SIZE")
    ranks = Ranks(
        rank=_int_variable(environ, "RANK"),
        world_size=world_size,
        local_rank=_int_variable(environ, "LOCAL_RANK") if world_size > 1 else 0,
    )
    if world_size < 1 or not 0 <= ranks.rank < world_size or ranks.local_rank < 0:
        raise NMTError(
            f"RANK={ranks.rank}, WORLD_SIZE={world_size}, LOCAL_RANK={ranks.local_rank} do not describe a process "
            "of a distributed job; start nmt-train with torchrun, or unset these variables for one process"
        )
    return ranks


def _int_variable(environ: Mapping[str, str], name: str) -> int:
    if name not in environ:
        raise NMTError(
            f"the environment variable {name} is not set, but other torchrun variables are; start nmt-train "
            "with torchrun (it sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT), or unset them"
        )
    try:
        return int(environ[name])
    except ValueError:
        raise NMTError(f"the environment variable {name}={environ[name]!r} is not an integer") from None


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[Ranks]:
    """Join the job torchrun started (if any) for the block's duration; yields this process's :class:`Ranks`.

    Drop every model wrapped by :meth:`Ranks.wrap` (the :class:`nmt.train.Trainer`) before the
    block ends. If DDP's reducer held the last reference to the process group, freeing it would
    run the group's destructor with the GIL held, and with gloo that deadlocks when a worker
    thread still needs the GIL to free a finished collective's tensors. Collected here while the
    group is registered, the reducer leaves the last reference to ``destroy_process_group``,
    whose destructor releases the GIL.

    Args:
        device: what the training will run on (``train.device`` resolved): CUDA uses NCCL and
            ``cuda:LOCAL_RANK``, the CPU uses gloo.
    """
    ranks = ranks_from_environment()
    if ranks.world_size == 1:
        yield ranks
        return
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        raise NMTError(f"{' and '.join(missing)} not set; start nmt-train with torchrun, which sets them")
    if device.type == "cuda":
        if ranks.local_rank >= torch.cuda.device_count():
            raise NMTError(
                f"LOCAL_RANK={ranks.local_rank}, but this machine shows {torch.cuda.device_count()} CUDA device(s); "
                "start at most that many processes per node (torchrun --nproc_per_node)"
            )
        torch.cuda.set_device(ranks.local_rank)
    address = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
    try:
        dist.init_process_group(BACKENDS[device.type], timeout=TIMEOUT)  # env://: the variables torchrun set
    except (RuntimeError, ValueError) as err:
        raise NMTError(
            f"rank {ranks.rank} of {ranks.world_size} cannot join the process group at {address}: "
            f"{first_line(err)}; check --master_addr/--master_port and that every node can reach rank 0's node"
        ) from err
    if ranks.is_main:
        log.info("%d ranks joined the %s process group at %s", ranks.world_size, BACKENDS[device.type], address)
    try:
        yield ranks
    finally:
        gc.collect()  # DDP holds reference cycles: free dropped wrappers while the group is registered
        dist.destroy_process_group()


def moved_position(
    path: Path, *, done: int, saved_world: int, saved_batches: int, world_size: int, batches: int
) -> int:
    """The batches each of ``world_size`` ranks has done of the current epoch, from a checkpoint's position.

    Rank r of W takes the epoch's global batches r, r + W, r + 2W, ..., so after ``done`` batches
    each, the ranks together have done the first ``done * W`` of them. Another number of ranks
    can continue there if it cuts the epoch into the same batches and that count divides among it.

    Args:
        path: the checkpoint, for messages.
        done: batches done by each rank of the saving run.
        saved_world, saved_batches: the saving run's number of ranks and batches per epoch (all ranks).
        world_size, batches: the same for this run.

    Raises:
        NMTError: when the position cannot be mapped; the message says which number of ranks can resume.
    """
    if saved_world == world_size:
        return done
    global_done = done * saved_world
    # The batcher only ever halves the largest batch until the count divides among the ranks, so
    # two numbers of ranks cut an epoch into the same batches exactly when into as many.
    if batches != saved_batches:
        why = f"{_ranks(world_size)} cut each epoch into {batches} batches, {_ranks(saved_world)} into {saved_batches}"
    elif global_done % world_size:
        why = f"the {global_done} batches done of this epoch do not divide among {_ranks(world_size)}"
    else:
        return global_done // world_size
    raise NMTError(
        f"{path}: written by {_ranks(saved_world)}, resumed with {world_size}, which divide the data differently "
        f"({why}); resume with {_ranks(saved_world)} (torchrun --nproc_per_node/--nnodes)"
    )


def _ranks(count: int) -> str:
    return f"{count} data-parallel rank{'s' if count != 1 else ''}"
