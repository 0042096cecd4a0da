"""The public inversion door: `invert(model, prompt_or_activation, target=..., method=...)`."""

from typing import Literal

from ..errors import OptionError, check_choice
from ..hooks import preserves_model
from .result import InversionResult

METHODS = ("embedding", "direct", "exact")
Method = Literal["embedding", "direct", "exact"]


@preserves_model
def invert(model, prompt_or_activation, /, *, target, method: Method = "embedding", **options) -> InversionResult:
    """Recover the input tokens behind a target activation.

    Args:
        model: a TransformerLens model (TransformerBridge or HookedTransformer).
        prompt_or_activation: a prompt (string, list of strings, token tensor) whose
            activation is inverted, or the activation itself ([batch, tokens, features] per
            target, a list for several targets).
        target: a `Target`, its string form, or a list of them (several layers at once).
        method: `"embedding"` (gradient descent on the input embedding, pseudoinverse
            decoding), `"direct"` (gradient descent on a token-space vector x, x @ W_E enters
            the model) or `"exact"` (verified sequential search).
        **options: the method's options; see `invert_gradient` and `invert_exact`.
            Common: `allowed_tokens`, `n_pos`, `top_k`, `seed`, `progress`.

    Returns:
        An `InversionResult` (tokens, texts, top-k texts, token accuracy, distances...).

    Raises:
        OptionError: unknown method or option.

    Examples:
        >>> res = li.invert(model, "The sky is blue.", target="blocks.0.hook_resid_post")  # doctest: +SKIP
        >>> res.text, res.token_accuracy  # doctest: +SKIP
    """
    check_choice("method", method, METHODS)
    if method == "exact":
        from .exact import EXACT_OPTIONS, invert_exact

        _check_options(method, options, EXACT_OPTIONS)
        return invert_exact(model, prompt_or_activation, target=target, **options)
    from .gradient import GRADIENT_OPTIONS, invert_gradient

    _check_options(method, options, GRADIENT_OPTIONS)
    return invert_gradient(model, prompt_or_activation, target=target, method=method, **options)


def _check_options(method: str, options: dict, valid: tuple) -> None:
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise OptionError(
            f"Unknown option(s) {', '.join(unknown)} for method={method!r}; "
            f"valid: {', '.join(sorted(valid))}."
        )
