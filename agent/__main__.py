"""``python -m agent`` is ``lvs-agent``."""

import sys

from agent.cli import main

sys.exit(main())
