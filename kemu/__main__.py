"""``python -m kemu``: the same as the ``kemu`` command."""

import sys

from kemu.frontend.cli import main

sys.exit(main())
