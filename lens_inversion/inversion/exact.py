"""Exact inversion: recover the input tokens by a verified search over real tokens.

Left to right, for each position t the recovered prefix is fixed (its key/value cache is
reused), candidate tokens are ordered cheaply (`candidates.order_candidates`) and then
verified by real forward passes that stop at the target's layer, many candidates per
batch. A candidate is accepted when it reproduces the observed row within the tolerance;
if no ranked candidate does, the whole allowed vocabulary is scanned, so the answer does
not depend on the ordering. Positions the target's token slice hides are searched jointly
with the next observed position (bounded beam), and reported as unique only when no
other verified hypothesis explains the observations as well.
"""

import inspect
import secrets
import time
from dataclasses import dataclass, field, fields
from typing import Literal

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..bos import first_content_position, without_leading_bos
from ..hooks import ModelAdapter, Site, adapter_for, preserves_model
from ..hooks.execution import REUSE, PrefixState, run_after
from ..validation import check_bool, check_choice, check_int, check_number, check_seed, validates_own_arguments
from .candidates import ORDERS, Order, allowed_ids, order_candidates
from .losses import tensor_sum
from .observed import Observed, as_targets, observe
from .result import ExactTrace, InversionResult, PositionReport, exact_verdict, warn_unverified

Reuse = Literal["auto", "cache", "recompute"]

ABSOLUTE_TOLERANCE = 1e-6  # floor of every per-position tolerance: a near-zero row is held to float32 noise, not to 0
END_RELATIVE_FLOOR = 1e-5  # the end-to-end check's relative tolerance is at least float32 rounding over a whole row
FEW_FEATURES = 16  # below this many observed features per position, chance near-ties are likely: scan everything
FIRST_CHUNK = 16  # candidates verified first: the true token is usually among the first few dozen ranked
CHUNK_GROWTH = 4  # later chunks grow by this factor (up to batch_size) so a poor ranking costs few passes
REFINE_STARTS = 4  # rows (at most beam) that coordinate descent starts from when the ranking missed a hidden token
REFINE_SWEEPS = 3  # coordinate-descent sweeps over the hidden tokens: more rarely changes a row
SHIFT_DIVISOR = 20  # the shifted-input yardstick e′ = e + N(0, 1)/20 (σ = 1/20, as in the research)


class _Rows:
    """The observed activations of one prompt, addressed by absolute position."""

    def __init__(self, adapter: ModelAdapter, observed: Observed, b: int) -> None:
        self.capture = list(dict.fromkeys(t.key for t in observed.targets))
        self.parts = []
        for target, values in zip(observed.targets, observed.values, strict=True):
            width = adapter.d_vocab_out if target.site is Site.LOGITS else adapter.d_model
            rows = {p: i for i, p in enumerate(target.token_positions(observed.n_pos))}
            feats = torch.tensor(target.feature_indices(width), device=adapter.device)
            self.parts.append((target.key, rows, feats, values[b].to(adapter.device, torch.float32)))
        self.positions = sorted(set().union(*(rows for _, rows, _, _ in self.parts)))
        # Fewest features observed at any position (chance near-ties become likely when small).
        self.width = min(sum(len(f) for _, rows, f, _ in self.parts if t in rows) for t in self.positions)

    def sq_distance(self, capture, start: int, t: int) -> Tensor:
        """Squared L2 distance at absolute position t over the observed features, per row."""
        return tensor_sum(
            (capture[key][:, t - start].index_select(-1, feats).float() - values[rows[t]]).pow(2).sum(-1)
            for key, rows, feats, values in self.parts if t in rows
        )

    def norm(self, t: int) -> float:
        return sum(float(v[rows[t]].pow(2).sum()) for _, rows, _, v in self.parts if t in rows) ** 0.5


@dataclass
class _Hyp:
    tokens: list[int]
    total: float = 0.0  # sum of squared distances over the observed positions so far
    records: dict[int, "PositionRecord"] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class _Search:
    adapter: ModelAdapter
    rows: _Rows
    allowed: Tensor
    order: Order
    beam: int
    hidden_top: int
    batch_size: int
    tolerance: float
    exhaustive: bool
    reuse: str
    generator: torch.Generator


def _common_prefix(hyps: list[_Hyp]) -> list[int]:
    first = hyps[0].tokens
    n = len(first)
    for h in hyps[1:]:
        pairs = enumerate(zip(first[:n], h.tokens, strict=False))
        n = next((i for i, (a, b) in pairs if a != b), min(n, len(h.tokens)))
    return first[:n]


def _hidden_combos(ranked: Tensor, beam: int, top: int) -> Tensor:
    """Per row, up to `beam` hidden-token combinations in order of their summed ranks."""
    rows, k, _ = ranked.shape
    top = min(top, ranked.shape[-1])
    out = []
    for r in range(rows):
        combos: list[tuple[int, tuple[int, ...]]] = [(0, ())]
        for j in range(k):
            grown = [(s + i, c + (int(ranked[r, j, i]),)) for s, c in combos for i in range(top)]
            combos = sorted(grown, key=lambda x: x[0])[:beam]
        out.append([c for _, c in combos])
    width = min(len(c) for c in out)
    return torch.tensor([c[:width] for c in out], dtype=torch.long, device=ranked.device).reshape(rows, width, k)


def _verify(search: _Search, prefix: PrefixState, start: int, t: int, seqs: Tensor) -> Tensor:
    """L2 distance at row t for each [rows, new] continuation of the prefix, in batches."""
    rows = search.rows
    with torch.no_grad():
        got = [rows.sq_distance(run_after(prefix, part, capture=rows.capture), start, t)
               for part in seqs.split(search.batch_size)]
    return torch.cat(got).clamp_min(0).sqrt()


def _refine(search, prefix, start, t, head: Tensor, free: Tensor, dist: float, tol: float, sweeps: int = REFINE_SWEEPS):
    """Coordinate descent over the free tokens, one whole-vocabulary scan per position.

    The other free tokens stay fixed during a scan. Returns every scanned row's free tokens
    and distance.
    """
    allowed = search.allowed
    seen_free, seen_dist = [], []
    for _ in range(sweeps):
        changed = False
        for j in range(free.shape[0]):
            trial = free.expand(len(allowed), -1).clone()
            trial[:, j] = allowed
            d = _verify(search, prefix, start, t, torch.cat([head.expand(len(allowed), -1), trial], 1))
            seen_free.append(trial)
            seen_dist.append(d)
            i = int(d.argmin())
            if float(d[i]) < dist and not torch.equal(trial[i], free):
                free, dist, changed = trial[i], float(d[i]), True
        if not changed or dist <= tol:
            break
    return torch.cat(seen_free), torch.cat(seen_dist)


def _bos_first(ranked: Tensor, bos: int | None) -> Tensor:
    """Rank the BOS first at a hidden position 0, where prompts start with it.

    A target slice `[:, 1:]` that drops the attention sink hides that position. Only the
    order changes: every candidate is still verified, so a prompt without a BOS is found too.
    """
    if bos is None or not bool((ranked == bos).any()):
        return ranked
    rest = ranked[ranked != bos].view(ranked.shape[0], -1)
    return torch.cat([torch.full_like(ranked[:, :1], bos), rest], 1)


@dataclass(frozen=True, kw_only=True)
class PositionRecord:
    """How one step decided one position of one hypothesis (read back into a PositionReport)."""

    token: int
    checked: int  # candidate rows verified in the step
    best: float  # the chosen row's distance
    second: float  # the best distance of a row with another token here (inf: none)
    seconds: float
    observed: bool  # the step's observed position (False: a hidden one decided with it)
    tol: float


@dataclass(frozen=True, kw_only=True)
class _Frame:
    """One step's fixed context: the shared prefix, each hypothesis's suffix, the position t."""

    search: _Search
    prefix: PrefixState
    start: int  # length of the common prefix
    suffix: Tensor  # [H, s] each hypothesis's tokens after the common prefix
    free: list[int]  # the positions decided here (hidden ones, then t)
    tol: float  # the absolute tolerance at t

    @property
    def t(self) -> int:
        return self.free[-1]

    def verify(self, seqs: Tensor) -> Tensor:
        return _verify(self.search, self.prefix, self.start, self.t, seqs)


@dataclass(frozen=True, kw_only=True)
class _Verified:
    """Every row verified in a step: its hypothesis, its free tokens and its distance."""

    owner: Tensor  # [N] hypothesis index
    grid: Tensor  # [N, len(free)] free tokens
    dist: Tensor  # [N] L2 distance at t

    def plus(self, owner: Tensor, grid: Tensor, dist: Tensor) -> "_Verified":
        return _Verified(owner=torch.cat([self.owner, owner]), grid=torch.cat([self.grid, grid]),
                         dist=torch.cat([self.dist, dist]))


def _frame(search: _Search, hyps: list[_Hyp], free: list[int]) -> _Frame:
    adapter, common = search.adapter, _common_prefix(hyps)
    start = len(common)
    prefix = PrefixState.build(adapter, torch.tensor([common], dtype=torch.long), reuse=search.reuse)
    suffix = torch.tensor([h.tokens[start:] for h in hyps], dtype=torch.long, device=adapter.device)
    tol = search.tolerance * search.rows.norm(free[-1]) + ABSOLUTE_TOLERANCE
    return _Frame(search=search, prefix=prefix, start=start, suffix=suffix, free=free, tol=tol)


def _rank(frame: _Frame) -> Tensor:
    """[H, len(free), K] candidates per free position, most promising first (BOS first at a hidden 0)."""
    search, adapter, suffix = frame.search, frame.search.adapter, frame.suffix

    def objective(e):
        embeds = torch.cat([adapter.embed(suffix).to(e.dtype), e], 1) if suffix.shape[1] else e
        capture = run_after(frame.prefix, embeds=embeds, capture=search.rows.capture)
        return search.rows.sq_distance(capture, frame.start, frame.t)

    ranked = order_candidates(adapter, objective, search.allowed, rows=suffix.shape[0], free=len(frame.free),
                              order=search.order, generator=search.generator)
    if frame.free[0] == 0 and len(frame.free) > 1:
        ranked[:, 0] = _bos_first(ranked[:, 0], adapter.bos_token_id)
    return ranked


def _verify_ranked(frame: _Frame, ranked: Tensor) -> _Verified:
    """Verify hidden combinations × candidates at t in growing chunks, until one reproduces (or all, if exhaustive)."""
    search, n_hyp = frame.search, frame.suffix.shape[0]
    combos = _hidden_combos(ranked[:, :-1], search.beam, search.hidden_top)  # [H, C, k]
    n_combo, k = combos.shape[1], combos.shape[2]
    at_t = ranked[:, -1]  # [H, K]
    full_chunk = max(1, search.batch_size // (n_hyp * n_combo))
    chunk, checked = min(full_chunk, FIRST_CHUNK), 0
    hyp_index = torch.arange(n_hyp, device=search.adapter.device)
    heads, frees, dists = [], [], []
    while checked < at_t.shape[1]:
        cand = at_t[:, checked : checked + chunk]  # [H, c]
        c = cand.shape[1]
        grid = torch.cat([
            combos[:, :, None, :].expand(n_hyp, n_combo, c, k),
            cand[:, None, :, None].expand(n_hyp, n_combo, c, 1),
        ], -1).reshape(-1, k + 1)  # free tokens, rows ordered (hypothesis, combo, candidate)
        owner = hyp_index.repeat_interleave(n_combo * c)
        dists.append(frame.verify(torch.cat([frame.suffix[owner], grid], 1)))
        heads.append(owner)
        frees.append(grid)
        checked += c
        chunk = min(full_chunk, chunk * CHUNK_GROWTH)
        if not search.exhaustive and float(dists[-1].min()) <= frame.tol:
            break
    return _Verified(owner=torch.cat(heads), grid=torch.cat(frees), dist=torch.cat(dists))


def _refine_best(frame: _Frame, rows: _Verified) -> _Verified:
    """Hidden tokens the ranking missed: coordinate descent from the best few rows, until one reproduces."""
    for i in rows.dist.argsort()[: min(REFINE_STARTS, frame.search.beam)].tolist():
        head = frame.suffix[rows.owner[i]][None]
        more_free, more_dist = _refine(frame.search, frame.prefix, frame.start, frame.t, head, rows.grid[i],
                                       float(rows.dist[i]), frame.tol)
        rows = rows.plus(rows.owner[i].expand(len(more_dist)), more_free, more_dist)
        if float(more_dist.min()) <= frame.tol:
            break
    return rows


def _select(frame: _Frame, hyps: list[_Hyp], rows: _Verified, seconds: float) -> list[_Hyp]:
    """The `beam` best distinct rows within the tolerance of the best, as grown hypotheses with records."""
    owner, grid, dist = rows.owner, rows.grid, rows.dist
    best = float(dist.min())
    keep, seen = [], set()  # the same row may have been verified twice
    for i in torch.nonzero(dist <= best + frame.tol).flatten().tolist():
        key = (int(owner[i]), *grid[i].tolist())
        if key not in seen:
            seen.add(key)
            keep.append(i)
    keep_t = torch.tensor(keep, dtype=torch.long)
    totals = torch.tensor([hyps[int(owner[i])].total for i in keep_t]) + dist[keep_t].double().pow(2)
    out = []
    for i in keep_t[totals.argsort()[: frame.search.beam]].tolist():
        h, tokens, d = int(owner[i]), grid[i].tolist(), float(dist[i])
        records = dict(hyps[h].records)
        for j, position in enumerate(frame.free):
            differs = grid[:, j] != tokens[j]
            second = float(dist[differs].min()) if bool(differs.any()) else float("inf")
            records[position] = PositionRecord(token=tokens[j], checked=len(dist), best=d, second=second,
                                               seconds=seconds, observed=position == frame.t, tol=frame.tol)
        out.append(_Hyp(tokens=hyps[h].tokens + tokens, total=hyps[h].total + d * d, records=records))
    return out


def _step(search: _Search, hyps: list[_Hyp], free: list[int]) -> list[_Hyp]:
    """Decide the free positions (hidden ones, then the observed last one): rank, verify, refine, select."""
    started = time.perf_counter()
    frame = _frame(search, hyps, free)
    rows = _verify_ranked(frame, _rank(frame))
    if len(free) > 1 and float(rows.dist.min()) > frame.tol:
        rows = _refine_best(frame, rows)
    return _select(frame, hyps, rows, time.perf_counter() - started)


def _report(position: int, best: _Hyp, hyps: list[_Hyp]) -> PositionReport:
    """The PositionReport of a decided position: margin over other tokens and disagreeing hypotheses."""
    rec = best.records[position]
    margin = rec.second - rec.best
    for other in hyps:  # surviving hypotheses that disagree here and fit as well
        if other is not best and other.tokens[position] != rec.token:
            margin = min(margin, other.total**0.5 - best.total**0.5)
    return PositionReport(position=position, token=rec.token, candidates_checked=rec.checked, margin=margin,
                          best_distance=rec.best, seconds=rec.seconds, unique=rec.best <= rec.tol < margin,
                          observed=rec.observed, tolerance=rec.tol)


def _search_one(search: _Search, n_pos: int, bar) -> tuple[list[int], list[PositionReport]]:
    observed = set(search.rows.positions)
    last = max(observed)
    hyps, hidden = [_Hyp(tokens=[])], []
    for t in range(last + 1):
        if t not in observed:
            hidden.append(t)
            continue
        hyps = _step(search, hyps, hidden + [t])
        bar.update(len(hidden) + 1)
        hidden = []
    best = min(hyps, key=lambda h: h.total)
    reports = [_report(position, best, hyps) for position in range(last + 1)]
    # Past the last observed position nothing observed depends on the token: no information.
    reports += [PositionReport(position=position, token=int(search.allowed[0]), candidates_checked=0, margin=0.0,
                               best_distance=float("nan"), seconds=0.0, unique=False, observed=False)
                for position in range(last + 1, n_pos)]
    bar.update(n_pos - last - 1)
    return [r.token for r in reports], reports


def _distances(adapter: ModelAdapter, observed: Observed, tokens: Tensor, embeds: Tensor | None = None) -> Tensor:
    """End-to-end L2 distance between the targets of `tokens` and the observed values, per prompt."""
    with torch.no_grad():
        capture = adapter.run(tokens, embeds=embeds, capture=[t.key for t in observed.targets])
    return tensor_sum(
        (target.select(capture[target.key]).float() - values).pow(2).sum((1, 2))
        for target, values in zip(observed.targets, observed.values, strict=True)
    ).sqrt()


def _end_tolerance(observed: Observed, tolerance: float) -> Tensor:
    """How far a correct answer's end-to-end distance may be from zero.

    The relative tolerance of the whole observation (at least float32 noise) plus the
    per-position absolute floor.
    """
    norm = tensor_sum(v.float().pow(2).sum((1, 2)) for v in observed.values).sqrt()
    return max(tolerance, END_RELATIVE_FLOOR) * norm + ABSOLUTE_TOLERANCE * observed.n_pos**0.5


@validates_own_arguments  # built from raw user values, then checked
@dataclass(frozen=True, kw_only=True)
class ExactOptions:
    """Every option of an exact inversion, checked by `checked()` before the search starts.

    Attributes:
        allowed_tokens: ids or single-token strings the input may use (default: all).
        n_pos: length of the hidden input when an activation is given and its token slice
            does not cover every position.
        beam: hypotheses kept when positions are hidden or ties occur; also the number of
            hidden-token combinations tried per hypothesis.
        hidden_top: ranked candidates per hidden position that combinations draw from.
        order: candidate order, `"gradient"`, `"random"` or `"vocab"` (correctness does not
            depend on it, speed does).
        batch_size: sequences per verification forward pass.
        tolerance: relative tolerance: a candidate reproduces a row when its L2 distance is at
            most `tolerance * ‖row‖`. A position is reported unique when its token
            reproduces the observation within that tolerance and every verified alternative
            (another token here, or another surviving hypothesis) misses it by more.
        exhaustive: verify every allowed token at every position, so margins and uniqueness
            cover the whole vocabulary, not only the candidates checked before the first
            match. Default (None): on when fewer than 16 features are observed per position,
            where a wrong token can land within the tolerance by chance.
        reuse: prefix reuse, `"auto"` (key/value cache where the backend has one),
            `"cache"` or `"recompute"`.
        progress: show a progress bar.
        seed: seed for `order="random"` and the shifted-input yardstick (None: fresh randomness).
    """

    allowed_tokens: object = None
    n_pos: int | None = None
    beam: int = 16
    hidden_top: int = 16
    order: Order = "gradient"
    batch_size: int = 256
    tolerance: float = 1e-4
    exhaustive: bool | None = None
    reuse: Reuse = "auto"
    progress: bool = True
    seed: int | None = 0

    def checked(self) -> "ExactOptions":
        """These options, or OptionError for the first bad value."""
        check_choice("order", self.order, ORDERS)
        check_choice("reuse", self.reuse, REUSE)
        check_seed(self.seed)
        check_bool("progress", self.progress)
        check_bool("exhaustive", self.exhaustive, allow_none=True)
        for name in ("beam", "hidden_top", "batch_size"):
            check_int(name, getattr(self, name), low=1)
        check_number("tolerance", self.tolerance, low=0, high=1, high_open=True)
        check_int("n_pos", self.n_pos, low=1, allow_none=True)
        return self


def _search_all(adapter: ModelAdapter, observed: Observed, allowed: Tensor, opts: ExactOptions, generator) -> tuple:
    """Search every prompt; (tokens per prompt, every PositionReport)."""
    all_tokens, all_reports = [], []
    with tqdm(total=observed.batch * observed.n_pos, desc="exact inversion", disable=not opts.progress) as bar:
        for b in range(observed.batch):
            rows = _Rows(adapter, observed, b)
            full_scan = rows.width < FEW_FEATURES if opts.exhaustive is None else bool(opts.exhaustive)
            search = _Search(adapter=adapter, rows=rows, allowed=allowed, order=opts.order, beam=opts.beam,
                             hidden_top=opts.hidden_top, batch_size=opts.batch_size, tolerance=float(opts.tolerance),
                             exhaustive=full_scan, reuse=opts.reuse, generator=generator)
            tokens, reports = _search_one(search, observed.n_pos, bar)
            all_tokens.append(tokens)
            all_reports.extend(reports)
    return all_tokens, all_reports


def _accuracy(adapter: ModelAdapter, observed: Observed, tokens: Tensor) -> float | None:
    """Fraction of the true tokens recovered; a leading BOS is not scored (None without a prompt)."""
    true = observed.true_tokens
    if true is None:
        return None
    # A one-token prompt is scored whole (BOS included); longer ones leave a leading BOS out.
    skip = first_content_position(true, adapter.bos_token_id, include_bos=true.shape[1] <= 1)
    return float((tokens[:, skip:].cpu() == true[:, skip:].cpu()).float().mean())


def run_exact(model, prompt_or_activation, *, target, options: ExactOptions) -> InversionResult:
    """Search, verify end to end, judge: the body of `invert_exact` (every tensor of the result on the CPU)."""
    opts = options.checked()
    started = time.perf_counter()
    adapter = adapter_for(model)
    targets = as_targets(adapter, target)
    observed = observe(adapter, prompt_or_activation, targets, n_pos=opts.n_pos)
    allowed = allowed_ids(adapter, opts.allowed_tokens)
    generator = torch.Generator().manual_seed(opts.seed if opts.seed is not None else secrets.randbits(31))
    all_tokens, all_reports = _search_all(adapter, observed, allowed, opts, generator)
    tokens = torch.tensor(all_tokens, dtype=torch.long, device=adapter.device)
    distances = _distances(adapter, observed, tokens).cpu()
    noise = torch.randn(adapter.embed(tokens).shape, generator=generator) / SHIFT_DIVISOR
    shifted = _distances(adapter, observed, tokens, adapter.embed(tokens).detach() + noise.to(adapter.device)).cpu()
    verdict = exact_verdict(tuple(all_reports), distances, _end_tolerance(observed, float(opts.tolerance)).cpu())
    warn_unverified(verdict)
    bos = adapter.bos_token_id
    return InversionResult(
        method="exact", targets=tuple(str(t) for t in targets), tokens=tokens.cpu(),
        str_tokens=[adapter.token_strings(row) for row in all_tokens],
        texts=[adapter.decode(without_leading_bos(row, bos)) for row in all_tokens],
        true_tokens=None if observed.true_tokens is None else observed.true_tokens.cpu(),
        token_accuracy=_accuracy(adapter, observed, tokens), distance=float(distances.mean()), distances=distances,
        shifted_distance=float(shifted.mean()), shifted_distances=shifted, verdict=verdict,
        seconds=time.perf_counter() - started, trace=ExactTrace(positions=tuple(all_reports)),
        options=dict(beam=opts.beam, hidden_top=opts.hidden_top, order=opts.order, batch_size=opts.batch_size,
                     tolerance=opts.tolerance, exhaustive=opts.exhaustive, reuse=opts.reuse, n_allowed=len(allowed),
                     seed=opts.seed),
    )


@preserves_model
def invert_exact(
    model, prompt_or_activation, /, *, target, allowed_tokens=None, n_pos: int | None = None, beam: int = 16,
    hidden_top: int = 16, order: Order = "gradient", batch_size: int = 256, tolerance: float = 1e-4,
    exhaustive: bool | None = None, reuse: Reuse = "auto", progress: bool = True, seed: int | None = 0,
) -> InversionResult:
    """Recover the input tokens behind a target activation by a verified search.

    `model` is a TransformerLens model (TransformerBridge or HookedTransformer);
    `prompt_or_activation` a prompt whose activation is inverted, or the activation itself
    ([batch, tokens, features] per target); `target` a `Target`, its string form, or a list
    of them. Returns an `InversionResult` whose `trace` is an `ExactTrace` (one
    `PositionReport` per position: token, candidates checked, margin, time, uniqueness),
    with `token_accuracy` when the true tokens are known and `distance` (end-to-end L2
    distance of the recovered input); every tensor is on the CPU. Raises OptionError for bad
    option values, TargetError and PromptError for a bad target or input. The options (from
    `ExactOptions`):
    """
    options = {name: value for name, value in locals().items() if name in EXACT_OPTIONS}
    return run_exact(model, prompt_or_activation, target=target, options=ExactOptions(**options))


EXACT_OPTIONS = tuple(f.name for f in fields(ExactOptions))
invert_exact.__doc__ = (inspect.getdoc(invert_exact) or "") + "\n\nArgs:" + (inspect.getdoc(ExactOptions) or "").split(
    "Attributes:", 1)[1]


__all__ = ["ExactOptions", "invert_exact"]
