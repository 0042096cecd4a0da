"""Data parallelism for corpus jobs: which process this is, and exact all-reduces of totals.

Under `torchrun` (or any launcher that sets RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT),
`joined()` opens the default process group, with the gloo backend on the CPU and NCCL on
CUDA, unless the caller already opened one (then it is used as it is); a group it opened
stays open until the process exits, so later jobs in the same script reuse it. A
single process needs no process group at all: every collective below is then the identity.

A process that dies makes its peers' next collective fail; `reduced` turns that failure
(or a timeout) into a DistributedError, so no process returns a partial total as a whole.
"""

import atexit
import datetime
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import DistributedError

TIMEOUT_ENV = "LENS_INVERSION_DIST_TIMEOUT"  # seconds a collective waits for its peers
DEFAULT_TIMEOUT_S = 600  # long enough for the slowest shard of an uneven corpus to finish


@dataclass(frozen=True)
class World:
    """This process's place among the job's processes."""

    rank: int = 0
    size: int = 1
    backend: str | None = None  # None: a single process, no process group

    @property
    def is_main(self) -> bool:
        """Whether this process writes progress bars and results (rank 0)."""
        return self.rank == 0

    def owns(self, index: int) -> bool:
        """Whether item `index` of the corpus stream is this process's (round robin by rank)."""
        return index % self.size == self.rank


def _launched() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def backend_for(device: torch.device) -> str:
    """NCCL for CUDA tensors, gloo otherwise."""
    return "nccl" if device.type == "cuda" and dist.is_nccl_available() else "gloo"


def _timeout() -> datetime.timedelta:
    raw = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT_S))
    try:
        seconds = float(raw)
    except ValueError:
        raise DistributedError(f"{TIMEOUT_ENV}={raw!r} is not a number of seconds.") from None
    return datetime.timedelta(seconds=seconds)


@contextmanager
def joined(device: torch.device) -> Iterator[World]:
    """The World of this process, opening the process group if needed (it stays open until exit)."""
    if dist.is_available() and dist.is_initialized():
        yield World(dist.get_rank(), dist.get_world_size(), dist.get_backend())
        return
    if not _launched():
        yield World()
        return
    if not dist.is_available():
        raise DistributedError("WORLD_SIZE > 1 but this torch build has no torch.distributed.")
    backend = backend_for(device)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    try:
        dist.init_process_group(backend, timeout=_timeout())
    except Exception as error:  # the rendezvous itself failed: a peer never arrived
        raise DistributedError(f"Could not join the {backend} process group: {error}") from None
    # Kept open for the life of the process: a second job in the same script reuses it (closing
    # and reopening a group through torchrun's store can race with a peer's stale address).
    atexit.register(_close)
    yield World(dist.get_rank(), dist.get_world_size(), backend)


def _close() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def _collective(world: World, what: str, fn) -> None:
    try:
        fn()
    except Exception as error:
        raise DistributedError(
            f"Rank {world.rank} of {world.size}: {what} failed, so a peer process died or hung; "
            f"nothing is returned, as a partial result would look whole ({type(error).__name__}: {error})."
        ) from None


def all_reduce_sum(world: World, tensor: torch.Tensor, *, what: str = "the all-reduce of the totals") -> torch.Tensor:
    """Sum `tensor` over every process, in place (the identity in a single process)."""
    if world.size > 1:
        device = _collective_device(world)
        moved = tensor.to(device)
        _collective(world, what, lambda: dist.all_reduce(moved, op=dist.ReduceOp.SUM))
        tensor.copy_(moved)
    return tensor


def _collective_device(world: World) -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if world.backend == "nccl" else torch.device("cpu")


def check_same_stream(world: World, digest: str) -> None:
    """Raise DistributedError unless every process read the same corpus stream (equal digests)."""
    if world.size == 1:
        return
    mine = torch.tensor([int(digest[:15], 16)], dtype=torch.int64)
    lowest, highest = all_reduce_min(world, mine.clone()), -all_reduce_min(world, -mine)
    if int(lowest) != int(highest):
        raise DistributedError(
            f"Rank {world.rank}: the processes read different corpora (their token streams' digests differ); "
            "give every process the same corpus and options."
        )


def all_reduce_min(world: World, tensor: torch.Tensor) -> torch.Tensor:
    """The minimum of `tensor` over every process."""
    moved = tensor.to(_collective_device(world))
    _collective(world, "comparing the corpus digests", lambda: dist.all_reduce(moved, op=dist.ReduceOp.MIN))
    return moved.cpu()


def stream_digest() -> "hashlib._Hash":
    """A fresh digest for the items a process reads (all of them, not only its own)."""
    return hashlib.sha256()


__all__ = ["DEFAULT_TIMEOUT_S", "TIMEOUT_ENV", "World", "all_reduce_sum", "backend_for", "check_same_stream",
           "joined", "stream_digest"]
