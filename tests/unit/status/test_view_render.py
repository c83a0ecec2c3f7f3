"""The status view (desired + kernel + health + maintenance) and its text rendering."""

import json

from agent.daemon.watchdog import Gate, status_line, watchdog_period
from agent.ipvs.model import (
    AF_INET,
    AF_INET6,
    DesiredService,
    Dest,
    DestKey,
    KernelDest,
    KernelService,
    Service,
    ServiceKey,
)
from agent.status.render import render_status
from agent.status.view import services

TCP = 6
SKEY = ServiceKey(AF_INET, TCP, "192.0.2.10", 80)
SKEY6 = ServiceKey(AF_INET6, TCP, "2001:db8::10", 443)
RS1 = DestKey(AF_INET, "10.0.0.1", 80)
RS2 = DestKey(AF_INET, "10.0.0.2", 80)
RS6 = DestKey(AF_INET6, "2001:db8::1", 443)


def desired():  # type: ignore[no-untyped-def]
    return {
        SKEY: DesiredService(
            Service(SKEY, "wrr"), {RS1: Dest(RS1, weight=5), RS2: Dest(RS2, weight=3)}, "web"
        ),
        SKEY6: DesiredService(Service(SKEY6, "rr"), {RS6: Dest(RS6, fwd=3)}, "web6"),
    }


def kernel():  # type: ignore[no-untyped-def]
    return {
        SKEY: KernelService(
            Service(SKEY, "wrr"),
            {RS1: KernelDest(Dest(RS1, weight=5), 12, 34), RS2: KernelDest(Dest(RS2, weight=0))},
        )
    }


def health(vs, rs):  # type: ignore[no-untyped-def]
    if rs == ("10.0.0.2", 80):
        return {"state": "down", "weight": 0, "last_check": "FAIL connection refused"}
    if vs == "web":
        return {"state": "up", "weight": 5, "last_check": "ok HTTP 200"}
    return None


def test_services_join_every_source() -> None:
    view = services(
        desired(),
        {"web": {("10.0.0.1", 80): 5, ("10.0.0.2", 80): 3}},
        kernel(),
        health,
        frozenset({("web", ("10.0.0.2", 80))}),
    )
    assert [v["name"] for v in view] == ["web", "web6"]
    web, web6 = view
    assert web["service"] == "TCP  192.0.2.10:80" and web["in_kernel"] is True
    rs1, rs2 = web["real_servers"]  # type: ignore[misc]
    assert rs1 == {
        "address": "10.0.0.1",
        "port": 80,
        "forward": "Masq",
        "configured_weight": 5,
        "health_weight": 5,
        "kernel_weight": 5,
        "active": 12,
        "inactive": 34,
        "health": "up",
        "last_check": "ok HTTP 200",
        "maint": False,
    }
    assert (rs2["health"], rs2["kernel_weight"], rs2["maint"]) == ("down", 0, True)
    assert web6["in_kernel"] is False
    (rs6,) = web6["real_servers"]  # type: ignore[misc]
    assert (rs6["kernel_weight"], rs6["health"], rs6["forward"]) == (None, None, "Route")
    json.dumps(view)  # JSON-ready


def test_render_like_ipvsadm_with_health_beside() -> None:
    status = {
        "agent": {"pid": 42, "uptime": 7200.0, "config": "/etc/lvs-agent/config.yaml"},
        "vrrp": [
            {
                "name": "web",
                "state": "BACKUP",
                "interface": "eth0",
                "vrid": 51,
                "priority": 100,
                "effective_priority": 90,
                "lease": None,
                "master": {"address": "192.0.2.3", "priority": 150, "age": 0.4},
                "handed_over_for": 42.0,
            }
        ],
        "lock": None,
        "kernel": {"available": True, "age": 1.5},
        "health_checks": True,
        "virtual_servers": services(
            desired(), {"web": {("10.0.0.1", 80): 5}}, kernel(), health, frozenset()
        ),
    }
    text = render_status(status)
    lines = text.splitlines()
    assert lines[0] == "lvs-agent pid 42, running 2.0h, configuration /etc/lvs-agent/config.yaml"
    assert "192.0.2.3 prio 150 (0.4s ago)" in text and "not preempting for 42.0s" in text
    assert "IPVS: kernel weights and connections as read 1.5s ago" in text
    assert any(line.startswith("TCP  192.0.2.10:80 wrr") and "web" in line for line in lines)
    row = next(line for line in lines if line.startswith("  -> 10.0.0.1:80"))
    expected = "-> 10.0.0.1:80 Masq 5 12 34 5 up 5 - ok HTTP 200"
    assert row.split() == expected.split()
    row6 = next(line for line in lines if "[2001:db8::1]:443" in line)
    assert row6.split()[2:6] == ["Route", "-", "-", "-"]
    assert "(not in the kernel)" in text


def test_render_without_health_or_dump() -> None:
    text = render_status({"agent": {}, "vrrp": [], "kernel": {"available": False}})
    assert "VRRP: no instances" in text
    assert "IPVS: not in this kernel; no health checks running" in text


def test_watchdog_period_follows_sd_watchdog_enabled() -> None:
    assert watchdog_period({}, 10) is None
    assert watchdog_period({"WATCHDOG_USEC": "0"}, 10) is None
    assert watchdog_period({"WATCHDOG_USEC": "x"}, 10) is None
    assert watchdog_period({"WATCHDOG_USEC": "4000000"}, 10) == 2.0
    assert watchdog_period({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "10"}, 10) == 2.0
    assert watchdog_period({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "11"}, 10) is None


def test_gate_pings_only_on_progress() -> None:
    gate = Gate()
    assert gate.ping(5, True)
    assert not gate.ping(5, True)  # the loop-lag probe did not wake since
    assert gate.why == "the event loop made no progress"
    assert gate.ping(9, True)
    assert not gate.ping(12, False)
    assert gate.why == "the health checker made no progress"
    assert gate.ping(13, True)
    assert gate.held == 2


def test_status_line() -> None:
    assert (
        status_line([("api", "BACKUP"), ("web", "MASTER")], 3, 5, 6, 1)
        == "VRRP api BACKUP, web MASTER; 3 services; 5/6 real servers healthy; 1 in maintenance"
    )
    assert status_line([], 1, None, 1, 0) == "1 service; 1 real server"
