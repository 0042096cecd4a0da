"""Where a warning of ours points: the user's line, the first frame outside the package."""

import os
import sys
from types import FrameType

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep
# Run-time type checkers (the test suite's jaxtyping + beartype) wrap our functions in frames of
# their own; they are not the user's call either.
_WRAPPERS = ("jaxtyping", "beartype")


def _wrapper(frame: FrameType) -> bool:
    return str(frame.f_globals.get("__name__", "")).startswith(_WRAPPERS)


def _ours(frame: FrameType) -> bool:
    return os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE) or _wrapper(frame)


def user_stacklevel() -> int:
    """The `stacklevel` for a `warnings.warn` made by our caller that attributes it to the user's line."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and _wrapper(frame):  # a type checker wrapping this very function: warnings.warn
        frame = frame.f_back  # counts from our caller, so the checker's frames below it must not count
    level = 1  # level 1: the function that calls warnings.warn
    while frame is not None and _ours(frame):
        frame, level = frame.f_back, level + 1
    return level
