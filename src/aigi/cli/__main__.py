"""``python -m aigi.cli``: the ``aigi`` command."""

import sys

from .main import main

sys.exit(main())
