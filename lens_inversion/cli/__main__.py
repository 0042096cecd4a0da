"""`python -m lens_inversion.cli` is the `lens-inversion` command."""

import sys

from . import main

sys.exit(main())
