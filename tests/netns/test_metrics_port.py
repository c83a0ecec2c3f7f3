"""A metrics port taken by another process at start costs neither VRRP nor /metrics.

Two real agents (VRRP-only) on the lab's front LAN; before they start, the test binds
and listens on director 1's metrics port inside its namespace. The agent must still
run and win the election, count the failed attempts, and serve /metrics once the
port is free again (it retries every few seconds).
"""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.lab import netns
from agent.lab.addrwatch import AddressWatch
from agent.lab.agents import METRICS_PORT
from agent.lab.topology import Lab
from tests.check_skips import skip_or_fail

from .support import metric, wait_until
from .vrrp.helpers import Site, address, instance


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    if shutil.which("ip") is None:
        skip_or_fail("needs ip")
    with Lab(forwarding="nat", directors=2, real_servers=1, vip_on_director=False) as built:
        yield built


@pytest.fixture
def site(lab: Lab, tmp_path: Path) -> Iterator[Site]:
    with AddressWatch({d.name: d.ns for d in lab.director_list()}) as watch:
        s = Site(lab, watch, tmp_path)
        try:
            yield s
        finally:
            s.close()


def test_vrrp_elects_while_the_metrics_port_is_taken_and_metrics_come_up_when_freed(
    site: Site,
) -> None:
    vip = "192.0.2.131/32"
    d1 = site.lab.director(1)
    with netns.entered(d1.ns):
        squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        squatter.bind(("127.0.0.1", METRICS_PORT))
        squatter.listen()
        t0 = time.monotonic()
        first = site.agent(1, [instance(31, vip, 200)])
        site.agent(2, [instance(31, vip, 100)])
        added = site.watch.wait_added(address(vip), 15, node="d1", after=t0)
        assert added is not None, first.text()
        assert first.running(), first.text()
        assert "metrics: cannot listen on 127.0.0.1:" in first.text()
        time.sleep(1.0)
        assert site.holders(vip) == ["d1"]
    finally:
        squatter.close()
    # Retried every 5 s: up within two attempts.
    wait_until("director 1's /metrics", lambda: first.metrics(timeout=0.5) is not None, 15)
    text = first.metrics()
    assert text is not None
    assert metric(text, "lvs_agent_vrrp_state", instance="web") == 2
    assert (metric(text, "lvs_agent_errors_total", kind="metrics_listen") or 0) >= 1
    assert metric(text, "lvs_agent_vrrp_transitions_total", instance="web", state="master") == 1
    assert "metrics: listening on 127.0.0.1:" in first.text()
