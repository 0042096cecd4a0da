"""The public inversion door: `invert(model, prompt_or_activation, target=..., method=...)`.

`invert` lists every option of every method in its signature (`help(li.invert)`, IDEs);
`typing.overload`s say which options go with which method. An option of the other
method family, when given, is an `OptionError` naming the valid ones.
"""

import functools
import inspect
from collections.abc import Sequence
from typing import Any, Literal, overload

from ..deprecation import Rename, invert_bool, renamed_options
from ..errors import OptionError, check_choice
from ..hooks import Target, preserves_model
from .exact import EXACT_OPTIONS, ExactOptions, Order, invert_exact
from .gradient import GRADIENT_OPTIONS, GradientOptions, Optimizer, Start, invert_gradient
from .result import InversionResult

METHODS = ("embedding", "direct", "exact")
Method = Literal["embedding", "direct", "exact"]
Targets = str | Target | Sequence[str | Target]  # one target or several layers at once


class MethodDefault:
    """The default of a method-specific option of `invert`: shown as its value, never passed on.

    Lets `invert` tell an option the caller gave (checked against the method) from one left at
    its default (the method's own default applies).
    """

    def __init__(self, value: object) -> None:
        """Stand in for the method's own default `value` in the shared signature."""
        self.value = value

    def __repr__(self) -> str:
        return repr(self.value)


def _default(options: type[GradientOptions] | type[ExactOptions], name: str) -> Any:
    # Typed Any: the sentinel stands in for the option's own default, so each parameter of
    # `invert` keeps its option's type (the overloads are what callers are checked against).
    return MethodDefault(options.__dataclass_fields__[name].default)


_G = functools.partial(_default, GradientOptions)
_E = functools.partial(_default, ExactOptions)
SHARED_OPTIONS = ("allowed_tokens", "n_pos", "seed", "progress")


def _unknown_options_are_option_errors(function):
    """Turn a keyword `invert` does not have into an OptionError naming the valid ones (not a TypeError)."""
    known = set(inspect.signature(function).parameters)

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        unknown = sorted(set(kwargs) - known)
        if unknown:
            method = kwargs.get("method", "embedding")
            _refuse(method, unknown, EXACT_OPTIONS if method == "exact" else GRADIENT_OPTIONS)
        return function(*args, **kwargs)

    return wrapper


def _refuse(method: object, unknown: list[str], valid: tuple) -> None:
    raise OptionError(
        f"Unknown option(s) {', '.join(unknown)} for method={method!r}; valid: {', '.join(sorted(valid))}."
    )


@overload
def invert(
    model, prompt_or_activation, /, *, target: Targets, method: Literal["exact"],
    allowed_tokens=None, n_pos: int | None = None, seed: int | None = 0, progress: bool = True,
    beam: int = 16, hidden_top: int = 16, order: Order = "gradient", batch_size: int = 256, tolerance: float = 1e-4,
    exhaustive: bool | None = None, reuse: Literal["auto", "cache", "recompute"] = "auto", strict: bool = False,
) -> InversionResult: ...


@overload
def invert(
    model, prompt_or_activation, /, *, target: Targets, method: Literal["embedding", "direct"] = "embedding",
    allowed_tokens=None, n_pos: int | None = None, seed: int | None = 0, progress: bool = True,
    loss: object = "l1", alpha: float = 1.0, beta: float = 1.0, steps: int = 200, lr: float | None = None,
    lr_end_factor: float = 0.1, optimizer: Optimizer = "sgd", momentum: float = 0.0, start: Start = "noise",
    noise_weight: float = 1.0, target_weight: float = 1.0, noise_mean: float = 0.5, noise_std: float = 0.05,
    decoding: Literal["pinv", "cosine", "l2", "argmax"] | None = None, top_k: int = 5, n_restarts: int = 1,
    shift_std: float = 0.05, stop_when_closer: bool = False, sequential: bool = False, embedding_from=None,
    include_bos: bool = False, strict: bool = False,
) -> InversionResult: ...


@renamed_options(fix_bos=Rename("include_bos", invert_bool, "include_bos=False holds the BOS fixed"))
@_unknown_options_are_option_errors
@preserves_model
def invert(
    model, prompt_or_activation, /, *, target: Targets, method: Method = "embedding",
    allowed_tokens=None, n_pos: int | None = None, seed: int | None = 0, progress: bool = True,
    # gradient methods ("embedding", "direct"): see GradientOptions
    loss: object = _G("loss"), alpha: float = _G("alpha"), beta: float = _G("beta"), steps: int = _G("steps"),
    lr: float | None = _G("lr"), lr_end_factor: float = _G("lr_end_factor"), optimizer: Optimizer = _G("optimizer"),
    momentum: float = _G("momentum"), start: Start = _G("start"), noise_weight: float = _G("noise_weight"),
    target_weight: float = _G("target_weight"), noise_mean: float = _G("noise_mean"), noise_std: float = _G("noise_std"),
    decoding: Literal["pinv", "cosine", "l2", "argmax"] | None = _G("decoding"), top_k: int = _G("top_k"),
    n_restarts: int = _G("n_restarts"), shift_std: float = _G("shift_std"),
    stop_when_closer: bool = _G("stop_when_closer"), sequential: bool = _G("sequential"),
    embedding_from=_G("embedding_from"), include_bos: bool = _G("include_bos"),
    # exact: see ExactOptions
    beam: int = _E("beam"), hidden_top: int = _E("hidden_top"), order: Order = _E("order"),
    batch_size: int = _E("batch_size"), tolerance: float = _E("tolerance"), exhaustive: bool | None = _E("exhaustive"),
    reuse: Literal["auto", "cache", "recompute"] = _E("reuse"),
) -> InversionResult:
    """Recover the input tokens behind a target activation.

    `model` is a TransformerLens model (TransformerBridge or HookedTransformer);
    `prompt_or_activation` a prompt (string, list of strings, token tensor) whose activation
    is inverted, or the activation itself ([batch, tokens, features] per target, a list for
    several targets); `target` a `Target`, its string form, or a list of them (several
    layers at once). `method` is `"embedding"` (gradient descent on the input embedding,
    pseudoinverse decoding), `"direct"` (gradient descent on a token-space vector x,
    x @ W_E enters the model) or `"exact"` (verified sequential search). `allowed_tokens`,
    `n_pos`, `seed` and `progress` serve every method; the other options belong to one
    method family (listed below) and giving one to the other family is an OptionError.

    Returns an `InversionResult` (tokens, texts, token accuracy, distances, verdict, and the
    method's `trace`); every tensor is on the CPU. Raises OptionError for an unknown method
    or option.

    Examples:
        >>> res = li.invert(model, "The sky is blue.", target="blocks.0.hook_resid_post", method="exact",
        ...                 progress=False)
        >>> res.text, res.token_accuracy
        ('The sky is blue.', 1.0)
    """
    check_choice("method", method, METHODS)
    given = {name: value for name, value in locals().items() if name in (*GRADIENT_OPTIONS, *EXACT_OPTIONS)}
    given = {name: value for name, value in given.items() if not isinstance(value, MethodDefault)}
    valid = EXACT_OPTIONS if method == "exact" else GRADIENT_OPTIONS
    wrong = sorted(set(given) - set(valid))
    if wrong:
        _refuse(method, wrong, valid)
    if method == "exact":
        return invert_exact(model, prompt_or_activation, target=target, **given)
    return invert_gradient(model, prompt_or_activation, target=target, method=method, **given)


invert.__doc__ = (
    (inspect.getdoc(invert) or "")
    + "\n\nGradient options (methods \"embedding\", \"direct\"):" + (inspect.getdoc(GradientOptions) or "").split("Attributes:", 1)[1]
    + "\n\nExact options (method \"exact\"):" + (inspect.getdoc(ExactOptions) or "").split("Attributes:", 1)[1]
)
