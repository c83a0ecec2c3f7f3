"""Fixtures for the quorum-lock netns tests: three directors on one front LAN (no IPVS),
address events of each, and a per-test ``QuorumSite`` (agent.lab.quorum) that runs real
``lvs-agent run`` / ``lvs-agent witness`` processes and leaves the lab as it found it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.lab.addrwatch import AddressWatch
from agent.lab.quorum import QuorumSite
from agent.lab.topology import Lab
from tests.check_skips import skip_or_fail

TOOLS = ("ip", "nft")


@pytest.fixture(scope="package")
def lab() -> Iterator[Lab]:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        skip_or_fail(f"needs {', '.join(missing)}")
    with Lab(forwarding="nat", directors=3, real_servers=1, vip_on_director=False) as built:
        yield built


@pytest.fixture(scope="package")
def watch(lab: Lab) -> Iterator[AddressWatch]:
    with AddressWatch({d.name: d.ns for d in lab.director_list()}) as w:
        yield w


def make_site(lab: Lab, watch: AddressWatch, work: Path, **kw: object) -> QuorumSite:
    return QuorumSite(lab, watch, work, **kw)  # type: ignore[arg-type]


@pytest.fixture
def sites(lab: Lab, watch: AddressWatch, tmp_path: Path) -> Iterator[list[QuorumSite]]:
    """Append the sites a test makes; they are closed whatever the test did."""
    made: list[QuorumSite] = []
    try:
        yield made
    finally:
        for s in made:
            s.close()
