"""Builders shared by the VRRP unit tests: machines in a given state, adverts."""

from __future__ import annotations

import socket
from ipaddress import IPv4Address, IPv6Address

from agent.vrrp.config import GarpConfig, VrrpInstanceConfig
from agent.vrrp.machine import (
    Action,
    Advert,
    AdvertReceived,
    GroupCommand,
    InstanceParams,
    Startup,
    State,
    TimerFired,
    TrackingChanged,
    VrrpMachine,
)
from agent.vrrp.packet import IPAddress

PRIMARY = IPv4Address("192.0.2.10")
LOWER_PEER = IPv4Address("192.0.2.5")
HIGHER_PEER = IPv4Address("192.0.2.20")
VIP = "192.0.2.100/24"
VIP6 = "2001:db8::100/64"


def params(
    *,
    priority: int = 100,
    version: int = 3,
    interval: float = 1.0,
    preempt: bool = True,
    preempt_delay: float = 0.0,
    peers: tuple[str, ...] = (),
    garp: GarpConfig | None = None,
    vips: tuple[str, ...] = (VIP,),
    primary: IPAddress = PRIMARY,
    auth_pass: str | None = None,
    name: str = "web",
    vrid: int = 51,
) -> InstanceParams:
    cfg = VrrpInstanceConfig(
        name=name,
        interface="eth1",
        vrid=vrid,
        version=version,
        priority=priority,
        advert_interval=interval,
        preempt=preempt,
        preempt_delay=preempt_delay,
        unicast_peers=peers,
        auth_pass=auth_pass,
        virtual_ips=vips,
        garp=garp or GarpConfig(),
    )
    return InstanceParams.from_config(cfg, primary)


def advert_for(p: InstanceParams, priority: int, interval_cs: int | None = None) -> Advert:
    return Advert(
        p.version,
        p.family,
        p.vrid,
        priority,
        p.advert_interval_cs if interval_cs is None else interval_cs,
        p.advertised,
        p.auth,
    )


def from_peer(
    m: VrrpMachine, priority: int, source: IPAddress = LOWER_PEER, interval_cs: int | None = None
) -> AdvertReceived:
    return AdvertReceived(advert_for(m.params, priority, interval_cs), source)


def drive_to(m: VrrpMachine, state: State, now: float = 0.0) -> float:
    """Put a fresh machine in ``state``; returns the time it got there."""
    if state is State.INIT:
        return now
    if state is State.FAULT:
        m.handle(TrackingChanged(m.priority, True), now)
        m.handle(Startup(), now)
        return now
    m.handle(Startup(), now)
    if state is State.BACKUP or m.state is state:
        return now
    now += m.master_down_interval
    m.handle(TimerFired(), now)
    if m.wants_master:  # a sync group member waits to be told
        m.handle(GroupCommand(State.MASTER), now)
    assert m.state is State.MASTER
    return now


def kinds(actions: list[Action]) -> list[str]:
    return [type(a).__name__ for a in actions]


V6_PRIMARY = IPv6Address("fe80::10")
AF = {4: socket.AF_INET, 6: socket.AF_INET6}
