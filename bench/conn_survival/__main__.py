"""``python -m bench.conn_survival``: see run.py."""

from __future__ import annotations

import sys

from bench.conn_survival.run import main

sys.exit(main())
