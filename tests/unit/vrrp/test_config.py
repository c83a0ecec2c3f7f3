"""From the YAML-shaped config to the machine's parameters."""

from __future__ import annotations

import socket
from ipaddress import IPv4Address, IPv6Address, ip_interface

import pytest

from agent.vrrp.config import GarpConfig, VrrpConfig, VrrpInstanceConfig
from agent.vrrp.machine import InstanceParams, config_family
from agent.vrrp.packet import MCAST_GROUP_V4, MCAST_GROUP_V6, pad_password

PRIMARY = IPv4Address("192.0.2.10")


def cfg(**kw: object) -> VrrpInstanceConfig:
    base: dict[str, object] = {"name": "web", "interface": "eth1", "vrid": 51,
                               "virtual_ips": ("192.0.2.100/24",)}
    base.update(kw)
    return VrrpInstanceConfig(**base)  # type: ignore[arg-type]


def test_defaults_mirror_the_documented_yaml() -> None:
    c = cfg()
    assert (c.version, c.priority, c.advert_interval, c.preempt, c.preempt_delay) == (
        3, 100, 1.0, True, 0.0
    )
    assert c.garp == GarpConfig(repeat=5, delay=5.0, refresh=0.0)
    assert (c.unicast_peers, c.auth_pass, c.notify, c.track_scripts) == ((), None, None, ())
    assert VrrpConfig() == VrrpConfig((), ())


def test_mixed_families_advertise_the_first_and_own_both() -> None:
    p = InstanceParams.from_config(cfg(virtual_ips=("192.0.2.100/24", "2001:db8::100/64")), PRIMARY)
    assert p.family == socket.AF_INET
    assert p.advertised == (IPv4Address("192.0.2.100"),)
    assert p.vips == (ip_interface("192.0.2.100/24"), ip_interface("2001:db8::100/64"))
    assert p.destinations == (MCAST_GROUP_V4,)


def test_ipv6_instance() -> None:
    c = cfg(virtual_ips=("2001:db8::100/64",))
    p = InstanceParams.from_config(c, IPv6Address("fe80::1"))
    assert config_family(c) == socket.AF_INET6 and p.destinations == (MCAST_GROUP_V6,)


def test_unicast_peers_pick_family_and_destinations() -> None:
    p = InstanceParams.from_config(cfg(unicast_peers=("192.0.2.5", "192.0.2.6")), PRIMARY)
    assert p.destinations == (IPv4Address("192.0.2.5"), IPv4Address("192.0.2.6"))


def test_interval_and_auth_conversion() -> None:
    p = InstanceParams.from_config(cfg(advert_interval=0.03), PRIMARY)
    assert p.advert_interval_cs == 3
    p = InstanceParams.from_config(cfg(version=2, advert_interval=2.0, auth_pass="s3cret"), PRIMARY)
    assert p.advert_interval_cs == 200 and p.auth == pad_password("s3cret")
    assert InstanceParams.from_config(cfg(auth_pass="x"), PRIMARY).auth is None  # v3: no auth


@pytest.mark.parametrize(
    ("kw", "primary"),
    [
        ({"version": 2, "virtual_ips": ("2001:db8::1/64",)}, IPv6Address("fe80::1")),
        ({"version": 2, "advert_interval": 1.5}, PRIMARY),
        ({"version": 4}, PRIMARY),
        ({"advert_interval": 41.0}, PRIMARY),
        ({"advert_interval": 0.001}, PRIMARY),
        ({"virtual_ips": ()}, PRIMARY),
        ({}, IPv6Address("fe80::1")),
        ({"unicast_peers": ("192.0.2.5", "2001:db8::5")}, PRIMARY),
    ],
)
def test_what_cannot_run_is_refused(kw: dict[str, object], primary: object) -> None:
    with pytest.raises(ValueError):
        InstanceParams.from_config(cfg(**kw), primary)  # type: ignore[arg-type]
