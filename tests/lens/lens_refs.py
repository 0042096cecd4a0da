"""An independent per-row logit lens: run_with_cache, one row at a time, torch.nn.functional
KL and argsort ranks (none of the code under test except the model itself)."""

import torch
import torch.nn.functional as F


def resid_rows(model, tokens, rows="blocks"):
    """[(label, resid [batch, pos, d_model])] for every lens row except the output."""
    n = model.cfg.n_layers
    names = ["blocks.0.hook_resid_pre"]
    for layer in range(n):
        if rows == "sublayers":
            names.append(f"blocks.{layer}.hook_resid_mid")
        if layer < n - 1:
            names.append(f"blocks.{layer}.hook_resid_post")
    logits, cache = model.run_with_cache(tokens, names_filter=lambda name: name in names)
    return [cache[name] for name in names], logits


def reference_lens(model, tokens, *, compare="final", rows="blocks", hooks=()):
    """Per-row metrics [row, batch, pos] computed naively, one row at a time."""
    with torch.no_grad(), model.hooks(fwd_hooks=list(hooks)):
        resids, logits = resid_rows(model, tokens, rows)
        row_logits = [model.unembed(model.ln_final(r)).float() for r in resids] + [logits.float()]
    lps = [F.log_softmax(x, dim=-1) for x in row_logits]
    ref = lps[0] if compare == "input" else lps[-1]
    target = tokens if compare == "input" else logits.argmax(-1)
    out = {"kl": [], "rank": [], "prob": [], "entropy": [], "cross_entropy": [], "top1": []}
    for lp in lps:
        # F.kl_div(input=log q, target=log p, log_target=True) = sum p (log p - log q)
        out["kl"].append(F.kl_div(lp, ref, reduction="none", log_target=True).sum(-1))
        order = lp.argsort(dim=-1, descending=True)
        out["rank"].append((order == target[..., None]).float().argmax(-1) + 1)
        out["prob"].append(lp.exp().gather(-1, target[..., None])[..., 0])
        out["entropy"].append(torch.distributions.Categorical(logits=lp).entropy())
        ce = torch.full(tokens.shape, float("nan"))
        ce[:, :-1] = F.cross_entropy(lp[:, :-1].flatten(0, 1), tokens[:, 1:].flatten(), reduction="none").view(
            tokens.shape[0], -1
        )
        out["cross_entropy"].append(ce)
        out["top1"].append(order[..., 0])
    return {k: torch.stack(v) for k, v in out.items()}, logits
