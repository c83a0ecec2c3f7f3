"""Two directors with real IPVS and VRRP (the `lvs-agent lab` failover, as a test).

Both agents program the same IPVS service; VRRP gives the VIP and the real
servers' gateway (one sync group) to one of them; the client's stream of requests
keeps being answered when that agent is killed with SIGKILL, through the other.
"""

from __future__ import annotations

import pytest

from agent.lab.demo import run_failover_lab


@pytest.mark.parametrize("forwarding", ["nat", "dr"])
def test_the_client_keeps_getting_answers_through_a_failover(
    forwarding: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run_failover_lab(forwarding, directors=2, requests=30)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "failover done" in out
