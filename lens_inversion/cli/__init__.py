"""The `lens-inversion` command: the HTML report and each capability from the shell.

Exit status:
    0: success.
    2: a user error (bad option, unknown model or device, unwritable path), one line on stderr.
    3: finished but not verified: an exact inversion (`invert --method exact`, or in `report`)
       that is not verified, or a self-check that fell back or failed; one reason line on stderr.
       Gradient inversions exit 0 and print their verdict line on stderr.
    130: interrupted.

Importing this module loads neither torch, transformers nor plotly (`--help` stays fast);
each command imports what it needs.
"""

import sys
from collections.abc import Sequence

from ..errors import LensInversionError
from .parser import build_parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (0 on success)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from .commands import COMMANDS
    from .corpus_commands import CORPUS_COMMANDS

    try:
        status = {**COMMANDS, **CORPUS_COMMANDS}[args.command](args)
    except LensInversionError as error:
        return _fail(str(error))
    except (FileNotFoundError, IsADirectoryError, PermissionError) as error:
        return _fail(f"{error.strerror or 'cannot open'}: {error.filename}")
    except OSError as error:
        # Hub names that cannot be fetched offline surface as OSError from transformers.
        return _fail(str(error).splitlines()[0] if str(error) else type(error).__name__)
    except KeyboardInterrupt:
        print("lens-inversion: interrupted", file=sys.stderr)
        return 130
    return status or 0


def _fail(message: str) -> int:
    print(f"lens-inversion: error: {message}", file=sys.stderr)
    return 2


__all__ = ["main"]
