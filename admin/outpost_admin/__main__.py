"""`python -m outpost_admin`, the same as `outpost-admin`."""

import sys

from .cli import main

sys.exit(main())
