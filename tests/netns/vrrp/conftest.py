"""Fixtures for the VRRP netns tests (root, host kernel, tcpdump/tshark/keepalived)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .lab import Lan, have_root_tools


@pytest.fixture(scope="module")
def lan() -> Iterator[Lan]:
    why = have_root_tools("tcpdump", "tshark", "keepalived")
    if why:
        pytest.skip(why)
    segment = Lan(["a", "b", "c"])
    try:
        yield segment
    finally:
        segment.close()
