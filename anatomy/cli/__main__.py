"""``python -m anatomy.cli``: the ``anatomy`` command."""

import sys

from . import main

sys.exit(main())
