"""``python -m clustvit`` = the ``clustvit`` command."""

import sys

from clustvit.cli import main

sys.exit(main())
