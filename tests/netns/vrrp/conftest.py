"""Fixtures for the VRRP netns tests: the shared lab topology (agent.lab.topology),
address events of its directors, and a per-test ``Site`` that starts real agents
and keepalived and leaves the lab as it found it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.lab.addrwatch import AddressWatch
from agent.lab.topology import Lab
from tests.check_skips import skip_or_fail

from .helpers import Site

TOOLS = ("ip", "tcpdump", "tshark", "keepalived")


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        skip_or_fail(f"needs {', '.join(missing)}")
    # Three directors on the front LAN (and the back LAN, for sync groups), a client,
    # one real server behind the floating gateway. No IPVS: VRRP-only agents.
    with Lab(forwarding="nat", directors=3, real_servers=1, vip_on_director=False) as built:
        yield built


@pytest.fixture(scope="module")
def watch(lab: Lab) -> Iterator[AddressWatch]:
    with AddressWatch({d.name: d.ns for d in lab.director_list()}) as w:
        yield w


@pytest.fixture
def site(lab: Lab, watch: AddressWatch, tmp_path: Path) -> Iterator[Site]:
    s = Site(lab, watch, tmp_path)
    try:
        yield s
    finally:
        s.close()
