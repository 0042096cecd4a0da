"""Training a tuned lens: its options, the distillation loop, the fused KL loss, checkpoints.

`train_tuned_lens` checks every option before the model is touched, then `_train` runs the
loop under `preserves_model`: the model's logits and residuals under no_grad, then each
translator's loss backpropagated on its own (`_accumulate`), so at most one row's
[tokens, d_vocab] graph exists at a time. `_KLFromLogits` is that loss with one temporary.
A checkpoint holds the whole training state and a digest of the tokens seen, so a resumed
run ends bit-identical to an uninterrupted one (with the same number of processes).

Under `torchrun` training is data-parallel: every process reads the same step batches, takes
chunks r, r + N, ... of each (`_StepBatch`), accumulates its gradients with the loss divided
by the whole step's token count, and one all-reduce (sum) per step gives every process the
gradient one process would have computed; each then clips and steps identically, so all of
them hold the same translators. Only rank 0 writes the checkpoint (on a file system every
process reads: each resumes from it) and shows the bar. A script that runs several corpus
jobs under torchrun should open the process group once itself (`joined` then reuses it):
re-joining one that an earlier call closed can fail to connect.
"""

import hashlib
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from jaxtyping import Float
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..corpus.distributed import World, all_reduce_min, all_reduce_sum, joined
from ..errors import DistributedError, OptionError
from ..hooks.adapter import ModelAdapter, adapter_for
from ..hooks.fingerprint import fingerprints_match
from ..hooks.preserve import preserves_model
from ..hooks.sites import Site
from ..validation import (
    SEED_MAX,
    check_bool,
    check_choice,
    check_destination,
    check_int,
    check_number,
    check_seed,
    check_text,
    validates_own_arguments,
)
from .token_stream import ChunkCount, check_corpus, token_chunks

if TYPE_CHECKING:
    from .tuned import TunedLens

Loss = Literal["kl", "cross_entropy"]
LOSSES = ("kl", "cross_entropy")
Optimizer = Literal["sgd", "adam"]
OPTIMIZERS = ("sgd", "adam")
MICRO_BATCH_BYTES = 128 * 2**20  # one float32 [tokens, d_vocab] tensor of a micro-batch at most
CHECKPOINT_FORMAT = "lens_inversion.tuned_lens.checkpoint"


@validates_own_arguments  # built from raw user values, then checked
@dataclass(frozen=True, kw_only=True)
class TrainOptions:
    """Everything that fixes a trained tuned lens (recorded in its metadata and checkpoints)."""

    steps: int = 250
    tokens_per_step: int = 2**18
    seq_len: int | None = None  # None: the model's n_ctx, at most 2048
    loss: Loss = "kl"
    optimizer: Optimizer = "sgd"
    lr_scale: float = 1.0
    momentum: float = 0.9
    weight_decay: float = 1e-3
    warmup_steps: int | None = None  # None: 0 for SGD, min(1000, steps // 5) for Adam
    max_grad_norm: float = 1.0
    seed: int = 0
    sublayers: bool = False
    shuffle_buffer: int = 1024
    micro_batch: int | None = None  # chunks per forward; None: from MICRO_BATCH_BYTES
    text_key: str = "text"

    def check(self) -> None:
        """Raise OptionError for any value outside its valid range, naming the valid choices."""
        check_int("steps", self.steps, low=1)
        check_int("tokens_per_step", self.tokens_per_step, low=1)
        check_int("seq_len", self.seq_len, low=2, allow_none=True)
        check_choice("loss", self.loss, LOSSES)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_number("lr_scale", self.lr_scale, low=0, low_open=True)
        check_number("momentum", self.momentum, low=0, high=1, high_open=True)
        check_number("weight_decay", self.weight_decay, low=0)
        check_int("warmup_steps", self.warmup_steps, low=0, high=self.steps - 1, allow_none=True)
        check_number("max_grad_norm", self.max_grad_norm, low=0, low_open=True)
        check_seed(self.seed, allow_none=False)
        check_bool("sublayers", self.sublayers)
        check_int("shuffle_buffer", self.shuffle_buffer, low=0)
        check_int("micro_batch", self.micro_batch, low=1, allow_none=True)
        check_text("text_key", self.text_key)

    def resolved(self, adapter: ModelAdapter) -> "TrainOptions":
        """The options with the model's defaults filled in, checked against the model."""
        seq_len = self.seq_len or min(adapter.n_ctx, 2048)
        if seq_len > adapter.n_ctx:
            raise OptionError(f"seq_len={seq_len} is longer than the model's context (n_ctx={adapter.n_ctx}).")
        if self.tokens_per_step % seq_len:
            low = max(seq_len, self.tokens_per_step // seq_len * seq_len)
            raise OptionError(f"tokens_per_step={self.tokens_per_step} must be a multiple of seq_len={seq_len} "
                              f"(whole chunks per step): for example {low} or {low + seq_len}.")
        per_step = self.tokens_per_step // seq_len
        auto = max(1, MICRO_BATCH_BYTES // (seq_len * adapter.d_vocab_out * 4))
        warmup = self.warmup_steps if self.warmup_steps is not None else (
            min(1000, self.steps // 5) if self.optimizer == "adam" else 0)
        return replace(self, seq_len=seq_len, micro_batch=min(per_step, self.micro_batch or auto),
                       warmup_steps=warmup)

    @property
    def base_lr(self) -> float:
        """SGD: lr_scale · (1 − β), undoing PyTorch's 1/(1 − β) momentum gain; Adam: lr_scale · 1e-3."""
        return self.lr_scale * (1 - self.momentum) if self.optimizer == "sgd" else self.lr_scale * 1e-3

    def lr_factor(self, step: int) -> float:
        """Linear warm-up to 1 over `warmup_steps`, then linear decay to 0 at `steps`."""
        assert self.warmup_steps is not None  # narrowing: called on `resolved` options
        if step < self.warmup_steps:
            return step / self.warmup_steps
        return max(0.0, (self.steps - step) / max(1, self.steps - self.warmup_steps))


def train_tuned_lens(model, corpus, opts: TrainOptions, *, checkpoint=None, checkpoint_every: int = 50,
                     held_out=None, progress: bool = True) -> "TunedLens":
    """`TunedLens.train` with its options as a TrainOptions: checked here, before the model is touched."""
    opts.check()
    check_int("checkpoint_every", checkpoint_every, low=1)
    check_bool("progress", progress)
    ckpt = None if checkpoint is None else check_destination(checkpoint, name="checkpoint", example="lens.ckpt")
    check_corpus(corpus, text_key=opts.text_key)
    if held_out is not None:
        check_corpus(held_out)
    return _train(model, corpus, opts=opts, checkpoint=ckpt, every=checkpoint_every, held_out=held_out,
                  progress=progress)


@preserves_model
def _train(model, corpus, *, opts: TrainOptions, checkpoint: Path | None, every: int, held_out, progress: bool):
    from .tuned import TunedLens  # tuned.py imports this module: the class is looked up at call time

    adapter = adapter_for(model)
    adapter.check_lens_readout()
    opts = opts.resolved(adapter)
    lens = TunedLens.from_model(adapter, sublayers=opts.sublayers).requires_grad_(True)
    with joined(adapter.device) as world:
        run = _loop(adapter, lens, corpus, opts, world=world, checkpoint=checkpoint, every=every, progress=progress)
        lens.requires_grad_(False)
        labels = [row_label(s, layer, sublayers=opts.sublayers) for s, layer in lens.row_keys()]
        lens.metadata.update(training=asdict(opts), tokens_seen=run.tokens, corpus_passes=run.passes,
                             train_seconds=round(run.seconds, 1), processes=world.size,
                             final_loss=dict(zip(labels, run.losses, strict=True)))
        if held_out is not None:  # inside `joined`: an evaluation on the corpus runner shares the process group
            from .tuned_eval import evaluate_lens  # it imports the loss from here

            lens.metadata["held_out"] = evaluate_lens(adapter, lens, held_out, seq_len=opts.seq_len).to_dict()
    return lens


def _loop(adapter, lens: "TunedLens", corpus, opts: TrainOptions, *, world: World, checkpoint: Path | None,
          every: int, progress: bool) -> "_Run":
    """The optimiser steps from the checkpoint's (or the first) to `opts.steps`; how the run went."""
    optimizer = _optimizer(opts, list(lens.parameters()))
    run = _Run(step=0, tokens=0, passes=1, losses=[], seconds=0.0)
    batches = _step_batches(adapter, corpus, opts, run)
    digest = hashlib.sha256()
    if checkpoint is not None and checkpoint.is_file() and checkpoint.stat().st_size:
        run = _resume(checkpoint, lens, optimizer, opts, batches, digest)
    _check_same_start(world, run, digest.hexdigest(), checkpoint)
    bar = tqdm(total=opts.steps, initial=run.step, desc="tuned lens", disable=not (progress and world.is_main),
               leave=False)
    start, start_tokens = time.perf_counter() - run.seconds, run.tokens
    t0 = time.perf_counter()
    for step in range(run.step, opts.steps):
        batch = next(batches)
        digest.update(batch.numpy().tobytes())
        run.losses = _train_step(adapter, lens, optimizer, _StepBatch.of(batch, world, opts.loss), opts, step)
        run.step, run.tokens, run.seconds = step + 1, run.tokens + batch.numel(), time.perf_counter() - start
        bar.update(1)
        bar.set_postfix(loss=f"{sum(run.losses):.3f}", tok_s=f"{(run.tokens - start_tokens) / (time.perf_counter() - t0):,.0f}")
        if checkpoint is not None and world.is_main and (run.step % every == 0 or run.step == opts.steps):
            _save_checkpoint(checkpoint, lens, optimizer, opts, run, digest.hexdigest())
    bar.close()
    return run


def _check_same_start(world: World, run: "_Run", digest: str, checkpoint: Path | None) -> None:
    """Raise DistributedError unless every process starts at the same step of the same token stream."""
    if world.size == 1:
        return
    mine = torch.tensor([run.step, int(digest[:15], 16)], dtype=torch.int64)
    if not torch.equal(all_reduce_min(world, mine.clone()), -all_reduce_min(world, -mine)):
        raise DistributedError(
            f"Rank {world.rank}: the processes resume from different steps (this one from step {run.step}); "
            f"every process must read the checkpoint {str(checkpoint)!r}: put it on a file system they all "
            "share, or delete it to start again."
        )


def row_label(site: Site, layer: int, *, sublayers: bool) -> str:
    """The logit lens's label of a row: "embed", "2", or with sublayers "2 attn" / "2 mlp"."""
    if site is Site.RESID_PRE:
        return "embed"
    if site is Site.RESID_MID:
        return f"{layer} attn"
    return f"{layer} mlp" if sublayers else str(layer)


@dataclass
class _Run:
    step: int
    tokens: int
    passes: int
    losses: list[float]
    seconds: float


def _optimizer(opts: TrainOptions, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if opts.optimizer == "sgd":
        return torch.optim.SGD(params, lr=opts.base_lr, momentum=opts.momentum, nesterov=True,
                               weight_decay=opts.weight_decay)
    return torch.optim.Adam(params, lr=opts.base_lr, betas=(opts.momentum, 0.999), amsgrad=True,
                            weight_decay=opts.weight_decay)


def _step_batches(adapter, corpus, opts: TrainOptions, run: _Run) -> Iterator[Tensor]:
    """[tokens_per_step / seq_len, seq_len] batches, forever: the corpus is read again when it ends."""
    assert opts.seq_len is not None  # narrowing: called on `resolved` options
    per_step = opts.tokens_per_step // opts.seq_len
    one_shot = iter(corpus) is corpus if not isinstance(corpus, (str, os.PathLike)) else False
    while True:
        count, buffer = ChunkCount(), []
        seed = (opts.seed + run.passes - 1) % SEED_MAX
        for chunk in token_chunks(adapter, corpus, seq_len=opts.seq_len, text_key=opts.text_key,
                                  shuffle_buffer=opts.shuffle_buffer, seed=seed, count=count):
            buffer.append(chunk)
            if len(buffer) == per_step:
                yield torch.stack(buffer)
                buffer = []
        if run.passes == 1 and count.chunks < per_step:
            raise OptionError(
                f"The corpus has {count.tokens} tokens ({count.chunks} whole chunks of seq_len={opts.seq_len}); one "
                f"step needs tokens_per_step={opts.tokens_per_step} tokens ({per_step} chunks). Give more text, or "
                "lower tokens_per_step or seq_len."
            )
        if one_shot:
            raise OptionError(
                f"The corpus is a one-shot iterator and ran out after {count.tokens} tokens, before the "
                f"{opts.steps} steps of {opts.tokens_per_step} tokens; give a list, files or a dataset (read "
                "again when they end), more text, or fewer steps."
            )
        run.passes += 1


@dataclass(frozen=True)
class _StepBatch:
    """One step's batch as this process trains on it: its own chunks, and the whole step's token count."""

    chunks: Tensor  # [n_mine, seq_len]: rows rank, rank + N, ... of the step batch (possibly none)
    n_tokens: int  # tokens the step's loss is averaged over: the whole batch, every process together
    world: World

    @classmethod
    def of(cls, batch: Tensor, world: World, loss: str) -> "_StepBatch":
        n_tokens = batch.shape[0] * (batch.shape[1] - (loss == "cross_entropy"))
        return cls(batch[world.rank :: world.size], n_tokens, world)


def _train_step(adapter, lens: "TunedLens", optimizer, batch: _StepBatch, opts: TrainOptions, step: int) -> list[float]:
    """One optimiser step on the step batch; the mean loss of each translator (nats per token).

    Each process adds the gradients of its own chunks, then one all-reduce (sum) of the flat
    gradient buffer gives all of them the whole batch's gradient before clipping. This is a
    manual all-reduce, not torch's DistributedDataParallel: DDP's reducer expects one
    backward over all parameters per step, while this loop runs one backward per translator
    to keep a single [tokens, d_vocab] graph alive; the collective is the one DDP would issue.
    """
    for group in optimizer.param_groups:
        group["lr"] = opts.base_lr * opts.lr_factor(step)
    flat, sums = _local_gradients(adapter, lens, batch, opts)
    all_reduce_sum(batch.world, flat, what=f"the gradient all-reduce of step {step}")
    all_reduce_sum(batch.world, sums, what=f"the loss all-reduce of step {step}")
    nn.utils.clip_grad_norm_(lens.parameters(), opts.max_grad_norm)
    optimizer.step()
    return [float(t) / batch.n_tokens for t in sums]


def _local_gradients(adapter, lens: "TunedLens", batch: _StepBatch, opts: TrainOptions) -> tuple[Tensor, Tensor]:
    """This process's gradients (a flat buffer that every `.grad` is a view of) and float64 loss sums."""
    params = list(lens.parameters())
    flat, views = _zeroed_grads(params)
    totals = [0.0] * len(lens.row_keys())
    for micro in batch.chunks.split(opts.micro_batch) if len(batch.chunks) else ():
        for i, value in enumerate(_accumulate(adapter, lens, micro.to(adapter.device), opts.loss, batch.n_tokens)):
            totals[i] += value
    for p, view in zip(params, views, strict=True):
        if p.grad is not view:  # autograd replaced the view instead of adding into it: take its sum back
            assert p.grad is not None  # narrowing: every translator took part in the backward passes
            view.copy_(p.grad)
            p.grad = view
    return flat, torch.tensor(totals, dtype=torch.float64)


def _zeroed_grads(params: list[nn.Parameter]) -> tuple[Tensor, list[Tensor]]:
    """One zeroed buffer, every parameter's `.grad` a view into it (as DDP's gradient_as_bucket_view)."""
    flat = torch.zeros(sum(p.numel() for p in params), dtype=params[0].dtype, device=params[0].device)
    grads = [view.view_as(p) for p, view in zip(params, flat.split([p.numel() for p in params]), strict=True)]
    for p, grad in zip(params, grads, strict=True):
        p.grad = grad
    return flat, grads


def _residuals(adapter, lens: "TunedLens", tokens: Tensor) -> tuple[dict, Tensor]:
    """Every translated row's residual stream (detached, [batch, pos, d]) and the model's logits."""
    keys = lens.row_keys()
    with torch.no_grad():
        run = adapter.run(tokens, capture=keys, need_logits=True)
        acts = {k: run[k].detach().reshape(*tokens.shape, -1) for k in keys}
    return acts, run.require_logits().detach()


def _accumulate(adapter, lens: "TunedLens", tokens: Tensor, loss: str, n_tokens: int) -> list[float]:
    """Backpropagate each translator's summed loss / n_tokens, one at a time; return the sums."""
    acts, logits = _residuals(adapter, lens, tokens)
    with torch.no_grad():
        target = _Distill(logits) if loss == "kl" else tokens[:, 1:].reshape(-1)
    del logits
    sums = []
    for key in lens.row_keys():
        translated = lens.translator_for(acts[key], *key)
        assert translated is not None  # narrowing: row_keys() lists the rows that have a translator
        z = adapter.lens_logits(translated)
        if isinstance(target, _Distill):  # loss == "kl"
            value = target.kl_sum(z)
        else:
            z = z[:, :-1].reshape(-1, z.shape[-1]).float()
            value = nn.functional.cross_entropy(z, target, reduction="sum")
        (value / n_tokens).backward()
        sums.append(float(value.detach()))
    return sums


class _Distill:
    """KL(final ‖ softmax(z)) summed over tokens, against fixed final logits; gradient softmax(z) − p."""

    # A fused KL for speed; its reference is metrics.kl_divergence (tests/lens/test_fused_kl.py compares them).

    def __init__(self, final: Float[Tensor, "*tokens d_vocab"]) -> None:
        logp = final.float().log_softmax(-1)
        self.p = logp.exp()
        self.neg_entropy = _dot(self.p, logp.nan_to_num_(0.0, neginf=0.0))  # Σ p log p (0 log 0 = 0)

    def kl_sum(self, z: Float[Tensor, "*tokens d_vocab"]) -> Tensor:
        if torch.is_grad_enabled() and z.requires_grad:
            return _KLFromLogits.apply(z, self.p, self.neg_entropy)
        return self.neg_entropy - _dot(self.p, z.float().log_softmax(-1))


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """Σ a·b over all elements, without a temporary of their size."""
    return torch.dot(a.reshape(-1), b.reshape(-1))


class _KLFromLogits(torch.autograd.Function):
    """Σ p (log p − log_softmax z) with one [tokens, d_vocab] temporary: the gradient softmax(z) − p."""

    @staticmethod
    def forward(ctx, z, p, neg_entropy):
        log_q = z.float().log_softmax(-1)
        value = neg_entropy - _dot(p, log_q)
        ctx.save_for_backward(log_q.exp_().sub_(p))
        return value

    @staticmethod
    def backward(ctx, upstream):
        (grad,) = ctx.saved_tensors
        return grad.mul_(upstream), None, None


def _save_checkpoint(path: Path, lens: "TunedLens", optimizer, opts: TrainOptions, run: _Run, digest: str) -> None:
    """Write the whole training state (rank 0 only under torchrun: every process holds the same)."""
    state = {"format": CHECKPOINT_FORMAT, "options": asdict(opts), "fingerprint": lens.metadata["fingerprint"],
             "lens": lens.state_dict(), "optimizer": optimizer.state_dict(), "run": asdict(run), "digest": digest}
    from ..corpus.engine import save_atomically  # the corpus package imports the lens package

    save_atomically(state, path)


def _resume(path: Path, lens: "TunedLens", optimizer, opts: TrainOptions, batches, digest) -> _Run:
    """Load a checkpoint made with the same options and model, and replay the corpus up to it."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise OptionError(f"Cannot read the checkpoint {str(path)!r}: {error}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise OptionError(f"{str(path)!r} is not a tuned-lens training checkpoint; delete it or give another path.")
    if not fingerprints_match(state["fingerprint"], lens.metadata["fingerprint"]):
        raise OptionError(f"The checkpoint {str(path)!r} was made on another model; delete it or give another path.")
    here, there = asdict(opts), state["options"]
    differ = [f"{k}: {there.get(k)!r} there, {v!r} here" for k, v in here.items() if there.get(k) != v]
    if differ:
        raise OptionError(f"The checkpoint {str(path)!r} was made with other options ({'; '.join(differ)}); "
                          "pass the same options to resume, or delete it to start again.")
    lens.load_state_dict(state["lens"])
    optimizer.load_state_dict(state["optimizer"])
    run = _Run(**state["run"])
    for _ in range(run.step):
        digest.update(next(batches).numpy().tobytes())
    if digest.hexdigest() != state["digest"]:
        raise OptionError(f"The checkpoint {str(path)!r} was made on another corpus (its first {run.step} steps' "
                          "tokens differ); pass the same corpus to resume, or delete it to start again.")
    return run


__all__ = ["CHECKPOINT_FORMAT", "MICRO_BATCH_BYTES", "TrainOptions", "row_label", "train_tuned_lens"]
