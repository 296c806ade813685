"""``python -m headstart`` is the same as the ``headstart`` command."""

import sys

from headstart.cli.main import main

sys.exit(main())
