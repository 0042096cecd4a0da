"""Manifold walks: move the input embedding while the target output stays (nearly) fixed.

The orthogonal walk steps along a right-singular vector of the input gradient that is
orthogonal to it; the clamped walk perturbs some positions and descends on the others to
hold the output. Both report the decoded inputs and r = ‖e − e_i‖₁ / ‖O(e) − O(e_i)‖₁.
"""

from collections.abc import Sequence
from dataclasses import replace
from typing import Literal

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..bos import first_content_position
from ..deprecation import Rename, invert_bool, renamed_options
from ..errors import OptionError, PromptError, TargetError
from ..hooks import Target, adapter_for, preserves_model
from ..validation import check_bool, check_choice, check_int, check_number, check_seed, read_prompt
from .decode import EmbeddingTable, embedding_scores
from .observed import as_targets
from .result import WalkResult

_FIX_BOS = Rename("include_bos", invert_bool, "include_bos=False keeps the BOS where it is")
DTYPES = {"float32": torch.float32, "float64": torch.float64}


class _Walker:
    """The model seen as e ↦ O(e) on one prompt, with decoding and bookkeeping."""

    def __init__(self, model, prompt, target, dtype: str, include_bos: bool) -> None:
        check_choice("dtype", dtype, tuple(DTYPES))
        self.adapter = adapter_for(model)
        targets = as_targets(self.adapter, target)
        if len(targets) != 1:
            raise TargetError(f"A walk holds one target fixed; got {len(targets)}: {[str(t) for t in targets]}; give one.")
        (resolved,) = targets
        self.target: Target = replace(resolved, batch=slice(None))
        self.name = str(resolved)
        tokens = read_prompt(self.adapter, prompt).tokens
        if tokens.shape[0] != 1:
            raise PromptError(f"A walk starts from one prompt; got a batch of {tokens.shape[0]}.")
        # A leading BOS stays where it is unless include_bos (a one-token prompt has nothing else to walk).
        self.n_fixed = first_content_position(tokens, self.adapter.bos_token_id, include_bos=include_bos or tokens.shape[1] <= 1)
        self.table = EmbeddingTable.of(self.adapter)
        self.dtype = DTYPES[dtype]
        self.e0 = self.table.embed(tokens).to(self.dtype)
        self.o0 = self.output(self.e0).detach()
        self.steps: list[tuple[Tensor, Tensor]] = []

    def output(self, e: Tensor) -> Tensor:
        capture = self.adapter.run(embeds=e.float(), capture=[self.target.key])
        return self.target.select(capture[self.target.key]).to(self.dtype)

    def record(self, e: Tensor) -> None:
        with torch.no_grad():
            self.steps.append((e.detach().clone(), self.output(e)))

    def result(self, kind: str, orthogonality: Tensor | None) -> WalkResult:
        embeds = torch.cat([e for e, _ in self.steps])
        d_in = torch.stack([(self.e0 - e).abs().sum() for e, _ in self.steps])
        d_out = torch.stack([(self.o0 - o).abs().sum() for _, o in self.steps])
        ratios = d_in / d_out
        ratios[0] = float("nan")
        tokens = embedding_scores(self.table, embeds).argmax(-1)
        tokens[:, : self.n_fixed] = self.adapter.bos_token_id or 0
        return WalkResult(
            kind=kind,
            target=self.name,
            texts=[self.adapter.decode(row[self.n_fixed :]) for row in tokens.tolist()],
            tokens=tokens.cpu(),
            embeddings=embeds.cpu(),
            input_distances=d_in.cpu(),
            output_distances=d_out.cpu(),
            ratios=ratios.cpu(),
            orthogonality=None if orthogonality is None else orthogonality.cpu(),
            dtype=str(self.dtype).removeprefix("torch."),
        )


def _check_walk(*, steps, step_size, include_bos, seed, progress) -> None:
    """The options both walks share, checked before the walk starts."""
    check_int("steps", steps, low=1)
    check_number("step_size", step_size, low=0, low_open=True)
    check_bool("include_bos", include_bos)
    check_bool("progress", progress)
    check_seed(seed)


@renamed_options(fix_bos=_FIX_BOS)
@preserves_model
def orthogonal_walk(
    model,
    prompt,
    /,
    *,
    target: "str | Target",
    steps: int = 20,
    step_size: float = 0.05,
    dtype: Literal["float32", "float64"] = "float32",
    include_bos: bool = False,
    seed: int | None = 0,
    progress: bool = True,
) -> WalkResult:
    """Walk along directions orthogonal to the input gradient of the target.

    At each step g = ∇_e ‖O(e)‖₁ (the target's L1 norm) is taken at the current input;
    the right-singular vectors of g (as a 1 × n matrix) other than the first span its
    orthogonal complement, and the walk steps `step_size` along one of them, chosen at
    random. `orthogonality` reports cos(g, v) per step: how orthogonal the step really was
    in `dtype`.

    Args:
        model: a TransformerLens model.
        prompt: the starting prompt (one).
        target: the activation held fixed.
        steps: number of walk steps.
        step_size: L2 length of each step in embedding space.
        dtype: `"float32"` or `"float64"` for the walk state and the SVD.
        include_bos: walk the BOS position too (default: a leading BOS stays where it is;
            old spelling `fix_bos=True`).
        seed: chooses the singular vector of each step.
        progress: show a progress bar.

    Returns:
        A `WalkResult` with `orthogonality`.
    """
    _check_walk(steps=steps, step_size=step_size, include_bos=include_bos, seed=seed, progress=progress)
    walker = _Walker(model, prompt, target, dtype, include_bos)
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    e = walker.e0.clone()
    walker.record(e)
    n_free = e[:, walker.n_fixed :].numel()
    if n_free < 2:
        raise PromptError("An orthogonal walk needs at least two free input coordinates.")
    cosines = []
    for _ in tqdm(range(steps), desc="orthogonal walk", disable=not progress, leave=False):
        x = e.detach().requires_grad_(True)
        walker.output(x).abs().sum().backward()
        assert x.grad is not None  # narrowing: backward() just filled it
        g = x.grad[:, walker.n_fixed :].reshape(1, -1).to(walker.dtype)
        _, _, vh = torch.linalg.svd(g, full_matrices=True)
        pick = int(torch.randint(1, n_free, (1,), generator=gen))
        v = vh[pick]
        cosines.append((g[0] @ v) / g.norm().clamp_min(torch.finfo(walker.dtype).tiny))
        step = torch.zeros_like(e)
        step[:, walker.n_fixed :] = (step_size * v).view_as(e[:, walker.n_fixed :])
        e = (e + step).detach()
        walker.record(e)
    return walker.result("orthogonal", torch.stack(cosines))


def _clamped_positions(clamp, n_pos: int, n_fixed: int) -> list[int]:
    """The clamped positions, sorted and non-negative; OptionError out of range or on the fixed BOS."""
    raw = list(clamp) if isinstance(clamp, (list, tuple, range)) else [clamp]
    if not raw or any(isinstance(p, bool) or not isinstance(p, int) or not -n_pos <= p < n_pos for p in raw):
        raise OptionError(f"clamp must be position(s) in {-n_pos}..{n_pos - 1}; got {clamp!r}.")
    clamped = sorted({p % n_pos for p in raw})
    if any(p < n_fixed for p in clamped):
        raise OptionError(f"clamp={clamp!r} includes the fixed BOS position; pass include_bos=True to move it.")
    return clamped


def _free_mask(walker: _Walker, clamped: list[int]) -> Tensor:
    """[1, pos, 1] True at the positions the inner descent moves: neither fixed nor clamped."""
    is_clamped = torch.zeros(1, walker.e0.shape[1], 1, dtype=torch.bool, device=walker.e0.device)
    is_clamped[:, clamped] = True
    movable = torch.zeros_like(is_clamped)
    movable[:, walker.n_fixed :] = True
    return movable & ~is_clamped


def _hold(walker: _Walker, e: Tensor, free: Tensor, *, inner_steps: int, lr: float) -> Tensor:
    """Adam on the free positions to bring the target output back to O(e₀) (mean |O(e) − O(e₀)|)."""
    x = e.detach().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    for _ in range(inner_steps):
        opt.zero_grad(set_to_none=True)
        (walker.output(x) - walker.o0).abs().mean().backward()
        assert x.grad is not None  # narrowing: backward() just filled it
        x.grad.mul_(free)
        opt.step()
    return x.detach()


@renamed_options(fix_bos=_FIX_BOS)
@preserves_model
def clamped_walk(
    model,
    prompt,
    /,
    *,
    target: "str | Target",
    steps: int = 20,
    step_size: float = 0.05,
    clamp: int | Sequence[int] = -1,
    inner_steps: int = 20,
    lr: float = 0.01,
    dtype: Literal["float32", "float64"] = "float32",
    include_bos: bool = False,
    seed: int | None = 0,
    progress: bool = True,
) -> WalkResult:
    """Perturb the clamped positions, then descend on the rest to hold the target output.

    Each step moves the embeddings at `clamp` by `step_size` along a random unit
    direction; then `inner_steps` of Adam (rate `lr`) on the other free positions minimise
    mean |O(e) − O(e₀)| with the clamped positions' gradient zeroed.

    Args:
        model: a TransformerLens model.
        prompt: the starting prompt (one).
        target: the activation held fixed.
        steps: number of walk steps.
        step_size: L2 length of each perturbation.
        clamp: position(s) that are perturbed (negative indices count from the end).
        inner_steps: descent steps on the free positions after each perturbation.
        lr: Adam learning rate of the inner descent.
        dtype: `"float32"` or `"float64"` for the walk state.
        include_bos: walk the BOS position too (default: a leading BOS stays where it is;
            old spelling `fix_bos=True`).
        seed: seed of the perturbation directions.
        progress: show a progress bar.

    Returns:
        A `WalkResult` (no orthogonality).
    """
    _check_walk(steps=steps, step_size=step_size, include_bos=include_bos, seed=seed, progress=progress)
    check_int("inner_steps", inner_steps, low=1)
    check_number("lr", lr, low=0, low_open=True)
    walker = _Walker(model, prompt, target, dtype, include_bos)
    clamped = _clamped_positions(clamp, walker.e0.shape[1], walker.n_fixed)
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    free = _free_mask(walker, clamped)
    e = walker.e0.clone()
    walker.record(e)
    for _ in tqdm(range(steps), desc="clamped walk", disable=not progress, leave=False):
        direction = torch.randn(len(clamped), e.shape[-1], generator=gen, dtype=walker.dtype).to(e.device)
        e = e.clone()
        e[:, clamped] += step_size * direction / direction.norm()
        if free.any():
            e = _hold(walker, e, free, inner_steps=inner_steps, lr=lr)
        walker.record(e)
    return walker.result("clamped", None)
