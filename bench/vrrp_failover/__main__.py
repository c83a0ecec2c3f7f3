"""``python -m bench.vrrp_failover``: see run.py."""

from __future__ import annotations

import sys

from bench.vrrp_failover.run import main

sys.exit(main())
