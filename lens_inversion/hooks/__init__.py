"""The only subpackage that touches TransformerLens: adapter, sites, targets, hooks."""

from .adapter import Capture as Capture
from .adapter import ModelAdapter as ModelAdapter
from .adapter import Prompt as Prompt
from .adapter import adapter_for as adapter_for
from .execution import PrefixState as PrefixState
from .execution import run_after as run_after
from .interventions import attached as attached
from .preserve import preserved as preserved
from .preserve import preserves_model as preserves_model
from .sites import Site as Site
from .targets import Target as Target
from .targets import as_target as as_target
