"""``python -m studyhall`` is the ``studyhall`` command."""

import sys

from studyhall.cli import main

sys.exit(main())
