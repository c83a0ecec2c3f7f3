"""``python -m agent`` is ``lvs-agent``."""

from agent.cli import run

run()
