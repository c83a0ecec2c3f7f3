"""Every tier: commands run by the tests keep their configuration cache in a
temporary directory, never in the machine's /var/cache/lvs-agent."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_config_cache() -> Iterator[None]:
    before = os.environ.get("LVS_AGENT_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="lvs-agent-cache-") as tmp:
        os.environ["LVS_AGENT_CACHE_DIR"] = os.path.join(tmp, "cache")
        try:
            yield
        finally:
            if before is None:
                os.environ.pop("LVS_AGENT_CACHE_DIR", None)
            else:
                os.environ["LVS_AGENT_CACHE_DIR"] = before
