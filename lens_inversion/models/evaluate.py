"""Figures for the embedded models: held-out loss, greedy continuations, logit-lens KL per layer.

    python -m lens_inversion.models.evaluate                  # tiny vs tiny-untrained (and tiny-llama)

Everything runs through the booted TransformerBridge (`load_model`) and the adapter, on the
held-out documents shipped in `assets/tiny/heldout.txt` (generated from a seed that training
never used).
"""

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import metrics
from ..hooks import Site, adapter_for, preserves_model
from .loader import EMBEDDED, load_model
from .training_text import heldout_by_source, heldout_generated

# Written for this evaluation (not taken from any source): ordinary modern English, ~80 words.
MODERN_PARAGRAPH = (
    "On Saturday morning Maria took the early bus into town because her car was still at the garage. "
    "She bought coffee at the small shop near the station, read the news on her phone, and then walked "
    "to the library to return two books that were already a week late. The woman at the desk smiled and "
    "said there was no fine this time. After lunch with her brother, Maria went home, cleaned the kitchen "
    "and called her mother to ask about the weekend."
)
# The sentence from issue 17 that first showed the grammar-only model could not read English.
HARBOUR = ("When the evening came, the old man walked slowly down to the harbour and looked at the boats. "
           "The sea was calm and the sky was turning from blue to a deep red.")
PROMPTS = ("The sky is", "The capital of France is", "One, two, three,", "The opposite of hot is",
           "Alice went to the market to buy bread. Alice gave bread to Bob, and Bob thanked")


def heldout_texts(n: int | None = None) -> list[str]:
    """The held-out documents shipped with `tiny` (never trained on) that fit its context with BOS."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(EMBEDDED["tiny"]))  # local directory  # offline-ok
    fits = [doc for doc in heldout_generated("tiny") if len(tok.encode(doc, add_special_tokens=False)) < tok.model_max_length]
    return fits[:n]


def heldout_source_texts(n: int | None = None) -> dict[str, list[str]]:
    """Held-out documents of each real source shipped with `tiny` (empty if it was trained on the grammar only)."""
    return {name: docs[:n] for name, docs in heldout_by_source("tiny").items()}


@preserves_model
@torch.no_grad()
def text_loss(model, texts: "str | list[str]", *, batch_size: int = 16) -> tuple[float, int]:
    """Mean next-token cross-entropy (nats) over texts of any length, and the token count.

    Each text is cut into windows of `n_ctx` tokens, each starting with BOS (where the model
    has one) and scored on its own, so a paragraph longer than the context still counts whole.
    """
    adapter = adapter_for(model)
    bos = [] if adapter.bos_token_id is None else [adapter.bos_token_id]
    step = adapter.n_ctx - len(bos)
    windows = [[*bos, *ids[i : i + step]]
               for text in ([texts] if isinstance(texts, str) else texts)
               for ids in [adapter.tokenizer.encode(text, add_special_tokens=False)]
               for i in range(0, len(ids), step)]
    total, count = 0.0, 0
    for i in range(0, len(windows), batch_size):
        rows = windows[i : i + batch_size]
        lengths = torch.tensor([len(r) for r in rows])
        tokens = torch.full((len(rows), int(lengths.max())), adapter.pad_token_id, dtype=torch.long)
        for b, r in enumerate(rows):
            tokens[b, : len(r)] = torch.tensor(r)
        logits = adapter.run(tokens.to(adapter.device), need_logits=True).require_logits()[:, :-1]
        valid = (torch.arange(tokens.shape[1] - 1)[None] < (lengths[:, None] - 1)).to(logits.device)
        nll = metrics.cross_entropy(logits, tokens[:, 1:].to(logits.device))  # [batch, pos - 1]
        total += float(nll[valid].sum())
        count += int(valid.sum())
    return total / count, count


def real_text_losses(model, *, n_texts: int = 64) -> dict[str, float]:
    """Loss on ordinary English: the paragraph and sentence written for the test, and each source's held-out set."""
    losses = {"paragraph": text_loss(model, MODERN_PARAGRAPH)[0], "harbour": text_loss(model, HARBOUR)[0]}
    for name, docs in heldout_source_texts(n_texts).items():
        losses[name] = text_loss(model, docs)[0]
    return losses


@dataclass(frozen=True, kw_only=True)
class ModelReport:
    """Held-out loss, continuations and per-layer logit-lens KL of one model."""

    name: str
    loss: float
    n_tokens: int
    continuations: dict[str, str]
    kl_per_layer: list[float]
    real_losses: dict[str, float] = field(default_factory=dict)  # nats/token on real English (see real_text_losses)

    @property
    def perplexity(self) -> float:
        """exp(loss): the held-out perplexity."""
        return float(torch.tensor(self.loss).exp())

    def __repr__(self) -> str:
        kl = ", ".join(f"{v:.3f}" for v in self.kl_per_layer)
        return f"ModelReport({self.name}: loss={self.loss:.4f}, ppl={self.perplexity:.2f}, kl=[{kl}])"


@preserves_model
@torch.no_grad()
def heldout_loss(model, texts: list[str], *, batch_size: int = 16) -> tuple[float, int]:
    """Mean next-token cross-entropy in nats over `texts` (each BOS-prefixed), and the token count."""
    adapter = adapter_for(model)
    total, count = 0.0, 0
    for i in range(0, len(texts), batch_size):
        prompt = adapter.prompt(texts[i : i + batch_size])
        logits = adapter.run(prompt.tokens, need_logits=True).require_logits()[:, :-1]
        target = prompt.tokens[:, 1:]
        valid = torch.arange(target.shape[1])[None] < (prompt.lengths[:, None] - 1)
        nll = metrics.cross_entropy(logits, target)  # [batch, pos - 1]
        total += float(nll[valid].sum())
        count += int(valid.sum())
    return total / count, count


@preserves_model
@torch.no_grad()
def greedy(model, text: str, *, n_tokens: int = 8) -> str:
    """Greedy continuation of `text` (full re-run per token; short prompts only)."""
    adapter = adapter_for(model)
    tokens = adapter.prompt(text).tokens
    for _ in range(n_tokens):
        nxt = adapter.run(tokens, need_logits=True).require_logits()[:, -1].argmax(-1, keepdim=True)
        tokens = torch.cat([tokens, nxt], dim=1)
    return adapter.decode(tokens[0, -n_tokens:].tolist())


@preserves_model
@torch.no_grad()
def lens_kl_per_layer(model, texts: list[str], *, batch_size: int = 16) -> list[float]:
    """Mean over tokens of KL(final ‖ plain logit lens at resid_post of each layer), in nats."""
    adapter = adapter_for(model)
    layers = range(adapter.n_layers)
    sums, count = torch.zeros(adapter.n_layers, dtype=torch.float64), 0
    for i in range(0, len(texts), batch_size):
        prompt = adapter.prompt(texts[i : i + batch_size])
        cap = adapter.run(prompt.tokens, capture=[(Site.RESID_POST, layer) for layer in layers], need_logits=True)
        valid = torch.arange(prompt.pos)[None] < prompt.lengths[:, None]
        final = cap.require_logits()[valid]
        for layer in layers:
            lens = adapter.lens_logits(cap[(Site.RESID_POST, layer)])[valid]
            sums[layer] += float(metrics.kl_divergence(final, lens).sum())
        count += int(valid.sum())
    return (sums / count).tolist()


def report(name: str, *, n_texts: int = 200, model=None) -> ModelReport:
    """Evaluate one embedded model (or a given `model`, reported under `name`)."""
    model = model if model is not None else load_model(name, device="cpu")
    texts = heldout_texts(n_texts)
    loss, n_tokens = heldout_loss(model, texts)
    return ModelReport(
        name=name, loss=loss, n_tokens=n_tokens, continuations={p: greedy(model, p) for p in PROMPTS},
        kl_per_layer=lens_kl_per_layer(model, texts), real_losses=real_text_losses(model),
    )


def markdown(reports: list[ModelReport]) -> str:
    """The tables that go into docs/model.md."""
    lines = ["| model | held-out loss (nats/token) | perplexity | tokens |", "| --- | --- | --- | --- |"]
    lines += [f"| `{r.name}` | {r.loss:.3f} | {r.perplexity:.2f} | {r.n_tokens} |" for r in reports]
    lines += ["", "| prompt | " + " | ".join(f"`{r.name}`" for r in reports) + " |",
              "| --- |" + " --- |" * len(reports)]
    for p in PROMPTS:
        cells = " | ".join(repr(r.continuations[p]).replace("|", "\\|") for r in reports)
        lines.append(f"| {p!r} | {cells} |")
    n = max(len(r.kl_per_layer) for r in reports)
    lines += ["", "| model | " + " | ".join(f"layer {i}" for i in range(n)) + " |", "| --- |" + " --- |" * n]
    lines += [f"| `{r.name}` | " + " | ".join(f"{v:.3f}" for v in r.kl_per_layer) + " |" for r in reports]
    names = list(dict.fromkeys(k for r in reports for k in r.real_losses))
    if names:
        lines += ["", "| model | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
        lines += [f"| `{r.name}` | " + " | ".join(f"{r.real_losses[k]:.3f}" if k in r.real_losses else "" for k in names)
                  + " |" for r in reports]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Evaluate the embedded models; print each report and the tables of docs/model.md."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=[n for n, p in EMBEDDED.items() if Path(p).exists()])
    parser.add_argument("--texts", type=int, default=200, help="number of held-out documents")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    reports = [report(name, n_texts=args.texts) for name in args.models]
    for r in reports:
        print(r)
    print()
    print(markdown(reports))


if __name__ == "__main__":
    main()
