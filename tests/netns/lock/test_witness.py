"""Two directors and a witness: the witness is the majority's third vote."""

from __future__ import annotations

import time
from pathlib import Path

from agent.lab.addrwatch import AddressWatch
from agent.lab.quorum import QuorumSite
from agent.lab.topology import Lab

from ..support import metric, wait_until
from .helpers import holder


def test_two_directors_and_a_witness(
    lab: Lab, watch: AddressWatch, tmp_path: Path, sites: list[QuorumSite]
) -> None:
    start = time.monotonic()
    site = QuorumSite(lab, watch, tmp_path, witness=3, priorities={1: 150, 2: 100})
    sites.append(site)
    site.start()
    first = holder(site)
    other = "d2" if first == "d1" else "d1"
    assert "d3" not in site.holders()  # the witness never holds

    wtext = site.agents["d3"].metrics()
    assert wtext is not None
    assert metric(wtext, "lvs_agent_lock_quorum_reachable", cluster="lab") == 1
    assert metric(wtext, "lvs_agent_lock_holder_info", lease="web", node=first) == 1
    assert (metric(wtext, "lvs_agent_lock_messages_received_total", type="prepare") or 0) > 0

    # The witness restarts: the holder keeps its lease (2 of 3 still answer).
    site.kill("d3")
    time.sleep(1.5)
    assert site.holders() == [first]
    site.restart("d3")

    # The holder crashes: the other director and the witness are a majority.
    wait_until("the witness out of quarantine", lambda: _quorum(site), 10)
    killed = site.kill(first)
    taken = site.vip_added(killed, 5, exclude=first)
    assert taken is not None and taken.node == other
    # ... and with the witness also gone, nobody may hold: the holder steps down.
    site.kill("d3")
    removed = watch.wait_removed("192.0.2.100", 3, node=other, after=time.monotonic() - 0.1)
    assert removed is not None, "a holder without a majority must let the VIP go"
    report = site.check(start, time.monotonic())
    print(f"witness site: takeover {(taken.at - killed) * 1000:.0f} ms; {report.summary()}")
    assert report.double == []


def _quorum(site: QuorumSite) -> bool:
    text = site.agents["d3"].metrics(timeout=1.0)
    return text is not None and metric(text, "lvs_agent_lock_quarantined", cluster="lab") == 0
