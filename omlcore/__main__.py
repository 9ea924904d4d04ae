"""``python -m omlcore``: the same as the ``omlcore`` command."""

import sys

from omlcore.cli import main

sys.exit(main())
