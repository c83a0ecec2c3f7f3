"""netns tier: root on this machine's own kernel (no IPVS needed)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("the netns tier needs root")
