"""``python -m q2rec``: the same as the ``q2rec`` command."""

import sys

from q2rec.cli import main

sys.exit(main())
