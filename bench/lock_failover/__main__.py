"""``python -m bench.lock_failover``: see run.py."""

from __future__ import annotations

import sys

from bench.lock_failover.run import main

sys.exit(main())
