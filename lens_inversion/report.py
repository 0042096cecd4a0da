"""`li.report(model, prompt, path=...)`: every capability on one prompt, in one offline HTML file."""

import functools
import html
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import plotly.graph_objects as go
import torch
from tqdm.auto import tqdm

from .ablation import AblationResult, ablation_sweep
from .attribution import AttributionResult, attribute
from .errors import OptionError, PromptError, UnsupportedModelError
from .hooks import adapter_for, preserves_model
from .hooks.fast_paths import run_all
from .hooks.sites import Site, site_hook_name
from .inversion import InversionResult, invert
from .lens import LogitLensResult, logit_lens
from .lens.compare import LensComparison, compare_lenses
from .lens.trained import shipped_lenses
from .validation import check_bool, check_choice, check_destination, check_int, check_prompt_text, check_seed, check_text
from .viz.report import ReportBuilder

ATTRIBUTION_METHODS = ("grad_x_input", "occlusion", "combined")
INVERSION_METHODS = ("embedding", "exact")


@dataclass(frozen=True, kw_only=True)
class InversionRow:
    """One inversion of the report: a layer's resid_post inverted by one method."""

    layer: int
    method: str
    result: InversionResult


@dataclass(frozen=True, kw_only=True)
class ReportResult:
    """What `report` computed and where it wrote the HTML."""

    path: Path
    prompt: str
    model_name: str
    lens_final: LogitLensResult | None  # None when the model's readout cannot be read by the lens
    lens_input: LogitLensResult | None
    attributions: dict[str, AttributionResult]
    inversions: tuple[InversionRow, ...]
    ablation: AblationResult
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    checks: tuple = ()  # every self-check verdict on this model (pass / unsupported / fell back / failed)
    lens_refusal: str = ""  # why the lens sections are missing (an UnsupportedModelError's message)
    lens_comparison: LensComparison | None = None  # the logit lens beside trained lenses; None without any
    inversion_refusal: str = ""  # why the inversion rows are missing

    @property
    def problems(self) -> list[str]:
        """One line per result that did not verify (an exact inversion) or check that did not pass."""
        out = [
            f"exact inversion of block {row.layer} is {row.result.verdict}"
            for row in self.inversions
            if row.method == "exact" and row.result.verdict is not None and not row.result.verdict.verified
        ]
        return out + [f"self-check {c.name} {c.status}{c.detail}" for c in self.checks if not c.healthy]

    def __repr__(self) -> str:
        acc = ", ".join(
            f"L{row.layer} {row.method} {row.result.token_accuracy:.2f}"
            for row in self.inversions
            if row.result.token_accuracy is not None
        )
        return f"ReportResult(path={str(self.path)!r}, model={self.model_name!r}, token accuracy: {acc})"

    def plot(self) -> go.Figure:
        """The report's lead figure: KL(final ‖ layer) of the logit lens (else the first attribution)."""
        if self.lens_final is None:
            return next(iter(self.attributions.values())).plot()
        return self.lens_final.plot(metric="kl")

    def inversion_figure(self) -> go.Figure:
        """Token accuracy per layer, one bar group per inversion method."""
        fig = go.Figure()
        for method in dict.fromkeys(row.method for row in self.inversions):
            rows = [row for row in self.inversions if row.method == method]
            fig.add_bar(
                name=_METHOD_LABELS.get(method, method),
                x=[f"block {row.layer}" for row in rows],
                y=[row.result.token_accuracy for row in rows],
                text=[f"{row.result.token_accuracy:.0%}" for row in rows],
            )
        fig.update_layout(
            barmode="group",
            title="Input tokens recovered from resid_post",
            yaxis=dict(title="token accuracy", range=[0, 1.05], tickformat=".0%"),
            height=380,
        )
        return fig


_METHOD_LABELS = {"embedding": "gradient descent (research method)", "exact": "exact search"}
REPORT_GRADIENT_STEPS = 100  # with early stopping on the shifted-input yardstick: ~3 s for three layers
ABLATIONS = ("zero", "mean", "resample")
Ablation = Literal["zero", "mean", "resample"]
# The progress bar's fixed steps: two logit lenses, the trained-lens comparison, the sweep,
# the self-checks and writing the page; attributions and inversions are counted separately.
_FIXED_STEPS = 6


class _PromptOptionError(PromptError, OptionError):
    """A prompt problem: a PromptError, still caught as the OptionError `report` raised before 0.3."""


def _default_layers(n_layers: int) -> list[int]:
    return sorted({0, n_layers // 2, n_layers - 1})


def _model_name(model) -> str:
    name = str(getattr(model.cfg, "model_name", None) or type(model).__name__)
    return Path(name).name if Path(name).is_absolute() else name


def _check_prompt(prompt: object) -> None:
    """Raise PromptError unless `prompt` is one non-empty, valid Unicode string."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise _PromptOptionError(f"report() takes one non-empty prompt string; got {prompt!r}.")
    check_prompt_text(prompt)


def _check_layers(adapter, inversion_layers) -> list[int]:
    """The blocks to invert (default: first, middle, last), each checked against the model."""
    layers = inversion_layers
    if layers is not None:
        layers = list(layers) if isinstance(layers, (list, tuple, range)) else [layers]
    layers = _default_layers(adapter.n_layers) if layers is None else layers
    if not layers:
        raise OptionError("inversion_layers is empty; give at least one block index or None for the default.")
    for layer in layers:
        adapter.check_layer(layer, what="inversion layer")
    return layers


def _check_lenses(model, lenses) -> list:
    """The trained lenses to compare: the given list, or those shipped for the model when None."""
    if lenses is not None and (isinstance(lenses, (str, bytes)) or not isinstance(lenses, Sequence)):
        raise OptionError(f"lenses must be a list of trained lenses or None; got {type(lenses).__name__}.")
    return shipped_lenses(model) if lenses is None else list(lenses)


class _Steps:
    """A progress bar over the report's steps that times each one."""

    def __init__(self, total: int, progress: bool):
        self.bar = tqdm(total=total, desc="report", disable=not progress, leave=False)
        self.timings: dict[str, float] = {}

    def __call__(self, label: str, fn: Callable[[], Any]) -> Any:
        """Run `fn` as the step `label`: shown on the bar, timed into `timings`."""
        self.bar.set_postfix_str(label)
        t0 = time.perf_counter()
        value = fn()
        self.timings[label] = time.perf_counter() - t0
        self.bar.update(1)
        return value

    def skip_to(self, n: int) -> None:
        """Advance the bar to step `n` (steps skipped by a refusal)."""
        self.bar.update(n - self.bar.n)


def _lens_results(step: _Steps, model, prompt: str) -> tuple[LogitLensResult | None, LogitLensResult | None, str]:
    """The logit lens against the final output and the input, or (None, None, why) when refused."""
    try:
        final = step("logit lens (final)", lambda: logit_lens(model, prompt, compare="final", progress=False))
        first = step("logit lens (input)", lambda: logit_lens(model, prompt, compare="input", progress=False))
    except UnsupportedModelError as refusal:  # e.g. a readout head the lens cannot compose: the rest still runs
        step.skip_to(2)
        return None, None, str(refusal)
    return final, first, ""


def _inversion_options(method: str, gradient_steps: int, gradient_early_stop: bool, seed: int) -> dict:
    if method == "exact":
        return dict(seed=seed)
    return dict(steps=gradient_steps, stop_when_closer=gradient_early_stop, seed=seed)


def _inversion_rows(step: _Steps, model, prompt: str, layers: list[int], **options) -> tuple[InversionRow, ...]:
    """Every layer's resid_post inverted by every method of INVERSION_METHODS."""
    rows = []
    for layer in layers:
        target = site_hook_name(Site.RESID_POST, layer)
        for method in INVERSION_METHODS:
            o = _inversion_options(method, **options)
            result = step(
                f"inversion (block {layer}, {method})",
                functools.partial(invert, model, prompt, target=target, method=method, progress=False, **o),
            )
            rows.append(InversionRow(layer=layer, method=method, result=result))
    return tuple(rows)


def _sweep(model, prompt: str, ablation: str, seed: int) -> AblationResult:
    """The ablation sweep; mean/resample take the prompt itself as reference."""
    reference = None if ablation == "zero" else prompt
    return ablation_sweep(model, prompt, ablation=ablation, reference=reference, seed=seed, progress=False)


@dataclass(frozen=True, kw_only=True)
class _Plan:
    """The checked options of one `report` call."""

    path: Path
    layers: list[int]
    trained: list
    ablation: str
    title: str | None
    gradient_steps: int
    gradient_early_stop: bool
    seed: int


def _run(plan: _Plan, step: _Steps, model, adapter, prompt: str) -> ReportResult:
    """Compute every section of the report (the page is written by the caller)."""
    lens_final, lens_input, lens_refusal = _lens_results(step, model, prompt)
    # A lens the user passed that does not fit the model raises here, as logit_lens(lens=...) would.
    comparison = step("trained lenses", lambda: compare_lenses(model, prompt, lenses=plan.trained)
                      if plan.trained and lens_final is not None else None)
    attributions = {
        method: step(f"attribution ({method})", functools.partial(attribute, model, prompt, method=method, progress=False))
        for method in ATTRIBUTION_METHODS
    }
    refusal = _token_table_refusal(adapter)
    inversions = () if refusal else _inversion_rows(
        step, model, prompt, plan.layers, gradient_steps=plan.gradient_steps,
        gradient_early_stop=plan.gradient_early_stop, seed=plan.seed)
    sweep = step("ablation sweep", lambda: _sweep(model, prompt, plan.ablation, plan.seed))
    checks = step("self-checks", lambda: tuple(run_all(adapter, force=False)))
    return ReportResult(
        checks=checks, path=plan.path, prompt=prompt, model_name=_model_name(adapter.model),
        lens_final=lens_final, lens_input=lens_input, lens_refusal=lens_refusal, lens_comparison=comparison,
        inversion_refusal=refusal, attributions=attributions, inversions=inversions, ablation=sweep,
        seconds=0.0, timings=step.timings,
    )


@preserves_model
def report(
    model,
    prompt: str,
    /,
    *,
    path: "str | Path" = "report.html",
    inversion_layers: int | Sequence[int] | None = None,
    gradient_steps: int = REPORT_GRADIENT_STEPS,
    gradient_early_stop: bool = True,
    ablation: Ablation = "zero",
    lenses: "Sequence | None" = None,
    title: str | None = None,
    seed: int = 0,
    progress: bool = True,
) -> ReportResult:
    """Run the logit lens, attribution, inversion and an ablation sweep; write one offline HTML file.

    Args:
        model: a TransformerLens model (TransformerBridge or HookedTransformer).
        prompt: one prompt (a string).
        path: where to write the HTML (plotly.js embedded once, so it opens offline).
        inversion_layers: blocks whose resid_post is inverted, one index or a list (default:
            first, middle, last).
        gradient_steps: at most this many steps of the research's gradient-descent inversion.
        gradient_early_stop: stop gradient inversion once the result is closer to the target
            than the shifted input (the research's yardstick); False: run every step.
        ablation: the sweep's ablation of each resid_post cell, one of ABLATIONS
            (mean/resample use the prompt itself as reference).
        lenses: trained lenses to compare with the logit lens (li.load_lens(...)); default
            the lenses shipped for an embedded model, none for other models; [] for none.
        title: the page title (default names the model).
        seed: seed for gradient inversion and the sweep.
        progress: show a progress bar.

    Returns:
        A `ReportResult` with every result object and the written path.

    Raises:
        PromptError: the prompt is not one non-empty valid string; OptionError: a bad option.
    """
    check_bool("progress", progress)
    path = check_destination(path, example="report.html")
    check_text("title", title, allow_none=True)
    _check_prompt(prompt)
    check_int("gradient_steps", gradient_steps, low=1)
    check_bool("gradient_early_stop", gradient_early_stop)
    check_seed(seed, allow_none=False)
    check_choice("ablation", ablation, ABLATIONS)
    adapter = adapter_for(model)
    plan = _Plan(path=path, layers=_check_layers(adapter, inversion_layers), trained=_check_lenses(model, lenses),
                 ablation=ablation, title=title, gradient_steps=gradient_steps,
                 gradient_early_stop=gradient_early_stop, seed=seed)
    started = time.perf_counter()
    step = _Steps(_FIXED_STEPS + len(ATTRIBUTION_METHODS) + len(plan.layers) * len(INVERSION_METHODS), progress)
    try:
        result = _run(plan, step, model, adapter, prompt)
        step("write HTML", lambda: _write(result, adapter, title))
    finally:
        step.bar.close()
    return replace(result, seconds=time.perf_counter() - started)


def _token_table_refusal(adapter) -> str:
    """Why inversion cannot run on this model ("" when it can): it needs per-token embeddings."""
    try:
        adapter.token_embedding_rows(torch.zeros(1, dtype=torch.long, device=adapter.device))
    except UnsupportedModelError as refusal:
        return str(refusal)
    return ""


def _write(result: ReportResult, adapter, title: str | None) -> Path:
    cfg = adapter.cfg
    page = ReportBuilder(title or f"lens_inversion report: {result.model_name}")
    _summary(page, result)
    predicted = next(iter(result.attributions.values())).predicted_token
    page.table(
        ["prompt", "model", "layers", "d_model", "vocabulary", "predicted next token"],
        [[result.prompt, result.model_name, cfg.n_layers, cfg.d_model, adapter.d_vocab, repr(predicted)]],
    )
    if result.lens_final is None:
        page.heading("Logit lens", note=f"Not shown: {result.lens_refusal}")
    else:
        _lens_sections(page, result)

    _rest_of_page(page, result)
    return page.write(result.path)


def _lens_sections(page: ReportBuilder, result: ReportResult) -> None:
    final, lens_input = result.lens_final, result.lens_input
    assert final is not None and lens_input is not None  # narrowing: both are shown only when the lens ran
    page.heading(
        "Logit lens against the final output",
        note="Each row decodes one residual stream with the model's final norm (recomputed on that row) and "
        "unembedding. KL(final ‖ row) in nats, and the rank of the model's final top-1 token in each row. "
        "Cells show the row's top-1 token; outlined cells agree with the final prediction.",
    )
    page.figure(final.plot(metric="kl"))
    page.figure(final.plot(metric="rank"))

    page.heading(
        "Logit lens against the input",
        note="KL(input ‖ row), where 'input' is the lens's own distribution on the embedding row, and the "
        "rank of the input token at each position: how long each layer still carries its own token.",
    )
    page.figure(lens_input.plot(metric="kl"))
    page.figure(lens_input.plot(metric="rank"))
    _trained_lens_section(page, result.lens_comparison)


def _trained_lens_section(page: ReportBuilder, comparison: "LensComparison | None") -> None:
    title = "Logit lens beside trained lenses"
    if comparison is None:
        page.heading(title, note="Not shown: no trained lens was given for this model (pass lenses=[li.load_lens(...)]; "
                                 "the embedded models ship a tuned and a Jacobian lens).")
        return
    names = ", ".join(comparison.lenses)
    page.heading(
        title,
        note=f"KL(final ‖ row) in nats, averaged over the prompt's positions, for the {names} lens: a tuned lens "
        "(per-layer affine translators trained to match the final output) should sit below the logit lens in early "
        "layers; a Jacobian lens transports each block's output by the mean Jacobian to the last block. Hollow "
        "markers: rows that lens has no translator for, read by the identity.",
    )
    page.figure(comparison.plot())
    page.table(["lens", *comparison.row_labels],
               [[kind, *(f"{v:.4g}" for v in row.tolist())] for kind, row in zip(comparison.lenses, comparison.kl, strict=True)])


def _rest_of_page(page: ReportBuilder, result: ReportResult) -> None:
    _attribution_and_inversion(page, result)
    _ablation_and_checks(page, result)


def _attribution_and_inversion(page: ReportBuilder, result: ReportResult) -> None:
    page.heading(
        "Attribution of the next-token prediction",
        note="Red = high, blue = low. Gradient × input: |∂O/∂a| ⊙ a summed over d_model. Occlusion: each "
        "token replaced by the pad token, L1 change of the output logits. Combined: the weighted mean of "
        "both after max-abs normalisation, with their rank agreement.",
    )
    for attribution in result.attributions.values():
        page.fragment(attribution.html())

    page.heading(
        "Input inversion from each layer",
        note="Gradient descent on the input embedding (the research's method, pseudoinverse decoding; at most "
        f"{result.inversions[0].result.options.get('steps', REPORT_GRADIENT_STEPS) if result.inversions else ''} "
        "steps, stopped early once closer than the shifted input) against the exact search, on each block's "
        "resid_post. 'verdict' says whether the recovered input provably reproduces the activation: an exact "
        "search that is not verified is marked red, an ambiguous one amber; gradient descent makes no such "
        "claim. 'closer than shift' is the research's yardstick: the result's output is closer to the target "
        "than that of the input plus N(0, 1/20) noise.",
    )
    if result.inversion_refusal:
        page.fragment(f'<p class="li-note">Not shown: {html.escape(result.inversion_refusal)}</p>')
        return
    page.figure(result.inversion_figure())
    page.table(
        ["block", "method", "recovered text", "token accuracy", "verdict", "distance", "closer than shift", "seconds"],
        [_inversion_cells(row) for row in result.inversions],
        marks=[_inversion_mark(row) for row in result.inversions],
    )



def _ablation_and_checks(page: ReportBuilder, result: ReportResult) -> None:
    sweep = result.ablation
    page.heading(
        f"{sweep.ablation.capitalize()} ablation of each residual-stream cell",
        note=f"Each cell ablates one (layer, position) of {sweep.site} and measures the {sweep.metric} of "
        "the prediction at the last position against the clean run"
        + (" (log colour scale, so effects far smaller than ablating the last token itself stay visible)."
           if sweep.metric == "kl" else "."),
    )
    page.figure(sweep.plot(log=sweep.metric == "kl"))
    page.heading(
        "Self-checks",
        note="Each fast path used above (key/value prefix reuse, cut prefixes, layered sweep runs, readout-only "
        "unembedding, batched rows) was compared once on this model with its reference path; 'fell back' means "
        "the reference path was used instead, 'unsupported' that this architecture cannot run that shortcut "
        "(the reference path is used), 'failed' that no reference path exists. `lens-inversion doctor` "
        "reruns them.",
    )
    page.table(
        ["check", "status", "max |Δ|", "tolerance", "what it compares"],
        [[c.name, c.status, f"{c.max_error:.2e}", f"{c.tolerance:.2e}", c.description + c.detail] for c in result.checks],
        marks=[_CHECK_MARKS[c.status] for c in result.checks],
    )
    page.fragment(
        '<p class="li-note">Timings (s): '
        + ", ".join(f"{label} {seconds:.2f}" for label, seconds in result.timings.items())
        + "</p>"
    )


_CHECK_MARKS = {"pass": "ok", "unsupported": "ok", "fell back": "warn", "failed": "failed"}


def _summary(page: ReportBuilder, result: ReportResult) -> None:
    """A first line that says whether everything on the page verified, and what did not."""
    problems = result.problems
    if not problems:
        page.fragment('<p class="li-note">Every exact inversion verified and every self-check passed.</p>')
        return
    page.table(["did not verify"], [[line] for line in problems], marks=["failed"] * len(problems))


def _inversion_mark(row: InversionRow) -> str:
    verdict = row.result.verdict
    if row.method != "exact" or verdict is None or verdict.verified:
        return "ok"
    return "warn" if verdict.status == "ambiguous" else "failed"


def _inversion_cells(row: InversionRow) -> list[object]:
    res = row.result
    verdict = "n/a" if res.verdict is None else (
        res.verdict.status if res.verdict.verified or row.method != "exact" else str(res.verdict))
    return [
        row.layer,
        _METHOD_LABELS.get(row.method, row.method),
        res.text,
        f"{res.token_accuracy:.0%}" if res.token_accuracy is not None else "n/a",
        verdict,
        f"{res.distance:.4g}" if res.distance is not None else "n/a",
        res.closer_than_shift,
        f"{res.seconds:.2f}",
    ]


__all__ = ["InversionRow", "ReportResult", "report"]
