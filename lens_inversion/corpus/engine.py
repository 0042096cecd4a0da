"""The corpus loop every corpus job runs on: shard, reduce, checkpoint, resume, report progress.

`run_items` reads a stream of items (batches or prompts) in the same order on every
process; process r handles items r, r + N, r + 2N, ... and adds each item's statistics into
its Totals. At the end every process checks that all of them read the same stream, then the
totals are summed over processes. With a checkpoint file, a process writes its totals and
its place in the stream every `checkpoint_every` items; a rerun with the same options
replays the stream to that place (checking the replayed items' digest), adds the rest, and
ends with exactly the totals an uninterrupted run gives (the same additions, in order).
"""

import hashlib
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch
from tqdm.auto import tqdm

from ..errors import DistributedError, OptionError
from .distributed import World, check_same_stream
from .totals import Totals

CHECKPOINT_FORMAT = "lens_inversion.corpus.checkpoint"
Item = TypeVar("Item")


@dataclass(frozen=True, kw_only=True)
class RunInfo:
    """How a corpus job ran: totals over every process."""

    items: int  # batches (or prompts) handled, all processes together
    tokens: int  # real tokens handled, all processes together
    seconds: float  # wall time of this process, the resumed part included
    world_size: int  # processes that shared the corpus
    backend: str | None  # "gloo", "nccl", or None for a single process
    resumed_items: int  # items this process took from its checkpoint instead of computing

    def to_dict(self) -> dict:
        """Every field in a plain dict, for JSON."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True, kw_only=True)
class Loop:
    """What `run_items` needs besides the items and the step."""

    world: World
    config: Mapping  # everything that fixes the result: a checkpoint made with other values is refused
    checkpoint: Path | None = None
    checkpoint_every: int = 50
    progress: bool = True
    desc: str = "corpus"


def rank_path(path: Path, world: World) -> Path:
    """This process's own checkpoint file: `path` itself for a single process, else `stem.rankR.suffix`."""
    return path if world.size == 1 else path.with_name(f"{path.stem}.rank{world.rank}{path.suffix}")


def run_items(items: Iterable[Item], step: Callable[[Item], Mapping], *, loop: Loop,
              digest_of: Callable[[Item], bytes], size_of: Callable[[Item], int]) -> tuple[Totals, RunInfo]:
    """Run `step` on this process's share of `items`; the totals of every process, and how it ran."""
    world = loop.world
    path = None if loop.checkpoint is None else rank_path(loop.checkpoint, world)
    state = _load(path, loop) if path is not None else None
    totals = Totals(state["totals"] if state else None)
    done, tokens = (state["done"], state["tokens"]) if state else (0, 0)
    resumed, elapsed = done, (state["seconds"] if state else 0.0)
    digest, index, mark = hashlib.sha256(), -1, state["digest"] if state else ""
    verified = state is None or done == 0
    bar = tqdm(desc=loop.desc, unit="tok", unit_scale=True, disable=not (loop.progress and world.is_main), leave=False)
    start = time.perf_counter()
    for index, item in enumerate(items):
        digest.update(digest_of(item))
        if not world.owns(index):
            continue
        if index // world.size < done:  # taken from the checkpoint: replayed only to check the stream
            if index // world.size == done - 1:
                verified = _check_replay(path, digest.hexdigest(), mark)
            continue
        totals.add(step(item))
        done, tokens, mark = done + 1, tokens + size_of(item), digest.hexdigest()
        bar.update(size_of(item))
        if path is not None and done % loop.checkpoint_every == 0:
            _save(path, loop, totals, done, tokens, mark, elapsed + time.perf_counter() - start)
    bar.close()
    if not verified:
        raise OptionError(f"The checkpoint {str(path)!r} covers {done} items of this process, but the corpus "
                          "now gives fewer; give the same corpus to resume, or delete the file to start again.")
    n_items = index + 1
    if n_items == 0:
        raise OptionError("The corpus gave nothing to run on (no tokens, or no prompt long enough); give at least "
                          "one non-empty text.")
    if n_items < world.size:
        raise OptionError(f"The corpus gave {n_items} items to share between {world.size} processes; give more "
                          "text or run fewer processes.")
    seconds = elapsed + time.perf_counter() - start
    if path is not None:
        _save(path, loop, totals, done, tokens, mark, seconds)
    return _reduced(world, totals, done, tokens, digest.hexdigest(), seconds, resumed)


def _check_replay(path: Path | None, replayed: str, saved: str) -> bool:
    if replayed != saved:
        raise OptionError(f"The checkpoint {str(path)!r} was made on another corpus (its first items differ); "
                          "give the same corpus to resume, or delete the file to start again.")
    return True


def _reduced(world: World, totals: Totals, done: int, tokens: int, digest: str, seconds: float,
             resumed: int) -> tuple[Totals, RunInfo]:
    names = sorted(totals.values)
    layout = hashlib.sha256(repr([(k, tuple(totals[k].shape), str(totals[k].dtype)) for k in names]).encode())
    check_same_stream(world, digest)
    check_same_stream(world, layout.hexdigest())
    counts = Totals({"items": torch.tensor(done), "tokens": torch.tensor(tokens)}).all_reduce(world, ["items", "tokens"])
    info = RunInfo(items=int(counts["items"]), tokens=int(counts["tokens"]), seconds=seconds,
                   world_size=world.size, backend=world.backend, resumed_items=resumed)
    return totals.all_reduce(world, names), info


def _save(path: Path, loop: Loop, totals: Totals, done: int, tokens: int, digest: str, seconds: float) -> None:
    state = {"format": CHECKPOINT_FORMAT, "config": dict(loop.config), "world_size": loop.world.size,
             "rank": loop.world.rank, "done": done, "tokens": tokens, "digest": digest, "seconds": seconds,
             "totals": totals.state()}
    save_atomically(state, path)


def save_atomically(state: dict, path: Path) -> None:
    """torch.save through a temporary file, so an interruption never leaves half a checkpoint."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _load(path: Path, loop: Loop) -> dict | None:
    """The checkpoint's state, or None when there is none yet; OptionError when it cannot be resumed."""
    if not path.is_file() or not path.stat().st_size:
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise OptionError(f"Cannot read the checkpoint {str(path)!r}: {error}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise OptionError(f"{str(path)!r} is not a corpus-job checkpoint; delete it or give another path.")
    if state["world_size"] != loop.world.size or state["rank"] != loop.world.rank:
        raise DistributedError(f"The checkpoint {str(path)!r} is rank {state['rank']} of {state['world_size']} "
                               f"processes; this is rank {loop.world.rank} of {loop.world.size}. Resume with "
                               "the same number of processes, or delete the checkpoints to start again.")
    here, there = dict(loop.config), state["config"]
    differ = [f"{k}: {there.get(k)!r} there, {v!r} here" for k, v in here.items() if there.get(k) != v]
    differ += [f"{k}: {there[k]!r} there, absent here" for k in there if k not in here]
    if differ:
        raise OptionError(f"The checkpoint {str(path)!r} was made with other options ({'; '.join(differ)}); "
                          "give the same options to resume, or delete it to start again.")
    return state


__all__ = ["CHECKPOINT_FORMAT", "Loop", "RunInfo", "rank_path", "run_items", "save_atomically"]
