"""`python -m ops`, the same as `pdfsmaller-ops`."""

import sys

from ops.cli import main

sys.exit(main())
