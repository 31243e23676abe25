"""``python -m modelops.cli``: the same as the ``kubectl-modelops`` console script."""

import sys

from modelops.cli import main

sys.exit(main())
