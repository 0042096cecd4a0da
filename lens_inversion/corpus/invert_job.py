"""`invert_corpus`: how often `li.invert` recovers real text, as exact totals over a corpus.

Prompts. Each document of the corpus (see `lens.token_stream` for what a corpus is) is
tokenized alone, without special tokens (no BOS, no separator), and cut into consecutive,
non-overlapping windows of exactly `n_tokens` ids: tokens [0, n), [n, 2n), ... The last
partial window of a document is dropped, so a document shorter than `n_tokens` gives no
prompt. Windows are taken in corpus order until `n_prompts` (all of them when None); a
corpus with fewer windows gives fewer prompts (`result.prompts` says how many).

Each window is inverted alone by `li.invert(model, window, target=..., method=...,
seed=seed)`, the same seed for every prompt, so the result does not depend on how the
prompts are shared between processes. Default target: the last block's resid_post at every
position. A prompt counts as *exactly recovered* when every recovered token equals the
window's and the inversion's verdict is "verified"; token accuracy counts equal tokens over
all positions (none is skipped: the windows hold no BOS).

The prompts run on the corpus runner (`engine.run_items`): prompt i belongs to rank
i % world_size under torchrun, totals are summed exactly over processes, and with
`checkpoint=` an interrupted job resumes where it stopped (its options must be the same).
The exact search's per-prompt InversionWarnings are replaced by one at the end that counts the
prompts that did not verify (over every process).
"""

import hashlib
import itertools
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from jaxtyping import Int
from torch import Tensor

from ..callsite import user_stacklevel
from ..errors import OptionError, PromptError
from ..hooks import Target, adapter_for, preserves_model
from ..inversion.api import METHODS, Method, invert
from ..inversion.candidates import allowed_ids
from ..inversion.exact import EXACT_OPTIONS
from ..inversion.gradient import GRADIENT_OPTIONS
from ..inversion.observed import as_targets
from ..inversion.result import ExactTrace, InversionResult, InversionWarning
from ..lens.token_stream import check_corpus, documents
from ..validation import check_bool, check_choice, check_int, check_number, check_seed, check_text
from .distributed import joined
from .engine import Loop, run_items
from .invert_result import InversionCorpusResult, margin_bins
from .runner import check_run_options


@dataclass(frozen=True, kw_only=True, eq=False)
class Window:
    """One prompt: `n_tokens` consecutive ids of document `document`, from token `start`."""

    index: int
    document: int
    start: int
    tokens: Int[Tensor, " n_tokens"]

    def digest(self) -> bytes:
        """The window's ids as bytes, for the stream digest that checks a resumed job reads the same prompts."""
        return self.tokens.numpy().tobytes()


def windows(adapter, corpus, *, n_tokens: int, n_prompts: int | None, text_key: str = "text") -> Iterator[Window]:
    """The corpus's prompts, in order (see the module docstring)."""
    if adapter.tokenizer is None:
        raise PromptError("The model has no tokenizer, so it cannot read a text corpus; attach one to the model.")
    count = 0
    for d, doc in enumerate(documents(corpus, text_key=text_key)):
        ids = adapter.tokenizer.encode(doc, add_special_tokens=False)
        for start in range(0, len(ids) - n_tokens + 1, n_tokens):
            if n_prompts is not None and count >= n_prompts:
                return
            yield Window(index=count, document=d, start=start,
                         tokens=torch.tensor(ids[start:start + n_tokens], dtype=torch.long))
            count += 1


def prompt_totals(result: InversionResult, truth: Int[Tensor, " n_tokens"]) -> dict:
    """One prompt's sums and counts (the names every prompt gives)."""
    hit = result.tokens[0].cpu() == truth
    verdict = result.verdict
    verified = verdict is not None and verdict.verified
    positions = result.trace.positions if isinstance(result.trace, ExactTrace) else ()
    decided = [p for p in positions if p.decided]
    margins = torch.tensor([p.margin for p in decided], dtype=torch.float64)
    finite = margins[torch.isfinite(margins)]
    unique = torch.zeros(len(truth), dtype=torch.long)
    for p in positions:
        unique[p.position] = int(p.unique)
    return {
        "prompts": 1, "exact": int(bool(hit.all()) and verified), "recovered": int(bool(hit.all())),
        "verified": int(verified), "ambiguous": int(verdict is not None and verdict.status == "ambiguous"),
        "correct_tokens": int(hit.sum()), "position_correct": hit.long(), "position_unique": unique,
        "candidates": sum(p.candidates_checked for p in positions),
        "closer_than_shift": int(bool(result.closer_than_shift)),
        "distance": float(result.distance if result.distance is not None else 0.0),
        "seconds": float(result.seconds), "margin_sum": float(finite.sum()), "margin_count": len(finite),
        "margin_unrivalled": int(torch.isinf(margins).sum()), "margin_counts": margin_bins(finite),
    }


PASSED = ("allowed_tokens", "tolerance", "exhaustive", "steps")  # the invert options passed through


def _options(adapter, method: str, *, allowed_tokens, tolerance, exhaustive, steps) -> dict:
    """The pass-through options given (not None), checked for this method before any work."""
    given = {k: v for k, v in dict(allowed_tokens=allowed_tokens, tolerance=tolerance, exhaustive=exhaustive,
                                   steps=steps).items() if v is not None}
    valid = EXACT_OPTIONS if method == "exact" else GRADIENT_OPTIONS
    wrong = sorted(k for k in given if k not in valid)
    if wrong:
        here = ", ".join(k for k in PASSED if k in valid)
        raise OptionError(f"{', '.join(wrong)} is not an option of method={method!r}; with it give only {here} "
                          "(tolerance and exhaustive are the exact method's, steps the gradient methods').")
    if allowed_tokens is not None:
        given["allowed_tokens"] = allowed_ids(adapter, allowed_tokens).cpu().tolist()
    check_number("tolerance", tolerance, low=0, high=1, high_open=True, allow_none=True)
    check_bool("exhaustive", exhaustive, allow_none=True)
    check_int("steps", steps, low=1, allow_none=True)
    return given


def _config(targets, method, n_tokens, n_prompts, text_key, seed, options) -> dict:
    """What fixes the totals: a checkpoint made with other values is refused."""
    plain = {k: v for k, v in options.items() if k != "allowed_tokens"}
    allowed = options.get("allowed_tokens")
    digest = None if allowed is None else hashlib.sha256(repr(allowed).encode()).hexdigest()
    return {"job": "invert_corpus", "targets": [str(t) for t in targets], "method": method, "n_tokens": n_tokens,
            "n_prompts": n_prompts, "text_key": text_key, "seed": seed, "allowed_tokens": digest, **plain}


def _check(adapter, corpus, *, method, n_tokens, n_prompts, text_key, seed) -> None:
    check_choice("method", method, METHODS)
    check_int("n_tokens", n_tokens, low=1, high=adapter.n_ctx)
    check_int("n_prompts", n_prompts, low=1, allow_none=True)
    check_text("text_key", text_key)
    check_seed(seed, allow_none=False)
    check_corpus(corpus, text_key=text_key)


def _first_window(stream: Iterator[Window], n_tokens: int) -> Window:
    """The first window (OptionError when the corpus has none)."""
    first = next(stream, None)
    if first is None:
        raise OptionError(f"The corpus has no document of at least n_tokens={n_tokens} tokens, so there is "
                          "nothing to invert; give a longer corpus or a smaller n_tokens.")
    return first


@preserves_model
def invert_corpus(model, corpus, *, target=None, method: Method = "exact", n_prompts: int | None = 100,
                  n_tokens: int = 20, text_key: str = "text", checkpoint=None, checkpoint_every: int = 10,
                  progress: bool = True, seed: int = 0, allowed_tokens=None, tolerance: float | None = None,
                  exhaustive: bool | None = None, steps: int | None = None) -> InversionCorpusResult:
    """Invert `n_prompts` windows of `n_tokens` corpus tokens each; exact recovery totals.

    Args:
        model: a TransformerLens model (TransformerBridge or HookedTransformer).
        corpus: texts, .txt/.jsonl paths or a datasets.Dataset (see `lens.token_stream`).
        target: a Target, its string or a list of them; default the last block's
            resid_post at every position.
        method: "exact" (verified search), "embedding" or "direct" (gradient descent).
        n_prompts: at most this many windows (None: every window of the corpus).
        n_tokens: tokens per window (the module docstring says how windows are cut).
        text_key: the text field of .jsonl lines and dataset rows.
        checkpoint: a file to save progress in and resume from (None: no checkpoint).
        checkpoint_every: prompts between checkpoint saves.
        progress: show a progress bar (rank 0).
        seed: the `seed` of every `li.invert` call.
        allowed_tokens: the vocabulary the recovered input may use (default: all).
        tolerance: the exact search's relative tolerance (None: its default).
        exhaustive: verify every allowed token at every position (exact; None: its default).
        steps: gradient steps ("embedding", "direct"; None: their default).

    Returns:
        An InversionCorpusResult (rates, per-position recovery, margin histogram, run).

    Raises:
        OptionError: a bad option or corpus, or a corpus without a window of `n_tokens`.
        DistributedError: under torchrun, a peer process died or read another corpus.
    """
    adapter = adapter_for(model)
    _check(adapter, corpus, method=method, n_tokens=n_tokens, n_prompts=n_prompts, text_key=text_key, seed=seed)
    path = check_run_options(checkpoint=checkpoint, checkpoint_every=checkpoint_every, progress=progress)
    targets = as_targets(adapter, Target(layer=-1) if target is None else target)
    options = _options(adapter, method, allowed_tokens=allowed_tokens, tolerance=tolerance, exhaustive=exhaustive,
                       steps=steps)
    stream = windows(adapter, corpus, n_tokens=n_tokens, n_prompts=n_prompts, text_key=text_key)
    first = _first_window(stream, n_tokens)

    def step(window: Window) -> dict:
        with warnings.catch_warnings():  # one warning for the whole corpus instead, below
            warnings.simplefilter("ignore", InversionWarning)
            result = invert(model, window.tokens[None].to(adapter.device), target=list(targets), method=method,
                            progress=False, seed=seed, **options)
        return prompt_totals(result, window.tokens)

    config = _config(targets, method, n_tokens, n_prompts, text_key, seed, options)
    with joined(adapter.device) as world:
        loop = Loop(world=world, config=config, checkpoint=path, checkpoint_every=checkpoint_every,
                    progress=progress, desc="invert_corpus")
        totals, info = run_items(itertools.chain([first], stream), step, loop=loop, digest_of=Window.digest,
                                 size_of=lambda w: len(w.tokens))
    result = _result(totals, info, method=method, targets=targets, n_tokens=n_tokens)
    if method == "exact" and result.verified_prompts < result.prompts:
        warnings.warn(f"Exact inversion verified {result.verified_prompts} of {result.prompts} prompts "
                      f"({result.ambiguous_prompts} ambiguous); exact_recovery_rate counts verified prompts only.",
                      InversionWarning, stacklevel=user_stacklevel())
    return result


def _result(totals, info, *, method, targets, n_tokens) -> InversionCorpusResult:
    def count(name: str) -> int:
        return int(totals[name])

    return InversionCorpusResult(
        method=method, targets=tuple(str(t) for t in targets), n_tokens=n_tokens, prompts=count("prompts"),
        exactly_recovered=count("exact"), recovered_prompts=count("recovered"), verified_prompts=count("verified"),
        ambiguous_prompts=count("ambiguous"), correct_tokens=count("correct_tokens"),
        position_correct=totals["position_correct"].clone(), position_unique=totals["position_unique"].clone(),
        candidates_checked=count("candidates"), closer_than_shift=count("closer_than_shift"),
        distance_sum=float(totals["distance"]), seconds=float(totals["seconds"]),
        margin_sum=float(totals["margin_sum"]), margin_count=count("margin_count"),
        margin_unrivalled=count("margin_unrivalled"), margin_counts=totals["margin_counts"].clone(), run=info)


__all__ = ["Window", "invert_corpus", "prompt_totals", "windows"]
