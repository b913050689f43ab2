"""`python -m rig` is the `rig` command (for a venv whose scripts directory is not on PATH)."""

import sys

from rig.cli import main

sys.exit(main())
