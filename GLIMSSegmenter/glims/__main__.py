"""``python -m glims``: the command line (this is what the Slicer module launches in a background process)."""

import sys

from .cli import main

sys.exit(main())
