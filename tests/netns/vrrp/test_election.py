"""Our VrrpService against keepalived 2.2.7 on one segment: both directions of the
election, priority-0 hand-over, and crash failover. A smoke test of the whole
component; the daemon-level multi-agent tests and benchmarks live elsewhere."""

from __future__ import annotations

import os
import signal
import time
from contextlib import suppress
from pathlib import Path

import pytest

from agent.lab import netns

from .lab import Lan, keepalived_conf, start_agent, start_keepalived, stop_keepalived, wait_for_text

VIP = "198.51.100.200/24"


def agent_spec(
    vrid: int, priority: int, interval: float, version: int = 3, vip: str = VIP,
    auth_pass: str | None = None,
) -> dict[str, object]:
    return {
        "vrrp_instances": [
            {
                "name": "web", "interface": "eth0", "vrid": vrid, "version": version,
                "priority": priority, "advert_interval": interval, "virtual_ips": [vip],
                "auth_pass": auth_pass, "garp": {"repeat": 1, "delay": 0},
            }
        ]
    }


def has_vip(lan: Lan, node: str, vip: str = VIP) -> bool:
    shown = netns.ip("-o", "addr", "show", "dev", "eth0", netns=lan.ns[node])
    return vip.split("/")[0] in shown


FLAVOURS = {
    "v3-ipv4": {"version": 3, "vip": VIP, "auth_pass": None},
    "v2-pass": {"version": 2, "vip": VIP, "auth_pass": "s3cret"},
    "v3-ipv6": {"version": 3, "vip": "2001:db8::200/64", "auth_pass": None},
}


@pytest.mark.parametrize("flavour", FLAVOURS.values(), ids=FLAVOURS.keys())
def test_keepalived_defers_to_us_and_takes_over_on_priority_zero(
    lan: Lan, tmp_path: Path, flavour: dict[str, object]
) -> None:
    version, vip, auth = int(flavour["version"]), str(flavour["vip"]), flavour["auth_pass"]
    agent_log, ka_log = tmp_path / "agent.log", tmp_path / "keepalived-b.log"
    spec = agent_spec(71, 200, 1.0, version, vip, auth)  # type: ignore[arg-type]
    agent = start_agent(lan, "a", spec, agent_log)
    ka = None
    try:
        assert wait_for_text(agent_log, "BACKUP -> MASTER", 8), agent_log.read_text()
        assert has_vip(lan, "a", vip)
        conf = keepalived_conf(version=version, vrid=71, priority=100, interval=1, vips=[vip],
                               auth_pass=auth)  # type: ignore[arg-type]
        ka = start_keepalived(lan, "b", conf, tmp_path)
        assert wait_for_text(ka_log, "Entering BACKUP STATE", 5), ka_log.read_text()
        # Longer than keepalived's Master_Down_Interval (3.6 s): our adverts hold it back.
        time.sleep(5)
        text = ka_log.read_text()
        assert "Entering MASTER STATE" not in text, text
        for complaint in ("invalid", "checksum", "mismatch", "not present"):
            assert complaint not in text.lower(), text
        assert not has_vip(lan, "b", vip)
        sent = time.monotonic()
        lan.stop(agent, signal.SIGTERM)
        took = wait_for_text(ka_log, "Entering MASTER STATE", 5)
        assert took is not None, ka_log.read_text()
        # Priority 0 makes keepalived wait Skew_Time (0.6 s), not 3.6 s.
        assert took - sent < 2.0, took - sent
        assert not has_vip(lan, "a", vip)
        assert "priority_zero_sent=1" in agent_log.read_text()
    finally:
        lan.stop(agent)
        if ka is not None:
            stop_keepalived(lan, "b", ka, tmp_path)
        netns.ip("addr", "del", vip, "dev", "eth0", netns=lan.ns["b"], check=False)


def test_we_defer_to_keepalived_and_take_over_when_it_dies(lan: Lan, tmp_path: Path) -> None:
    agent_log, ka_log = tmp_path / "agent.log", tmp_path / "keepalived-b.log"
    conf = keepalived_conf(version=3, vrid=72, priority=200, interval=0.2, vips=[VIP])
    ka = start_keepalived(lan, "b", conf, tmp_path)
    agent = None
    try:
        assert wait_for_text(ka_log, "Entering MASTER STATE", 8), ka_log.read_text()
        agent = start_agent(lan, "a", agent_spec(72, 100, 0.2), agent_log)
        assert wait_for_text(agent_log, "INIT -> BACKUP", 5), agent_log.read_text()
        time.sleep(2)  # many Master_Down_Intervals (0.72 s)
        assert "-> MASTER" not in agent_log.read_text()
        assert "Entering BACKUP STATE" not in ka_log.read_text().split("Entering MASTER STATE")[-1]
        # Crash keepalived: VRRP child first (so the parent cannot respawn it), then parent.
        child = int((tmp_path / "ka-vrrp-b.pid").read_text().strip())
        died = time.monotonic()
        with suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
        lan.stop(ka, signal.SIGKILL)
        took = wait_for_text(agent_log, "BACKUP -> MASTER", 5)
        assert took is not None, agent_log.read_text()
        # Master_Down_Interval = 3 * 0.2 + (156 * 20 // 256) cs = 0.72 s, plus polling slack.
        assert 0.4 < took - died < 1.5, took - died
        assert has_vip(lan, "a")
        lan.stop(agent, signal.SIGTERM)
        text = agent_log.read_text()
        assert "invalid=Counter()" in text, text
    finally:
        if agent is not None:
            lan.stop(agent)
        stop_keepalived(lan, "b", ka, tmp_path)
        # keepalived killed with -9 leaves its VIP behind (notes/vrrp.md).
        netns.ip("addr", "del", VIP, "dev", "eth0", netns=lan.ns["b"], check=False)
