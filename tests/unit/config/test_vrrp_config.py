"""The vrrp_instances and vrrp_sync_groups sections."""

from __future__ import annotations

import textwrap

import pytest

from agent.config import ConfigError, parse_config

GOOD = """\
vrrp_instances:
  - name: web
    interface: eth1
    vrid: 51
    version: 3
    priority: 150
    advert_interval: 1s
    preempt: true
    preempt_delay: 0s
    unicast_peers: []
    auth_pass: null
    virtual_ips: [192.0.2.100/24, "2001:db8::100/64"]
    track_interfaces: []
    track_scripts: []
    notify: null
    garp: {repeat: 5, delay: 5s, refresh: 0s}
vrrp_sync_groups: []
"""


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(textwrap.dedent(text), "config.yaml")
    return [str(p) for p in info.value.problems]


def test_issue_example_loads_with_every_key() -> None:
    c = parse_config(GOOD)
    (web,) = c.vrrp.vrrp_instances
    assert (web.name, web.interface, web.vrid, web.version, web.priority) == (
        "web",
        "eth1",
        51,
        3,
        150,
    )
    assert web.advert_interval == 1.0 and web.preempt and web.preempt_delay == 0
    assert web.virtual_ips == ("192.0.2.100/24", "2001:db8::100/64")
    assert (web.garp.repeat, web.garp.delay, web.garp.refresh) == (5, 5.0, 0.0)


def test_trackers_sync_groups_and_defaults() -> None:
    c = parse_config("""\
vrrp_instances:
  - name: a
    interface: eth0
    vrid: 1
    virtual_ips: [192.0.2.1]
    track_interfaces: [eth2, {name: eth3, weight: -20}]
    track_scripts:
      - {name: haproxy, script: "pidof haproxy", interval: 2s, fall: 3, rise: 2, weight: 10}
    unicast_peers: [192.0.2.12, 192.0.2.13]
  - name: b
    interface: eth1
    vrid: 2
    version: 2
    auth_pass: secret
    advert_interval: 2s
    virtual_ips: [198.51.100.1/24]
vrrp_sync_groups:
  - {name: g, instances: [a, b], notify: /usr/local/bin/notify}
""")
    a, b = c.vrrp.vrrp_instances
    assert a.virtual_ips == ("192.0.2.1/32",) and a.priority == 100 and a.version == 3
    assert [(t.name, t.weight) for t in a.track_interfaces] == [("eth2", 0), ("eth3", -20)]
    (script,) = a.track_scripts
    assert (script.script, script.interval, script.fall, script.rise, script.weight) == (
        "pidof haproxy",
        2.0,
        3,
        2,
        10,
    )
    assert a.unicast_peers == ("192.0.2.12", "192.0.2.13")
    assert b.auth_pass == "secret" and b.advert_interval == 2.0
    assert c.vrrp.vrrp_sync_groups[0].instances == ("a", "b")


def inst(extra: str, vrid: int = 51, name: str = "web", vip: str = "192.0.2.100/24") -> str:
    return (
        f"  - name: {name}\n    interface: eth1\n    vrid: {vrid}\n"
        f'    virtual_ips: ["{vip}"]\n{extra}'
    )


BAD = [
    ("vrrp_instances:\n" + inst("    vrid: 0\n"), "duplicate key"),
    ("vrrp_instances:\n" + inst("", vrid=256), "vrid: must be 1..255, got 256"),
    ("vrrp_instances:\n" + inst("    priority: 0\n"), "priority: must be 1..255, got 0"),
    ("vrrp_instances:\n" + inst("    version: 4\n"), "version: must be 2..3"),
    (
        "vrrp_instances:\n" + inst("    advert_interval: 5ms\n"),
        "advert_interval: must be 10ms..40950ms",
    ),
    (
        "vrrp_instances:\n" + inst("    advert_interval: 41s\n"),
        "advert_interval: must be 10ms..40950ms",
    ),
    (
        "vrrp_instances:\n" + inst("    advert_interval: 15ms\n"),
        "VRRPv3 adverts are in steps of 10ms",
    ),
    (
        "vrrp_instances:\n" + inst("    version: 2\n    advert_interval: 500ms\n"),
        "VRRPv2 adverts are whole seconds",
    ),
    ("vrrp_instances:\n" + inst("    auth_pass: secret\n"), "VRRPv3 has no authentication"),
    (
        "vrrp_instances:\n" + inst("    version: 2\n    auth_pass: toolongpassword\n"),
        "must be 1..8 bytes",
    ),
    ("vrrp_instances:\n" + inst("    version: 2\n", vip="2001:db8::1/64"), "VRRPv2 is IPv4 only"),
    (
        "vrrp_instances:\n" + inst('    unicast_peers: [10.0.0.1, "2001:db8::2"]\n'),
        "unicast peers must all be IPv4",
    ),
    ("vrrp_instances:\n" + inst("", vip="192.0.2.300/24"), "is not an address with an optional"),
    ("vrrp_instances:\n" + inst("", vip="224.0.0.18"), "cannot be a virtual IP"),
    ("vrrp_instances:\n" + inst("    intreface: eth2\n"), "did you mean 'interface'?"),
    (
        "vrrp_instances:\n" + inst("") + inst("", name="web2", vip="192.0.2.9"),
        "VRID 51 is already used on eth1",
    ),
    ("vrrp_instances:\n" + inst("") + inst("", vrid=52), "duplicate instance name 'web'"),
    (
        "vrrp_instances:\n" + inst("") + inst("", vrid=52, name="other"),
        "192.0.2.100 is a VIP of another instance too",
    ),
    (
        "vrrp_instances:\n  - name: x\n    interface: eth1\n    vrid: 3\n",
        "needs at least one entry in virtual_ips",
    ),
    (
        "vrrp_instances:\n" + inst('    track_scripts: [{name: s, script: ""}]\n'),
        "must be a command line",
    ),
    (
        "vrrp_instances:\n" + inst("    track_interfaces: [{name: eth0, weight: 300}]\n"),
        "weight: must be -253..253",
    ),
    ("vrrp_instances:\n" + inst("    garp: {repeat: -1}\n"), "garp.repeat: must be 0..100"),
    (
        "vrrp_instances:\n" + inst("    garp: {lower_prio_repeat: 101}\n"),
        "garp.lower_prio_repeat: must be 0..100",
    ),
    (
        "vrrp_instances:\n" + inst("    garp: {lower_prio_delay: 2h}\n"),
        "garp.lower_prio_delay",
    ),
    (
        "vrrp_instances:\n"
        + inst("")
        + "vrrp_sync_groups:\n  - {name: g, instances: [web, nope]}\n",
        "no vrrp_instances entry named 'nope'",
    ),
    (
        "vrrp_instances:\n" + inst("") + "vrrp_sync_groups:\n  - {name: g, instances: [web]}\n"
        "  - {name: h, instances: [web]}\n",
        "'web' is already in sync group 'g'",
    ),
    (
        "vrrp_instances:\n  - name: x\n    interface: a/b\n    vrid: 3\n"
        "    virtual_ips: [192.0.2.7]\n",
        "is not an interface name",
    ),
]


@pytest.mark.parametrize(("text", "fragment"), BAD, ids=[b[1][:40] for b in BAD])
def test_bad_vrrp_config(text: str, fragment: str) -> None:
    found = errors(text)
    assert any(fragment in e for e in found), found
    assert all(e.startswith("config.yaml:") for e in found)


def test_garp_lower_prio_defaults_follow_the_master_burst() -> None:
    """keepalived: garp_lower_prio_repeat/_delay default to garp_master_repeat/_delay."""
    c = parse_config(GOOD.replace("{repeat: 5, delay: 5s, refresh: 0s}", "{repeat: 2, delay: 3s}"))
    garp = c.vrrp.vrrp_instances[0].garp
    assert (garp.lower_repeat, garp.lower_delay) == (2, 3.0)
    c = parse_config(
        GOOD.replace(
            "{repeat: 5, delay: 5s, refresh: 0s}",
            "{repeat: 2, delay: 3s, lower_prio_repeat: 1, lower_prio_delay: 10s}",
        )
    )
    garp = c.vrrp.vrrp_instances[0].garp
    assert (garp.lower_repeat, garp.lower_delay) == (1, 10.0)
