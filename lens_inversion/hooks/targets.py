"""Target: a hook site plus a batch, token and feature slice, with an exact string form."""

import contextlib
import operator
import re
from dataclasses import dataclass, field
from typing import SupportsIndex

import torch
from jaxtyping import Shaped
from torch import Tensor

from .._typing import Activation
from ..errors import TargetError
from ..validation import read_prompt, validates_own_arguments
from .sites import Site

Index = int | slice

_FULL = slice(None)
_BLOCK_FORM = re.compile(r"^blocks\.(-?\d+)\.(?:hook_)?([a-z_]+)$")
_SHORT_FORM = re.compile(r"^(?:hook_)?([a-z_]+)\.(-?\d+)$")
_GLOBAL_FORM = re.compile(r"^(?:hook_)?(embed|logits)$")
_SITE_FORM = re.compile(r"^(?:hook_)?([a-z_]+)$")  # a per-block site without a layer (layer sweeps only)
_INT = r"-?\d+"
_SLICE = re.compile(rf"^({_INT})?:({_INT})?(?::({_INT})?)?$")


def _parse_index(text: str, source: str) -> Index:
    text = text.strip()
    if re.fullmatch(_INT, text):
        return int(text)
    match = _SLICE.match(text.replace(" ", ""))
    if not match:
        raise TargetError(
            f"Cannot read {text!r} in {source!r} as an index; use an integer or a slice like '1:', ':2201', '2:8:2'."
        )
    start, stop, step = (int(g) if g is not None else None for g in match.groups())
    if step == 0:
        raise TargetError(f"Slice step cannot be zero in {source!r}.")
    return slice(start, stop, step)


def _format_index(index: Index) -> str:
    if isinstance(index, int):
        return str(index)
    text = f"{'' if index.start is None else index.start}:{'' if index.stop is None else index.stop}"
    return text + (f":{index.step}" if index.step is not None else "")


def _check_index(index: object, what: str) -> Index:
    if isinstance(index, bool) or not isinstance(index, (int, slice)):
        raise TargetError(f"{what} must be an int or a slice; got {index!r}.")
    if isinstance(index, slice):
        for part in (index.start, index.stop, index.step):
            if part is not None and (isinstance(part, bool) or not isinstance(part, int)):
                raise TargetError(f"{what} slice parts must be integers or None; got {index!r}.")
        if index.step == 0:
            raise TargetError(f"{what} slice step cannot be zero.")
    return index


def index_positions(index: "Index | SupportsIndex", size: int, what: str) -> list[int]:  # NumPy integers too
    """The concrete indices an int or slice selects from `size` items (NumPy semantics)."""
    if not isinstance(index, (int, slice)) and hasattr(type(index), "__index__"):
        with contextlib.suppress(TypeError):  # NumPy and 0-d tensor integers
            index = operator.index(index)
    _check_index(index, what)
    assert isinstance(index, (int, slice))  # narrowing: _check_index refused anything else
    if isinstance(index, int):
        if not -size <= index < size:
            raise TargetError(f"{what} index {index} is out of range for size {size} (valid: {-size}..{size - 1}).")
        return [index % size]
    chosen = list(range(size))[index]
    if not chosen:
        raise TargetError(
            f"{what} slice {_format_index(index)!r} selects nothing from size {size} (valid indices: 0..{size - 1})."
        )
    return chosen


@validates_own_arguments  # Target(site="resid_post", ...) takes a site name too; __post_init__ checks every field
@dataclass(frozen=True, kw_only=True)
class Target:
    """An activation to read or match: `blocks.3.hook_resid_post[:, 1:, :2201]`.

    Integer indices keep their axis, so `select` always returns [batch, tokens, features].
    Layers may be negative; they are checked against a model by `resolve`.

    Examples:
        >>> t = Target.parse("blocks.3.hook_resid_post[:, 1:, :2201]")
        >>> t.layer, t.tokens, t.features
        (3, slice(1, None, None), slice(None, 2201, None))
        >>> str(t)
        'blocks.3.hook_resid_post[:, 1:, :2201]'
    """

    site: Site = Site.RESID_POST  # a string (Target(site="resid_post")) is parsed into a Site in __post_init__
    layer: int | None = None
    tokens: Index = field(default_factory=lambda: _FULL)
    features: Index = field(default_factory=lambda: _FULL)
    batch: Index = field(default_factory=lambda: _FULL)

    def __post_init__(self) -> None:
        site = Site.parse(self.site)
        object.__setattr__(self, "site", site)
        if site.per_block:
            if isinstance(self.layer, bool) or not isinstance(self.layer, int):
                raise TargetError(f"Site {site.value!r} needs an integer layer; got {self.layer!r}.")
        elif self.layer is not None:
            raise TargetError(f"Site {site.value!r} has no layer; got layer={self.layer!r}.")
        for name in ("tokens", "features", "batch"):
            _check_index(getattr(self, name), name)

    def __hash__(self) -> int:
        return hash(str(self))

    @classmethod
    def layerless(cls, site: "Site | str", *, tokens: Index = _FULL, features: Index = _FULL,
                  batch: Index = _FULL) -> "Target":
        """A per-block site with no layer (`resid_post[:, 1:, :64]`): only layer sweeps take one.

        Every other use (`resolve`, `extract`, inversion, lenses) raises TargetError asking for a layer.
        """
        site = Site.parse(site)
        if not site.per_block:
            return cls(site=site, tokens=tokens, features=features, batch=batch)
        target = cls(site=site, layer=0, tokens=tokens, features=features, batch=batch)
        object.__setattr__(target, "layer", None)
        return target

    @property
    def needs_layer(self) -> bool:
        """True for a layerless target of a per-block site (see `layerless`)."""
        return self.site.per_block and self.layer is None

    # ----- string form ---------------------------------------------------------------
    @classmethod
    def parse(cls, text: "str | Target", *, layer_optional: bool = False) -> "Target":
        """Read `blocks.L.hook_SITE[b, t, f]`, `SITE.L[...]`, `hook_embed[...]` or `logits[...]`.

        With `layer_optional=True` (layer sweeps) a per-block site without a layer,
        `SITE[...]`, reads as a `layerless` target; elsewhere it is a TargetError asking for a layer.
        """
        if isinstance(text, Target):
            if text.needs_layer and not layer_optional:
                raise TargetError(f"Target {text} needs a layer here, e.g. 'blocks.0.hook_{text.site.value}'.")
            return text
        if not isinstance(text, str):
            raise TargetError(f"A target is a Target or a string like 'blocks.3.hook_resid_post[:, 1:, :]'; got {type(text).__name__}.")
        source = text
        text = text.strip()
        indices: list[Index] = []
        if "[" in text:
            if not text.endswith("]") or text.count("[") != 1:
                raise TargetError(f"Malformed target {source!r}: expected NAME[batch, tokens, features].")
            text, inner = text[:-1].split("[")
            parts = inner.split(",")
            if len(parts) > 3 or any(not p.strip() for p in parts):
                raise TargetError(f"Malformed slice in {source!r}: give 1 to 3 comma-separated indices [batch, tokens, features].")
            indices = [_parse_index(p, source) for p in parts]
        name = text.strip()
        layer: int | None = None
        if m := _BLOCK_FORM.match(name):
            layer, site = int(m.group(1)), m.group(2)
        elif m := _SHORT_FORM.match(name):
            site, layer = m.group(1), int(m.group(2))
        elif m := _GLOBAL_FORM.match(name):
            site = m.group(1)
        elif (m := _SITE_FORM.match(name)) and m.group(1) in _PER_BLOCK:
            if not layer_optional:
                raise TargetError(
                    f"Target {source!r} needs a layer: write 'blocks.L.hook_{m.group(1)}' or '{m.group(1)}.L' "
                    "(only layer sweeps take a site without a layer)."
                )
            indices += [_FULL] * (3 - len(indices))
            return cls.layerless(m.group(1), batch=indices[0], tokens=indices[1], features=indices[2])
        else:
            valid = ", ".join(s.value for s in Site)
            raise TargetError(
                f"Cannot read target name {name!r}; use 'blocks.L.hook_SITE', 'SITE.L', 'hook_embed' or 'logits' (sites: {valid})."
            )
        indices += [_FULL] * (3 - len(indices))
        batch, tokens, features = indices
        return cls(site=Site.parse(site), layer=layer, batch=batch, tokens=tokens, features=features)

    def __str__(self) -> str:
        if self.site is Site.EMBED:
            name = "hook_embed"
        elif self.site is Site.LOGITS:
            name = "logits"
        elif self.layer is None:
            name = self.site.value  # layerless (layer sweeps only)
        else:
            name = f"blocks.{self.layer}.hook_{self.site.value}"
        if all(i == _FULL for i in (self.batch, self.tokens, self.features)):
            return name
        return f"{name}[{', '.join(_format_index(i) for i in (self.batch, self.tokens, self.features))}]"

    def __repr__(self) -> str:
        return f"Target({str(self)!r})"

    # ----- use with a model ----------------------------------------------------------
    def resolve(self, model) -> "Target":
        """Check the layer and feature range against a model; return with layer >= 0."""
        from .adapter import adapter_for

        adapter = adapter_for(model)
        layer = self.layer
        if self.needs_layer:
            raise TargetError(f"Target {self} needs a layer here, e.g. 'blocks.0.hook_{self.site.value}'.")
        if self.site.per_block:
            try:
                layer = adapter.check_layer(self.layer)
            except TargetError as error:
                raise TargetError(f"In target {self}: {error}") from None
        width = adapter.d_vocab_out if self.site is Site.LOGITS else adapter.d_model
        index_positions(self.features, width, f"In target {self}: feature")
        return Target(site=self.site, layer=layer, tokens=self.tokens, features=self.features, batch=self.batch)

    @property
    def key(self) -> tuple[Site, int | None]:
        """The (site, layer) pair to capture; call on a resolved target."""
        return (self.site, self.layer)

    def select(self, activation: Shaped[Tensor, "batch pos feature"]) -> Shaped[Tensor, "sel_batch sel_pos sel_feature"]:
        """Apply the batch, token and feature slices to a [batch, pos, feature] tensor of any dtype."""
        if activation.ndim != 3:
            raise TargetError(f"Target {self} selects from [batch, pos, feature] tensors; got shape {tuple(activation.shape)}.")
        out = activation
        for axis, (index, what) in enumerate(((self.batch, "batch"), (self.tokens, "token"), (self.features, "feature"))):
            if index == _FULL:
                continue
            if isinstance(index, int):
                position = index_positions(index, out.shape[axis], f"In target {self}: {what}")[0]
                out = out.narrow(axis, position, 1)
            else:
                chosen = index_positions(index, out.shape[axis], f"In target {self}: {what}")
                step = index.step or 1
                if step == 1:
                    out = out.narrow(axis, chosen[0], len(chosen))
                else:
                    out = out.index_select(axis, torch.tensor(chosen, device=out.device))
        return out

    def token_positions(self, n_pos: int) -> list[int]:
        """Sequence positions the target observes in a prompt of `n_pos` tokens."""
        return index_positions(self.tokens, n_pos, f"In target {self}: token")

    def feature_indices(self, width: int) -> list[int]:
        """Feature indices the target observes in an activation of `width` features."""
        return index_positions(self.features, width, f"In target {self}: feature")

    def extract(self, model, prompt, *, prepend_bos: bool = True) -> Activation:
        """Run the model on `prompt` (stopping at this target's layer) and return the slice."""
        from .adapter import adapter_for
        from .preserve import preserved

        adapter = adapter_for(model)
        target = self.resolve(adapter)
        batch = read_prompt(adapter, prompt, prepend_bos=prepend_bos)
        with preserved(adapter.model), torch.no_grad():
            capture = adapter.run(batch.tokens, capture=[target.key])
        return target.select(capture[target.key]).detach()


_PER_BLOCK = frozenset(s.value for s in Site if s.per_block)


def looks_like_target(text: str) -> bool:
    """Whether a string names an activation ("blocks.1.hook_resid_post[...]") rather than a token."""
    text = text.strip()
    return "[" in text or text.startswith(("blocks.", "hook_")) or text == "logits"


def as_target(value: "str | Target") -> Target:
    """Accept a Target or its string form."""
    return Target.parse(value)
