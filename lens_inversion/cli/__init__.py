"""The `lens-inversion` command: the HTML report and each capability from the shell.

User errors print one line and exit with status 2; an interrupt exits with 130.
"""

import sys
from collections.abc import Sequence

from ..errors import LensInversionError
from .commands import COMMANDS
from .parser import build_parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (0 on success)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        status = COMMANDS[args.command](args)
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
