"""netns tier: root on this machine's own kernel (no IPVS needed)."""

from __future__ import annotations

import os

import pytest

from tests.check_skips import skip_or_fail


@pytest.fixture(scope="session", autouse=True)
def needs_root() -> None:
    if os.geteuid() != 0:
        skip_or_fail("the netns tier needs root")
