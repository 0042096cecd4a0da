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

import secrets
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..hooks import ModelAdapter, Site, adapter_for, preserves_model
from ..hooks.execution import REUSE, PrefixState, run_after
from ..validation import check_bool, check_choice, check_int, check_number, check_seed
from .candidates import ORDERS, allowed_ids, order_candidates
from .observed import Observed, as_targets, observe
from .result import InversionResult, PositionReport, exact_verdict, warn_unverified

_ATOL = 1e-6


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
        total = 0.0
        for key, rows, feats, values in self.parts:
            if t in rows:
                act = capture[key][:, t - start].index_select(-1, feats).float()
                total = total + (act - values[rows[t]]).pow(2).sum(-1)
        return total

    def norm(self, t: int) -> float:
        return sum(float(v[rows[t]].pow(2).sum()) for _, rows, _, v in self.parts if t in rows) ** 0.5


@dataclass
class _Hyp:
    tokens: list[int]
    total: float = 0.0  # sum of squared distances over the observed positions so far
    records: dict[int, dict] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class _Search:
    adapter: ModelAdapter
    rows: _Rows
    allowed: Tensor
    order: str
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


def _refine(search, prefix, start, t, head: Tensor, free: Tensor, dist: float, tol: float, sweeps: int = 3):
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


def _step(search: _Search, hyps: list[_Hyp], free: list[int]) -> list[_Hyp]:
    """Decide the free positions (hidden ones, then the observed last one) for every hypothesis."""
    started = time.perf_counter()
    adapter, rows, t = search.adapter, search.rows, free[-1]
    common = _common_prefix(hyps)
    start = len(common)
    prefix = PrefixState.build(adapter, torch.tensor([common], dtype=torch.long), reuse=search.reuse)
    suffix = torch.tensor([h.tokens[start:] for h in hyps], dtype=torch.long, device=adapter.device)
    n_hyp, s = suffix.shape

    def objective(e):
        embeds = torch.cat([adapter.embed(suffix).to(e.dtype), e], 1) if s else e
        return rows.sq_distance(run_after(prefix, embeds=embeds, capture=rows.capture), start, t)

    ranked = order_candidates(adapter, objective, search.allowed, rows=n_hyp, free=len(free), order=search.order,
                              generator=search.generator)
    if free[0] == 0 and len(free) > 1:
        ranked[:, 0] = _bos_first(ranked[:, 0], adapter.bos_token_id)
    combos = _hidden_combos(ranked[:, :-1], search.beam, search.hidden_top)  # [H, C, k]
    n_combo, k = combos.shape[1], combos.shape[2]
    at_t = ranked[:, -1]  # [H, K]
    tol = search.tolerance * rows.norm(t) + _ATOL
    # Verify in growing chunks: the true token is usually among the first few dozen.
    full_chunk = max(1, search.batch_size // (n_hyp * n_combo))
    chunk = min(full_chunk, 16)
    heads, frees, dists, checked = [], [], [], 0
    hyp_index = torch.arange(n_hyp, device=adapter.device)
    while checked < at_t.shape[1]:
        cand = at_t[:, checked : checked + chunk]  # [H, c]
        c = cand.shape[1]
        grid = torch.cat([
            combos[:, :, None, :].expand(n_hyp, n_combo, c, k),
            cand[:, None, :, None].expand(n_hyp, n_combo, c, 1),
        ], -1).reshape(-1, k + 1)  # free tokens, rows ordered (hypothesis, combo, candidate)
        owner = hyp_index.repeat_interleave(n_combo * c)
        dists.append(_verify(search, prefix, start, t, torch.cat([suffix[owner], grid], 1)))
        heads.append(owner)
        frees.append(grid)
        checked += c
        chunk = min(full_chunk, chunk * 4)
        if not search.exhaustive and float(dists[-1].min()) <= tol:
            break
    owner, grid, dist = torch.cat(heads), torch.cat(frees), torch.cat(dists)
    n_checked = len(dist)
    if k and float(dist.min()) > tol:
        # Hidden tokens the ranking missed: coordinate descent from the best few rows.
        for i in dist.argsort()[: min(4, search.beam)].tolist():
            head = suffix[owner[i]][None]
            more_free, more_dist = _refine(search, prefix, start, t, head, grid[i], float(dist[i]), tol)
            owner = torch.cat([owner, owner[i].expand(len(more_dist))])
            grid, dist = torch.cat([grid, more_free]), torch.cat([dist, more_dist])
            if float(more_dist.min()) <= tol:
                break
        n_checked = len(dist)
    best = float(dist.min())
    keep, seen = [], set()  # the same row may have been verified twice
    for i in torch.nonzero(dist <= best + tol).flatten().tolist():
        key = (int(owner[i]), *grid[i].tolist())
        if key not in seen:
            seen.add(key)
            keep.append(i)
    keep = torch.tensor(keep, dtype=torch.long)
    totals = torch.tensor([hyps[int(owner[i])].total for i in keep]) + dist[keep].double().pow(2)
    chosen = keep[totals.argsort()[: search.beam]]
    seconds = time.perf_counter() - started
    out = []
    for i in chosen.tolist():
        h, tokens, d = int(owner[i]), grid[i].tolist(), float(dist[i])
        records = dict(hyps[h].records)
        for j, position in enumerate(free):
            differs = grid[:, j] != tokens[j]
            second = float(dist[differs].min()) if bool(differs.any()) else float("inf")
            records[position] = dict(token=tokens[j], checked=n_checked, best=d, second=second,
                                     seconds=seconds, observed=position == t, tol=tol)
        out.append(_Hyp(tokens=hyps[h].tokens + tokens, total=hyps[h].total + d * d, records=records))
    return out


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
    reports = []
    for position in range(n_pos):
        if position > last:  # nothing observed depends on this token: no information
            reports.append(PositionReport(position=position, token=int(search.allowed[0]), candidates_checked=0,
                                          margin=0.0, best_distance=float("nan"), seconds=0.0, unique=False,
                                          observed=False))
            bar.update(1)
            continue
        rec = best.records[position]
        margin = rec["second"] - rec["best"]
        for other in hyps:  # surviving hypotheses that disagree here and fit as well
            if other is not best and other.tokens[position] != rec["token"]:
                margin = min(margin, other.total**0.5 - best.total**0.5)
        reports.append(PositionReport(position=position, token=rec["token"], candidates_checked=rec["checked"],
                                      margin=margin, best_distance=rec["best"], seconds=rec["seconds"],
                                      unique=rec["best"] <= rec["tol"] < margin, observed=rec["observed"],
                                      tolerance=rec["tol"]))
    return [r.token for r in reports], reports


def _distances(adapter: ModelAdapter, observed: Observed, tokens: Tensor, embeds: Tensor | None = None) -> Tensor:
    """End-to-end L2 distance between the targets of `tokens` and the observed values, per prompt."""
    with torch.no_grad():
        capture = adapter.run(tokens, embeds=embeds, capture=[t.key for t in observed.targets])
    total = 0.0
    for target, values in zip(observed.targets, observed.values, strict=True):
        total = total + (target.select(capture[target.key]).float() - values).pow(2).sum((1, 2))
    return total.sqrt()


def _end_tolerance(observed: Observed, tolerance: float) -> Tensor:
    """How far a correct answer's end-to-end distance may be from zero.

    The relative tolerance of the whole observation (at least float32 noise) plus the
    per-position absolute floor.
    """
    norm = sum(v.float().pow(2).sum((1, 2)) for v in observed.values).sqrt()
    return max(tolerance, 1e-5) * norm + _ATOL * observed.n_pos**0.5


def _check_options(*, order, reuse, seed, progress, beam, hidden_top, batch_size, tolerance, exhaustive) -> None:
    """Every option of `invert_exact`, checked before the search starts (see validation)."""
    check_choice("order", order, ORDERS)
    check_choice("reuse", reuse, REUSE)
    check_seed(seed)
    check_bool("progress", progress)
    check_bool("exhaustive", exhaustive, allow_none=True)
    for name, value in (("beam", beam), ("hidden_top", hidden_top), ("batch_size", batch_size)):
        check_int(name, value, low=1)
    check_number("tolerance", tolerance, low=0, high=1, high_open=True)


EXACT_OPTIONS = (
    "allowed_tokens", "n_pos", "beam", "hidden_top", "order", "batch_size", "tolerance", "exhaustive", "reuse",
    "progress", "seed",
)


@preserves_model
def invert_exact(
    model,
    prompt_or_activation,
    /,
    *,
    target,
    allowed_tokens=None,
    n_pos: int | None = None,
    beam: int = 16,
    hidden_top: int = 16,
    order: str = "gradient",
    batch_size: int = 256,
    tolerance: float = 1e-4,
    exhaustive: bool | None = None,
    reuse: str = "auto",
    progress: bool = True,
    seed: int | None = None,
) -> InversionResult:
    """Recover the input tokens behind a target activation by a verified search.

    Args:
        model: a TransformerLens model (TransformerBridge or HookedTransformer).
        prompt_or_activation: a prompt whose activation is inverted, or the activation
            itself ([batch, tokens, features] per target).
        target: a `Target`, its string form, or a list of them.
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
        seed: seed for `order="random"` and the shifted-input yardstick.

    Returns:
        An `InversionResult` with `positions` (one `PositionReport` per position: token,
        candidates checked, margin, time, uniqueness), `token_accuracy` when the true
        tokens are known, and `distance` (end-to-end L2 distance of the recovered input).

    Raises:
        OptionError: bad option values. TargetError, PromptError: bad target or input.
    """
    _check_options(order=order, reuse=reuse, seed=seed, progress=progress, beam=beam, hidden_top=hidden_top,
                   batch_size=batch_size, tolerance=tolerance, exhaustive=exhaustive)
    check_int("n_pos", n_pos, low=1, allow_none=True)
    started = time.perf_counter()
    adapter = adapter_for(model)
    targets = as_targets(adapter, target)
    observed = observe(adapter, prompt_or_activation, targets, n_pos=n_pos)
    allowed = allowed_ids(adapter, allowed_tokens)
    generator = torch.Generator().manual_seed(seed if seed is not None else secrets.randbits(31))
    all_tokens, all_reports = [], []
    with tqdm(total=observed.batch * observed.n_pos, desc="exact inversion", disable=not progress) as bar:
        for b in range(observed.batch):
            rows = _Rows(adapter, observed, b)
            full_scan = rows.width < 16 if exhaustive is None else bool(exhaustive)
            search = _Search(adapter=adapter, rows=rows, allowed=allowed, order=order, beam=beam,
                             hidden_top=hidden_top, batch_size=batch_size, tolerance=float(tolerance),
                             exhaustive=full_scan, reuse=reuse, generator=generator)
            tokens, reports = _search_one(search, observed.n_pos, bar)
            all_tokens.append(tokens)
            all_reports.extend(reports)
    tokens = torch.tensor(all_tokens, dtype=torch.long, device=adapter.device)
    distances = _distances(adapter, observed, tokens)
    noise = torch.randn(adapter.embed(tokens).shape, generator=generator) / 20
    shifted = _distances(adapter, observed, tokens, adapter.embed(tokens).detach() + noise.to(adapter.device))
    verdict = exact_verdict(tuple(all_reports), distances.cpu(), _end_tolerance(observed, float(tolerance)).cpu())
    warn_unverified(verdict)
    accuracy = None
    if observed.true_tokens is not None:
        true = observed.true_tokens
        bos = adapter.bos_token_id
        skip = int(bos is not None and true.shape[1] > 1 and bool((true[:, 0] == bos).all()))
        accuracy = float((tokens[:, skip:] == true[:, skip:]).float().mean())  # a leading BOS is not scored
    return InversionResult(
        method="exact",
        targets=tuple(str(t) for t in targets),
        tokens=tokens,
        str_tokens=[adapter.token_strings(row) for row in all_tokens],
        true_tokens=observed.true_tokens,
        token_accuracy=accuracy,
        distance=float(distances.mean()),
        distances=distances,
        shifted_distance=float(shifted.mean()),
        shifted_distances=shifted,
        positions=tuple(all_reports),
        verdict=verdict,
        seconds=time.perf_counter() - started,
        texts=[adapter.decode(_without_leading_bos(row, adapter.bos_token_id)) for row in all_tokens],
        options=dict(beam=beam, hidden_top=hidden_top, order=order, batch_size=batch_size, tolerance=tolerance,
                     exhaustive=exhaustive, reuse=reuse, n_allowed=len(allowed), seed=seed),
    )


def _without_leading_bos(row: list[int], bos: int | None) -> list[int]:
    """Texts leave out a leading BOS, as the gradient methods' texts do."""
    return row[1:] if row and bos is not None and row[0] == bos else row


__all__ = ["invert_exact"]
