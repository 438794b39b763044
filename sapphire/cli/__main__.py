"""``python -m sapphire.cli``: the same as the ``sapphire`` command."""

import sys

from sapphire.cli import main

sys.exit(main())
