"""Configuration validation: good files load completely, bad ones name file, line and key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from agent.config import ConfigError, parse_config

ROOT = Path(__file__).resolve().parents[3]

BASE = """\
node: {name: director1}
virtual_servers:
  - name: web
    address: 192.0.2.100
    port: 80
    real_servers:
      - {address: 10.0.1.21, port: 8080}
"""


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(textwrap.dedent(text), "config.yaml")
    return [str(p) for p in info.value.problems]


def test_example_config_is_valid() -> None:
    config = parse_config((ROOT / "config.example.yaml").read_text(), "config.example.yaml")
    assert config.virtual_servers
    names = [vs.name for vs in config.virtual_servers]
    assert len(names) == len(set(names))


def test_defaults_are_filled_in() -> None:
    c = parse_config(BASE)
    assert c.node_name == "director1"
    assert (c.metrics_host, c.metrics_port) == ("127.0.0.1", 9469)
    assert c.reconcile_interval == 30.0
    assert c.ipvs.drain_timeout == 300.0
    vs = c.virtual_servers[0]
    assert (vs.protocol, vs.scheduler, vs.family) == ("tcp", "wlc", "ipv4")
    rs = vs.real_servers[0]
    assert (rs.weight, rs.forwarding, rs.port) == (1, "nat", 8080)


def test_issue_example_values() -> None:
    c = parse_config(
        """\
node: {name: director1}
metrics: {listen: "127.0.0.1:9469"}
reconcile_interval: 30s
ipvs:
  timeouts: {tcp: 900s, tcp_fin: 120s, udp: 300s}
  drain_timeout: 5m
virtual_servers:
  - name: web-http
    address: 192.0.2.100
    port: 80
    protocol: tcp
    scheduler: wlc
    scheduler_flags: []
    forwarding: nat
    persistence: {timeout: 300s, netmask: 255.255.255.0}
    one_packet: false
    real_servers:
      - {address: 10.0.1.21, port: 8080, weight: 100, upper_threshold: 0, lower_threshold: 0}
"""
    )
    vs = c.virtual_servers[0]
    assert vs.persistence is not None
    assert vs.persistence.netmask == 0xFFFFFF00 and vs.persistence.timeout == 300
    assert (c.ipvs.timeout_tcp, c.ipvs.timeout_tcp_fin, c.ipvs.timeout_udp) == (900, 120, 300)


def test_ipv6_address_is_canonical() -> None:
    c = parse_config(
        BASE.replace("192.0.2.100", '"2001:0db8:0::0100"').replace(
            "10.0.1.21", '"2001:db8:0:0::21"'
        )
    )
    vs = c.virtual_servers[0]
    assert vs.address == "2001:db8::100" and vs.family == "ipv6"
    assert vs.real_servers[0].address == "2001:db8::21"


def test_fwmark_service_and_family() -> None:
    c = parse_config(
        """\
virtual_servers:
  - name: mark
    fwmark: 10
    family: ipv6
    real_servers:
      - {address: "2001:db8::5"}
"""
    )
    vs = c.virtual_servers[0]
    assert (vs.fwmark, vs.family, vs.protocol, vs.port) == (10, "ipv6", None, 0)
    assert vs.real_servers[0].port == 0


@pytest.mark.parametrize(
    ("rs", "family", "netmask"),
    [("10.0.4.1", "ipv4", 0xFFFFFF00), ('"2001:db8::5"', "ipv6", 24)],
)
def test_fwmark_persistence_without_family(rs: str, family: str, netmask: int) -> None:
    """The family comes from the real servers; persistence must not be dropped for it."""
    c = parse_config(
        f"""\
virtual_servers:
  - name: marked
    fwmark: 10
    scheduler: wlc
    persistence: {{timeout: 600s, netmask: 24}}
    real_servers:
      - {{address: {rs}, port: 80, weight: 1}}
"""
    )
    vs = c.virtual_servers[0]
    assert vs.family == family
    assert vs.persistence is not None
    assert (vs.persistence.timeout, vs.persistence.netmask) == (600, netmask)


def test_dr_real_server_port_defaults_to_service_port() -> None:
    c = parse_config(
        BASE.replace("{address: 10.0.1.21, port: 8080}", "{address: 10.0.1.21, forwarding: dr}")
    )
    assert c.virtual_servers[0].real_servers[0].port == 80


def test_tunnel_options_inherited_by_real_servers() -> None:
    c = parse_config(
        """\
virtual_servers:
  - name: t
    address: 192.0.2.1
    port: 80
    forwarding: tunnel
    tunnel_type: gue
    tunnel_port: 6080
    tunnel_checksum: remcsum
    real_servers:
      - {address: 10.0.0.1}
      - {address: "2001:db8::1", tunnel_type: gre, tunnel_checksum: csum}
"""
    )
    a, b = c.virtual_servers[0].real_servers
    assert a.tunnel is not None and (a.tunnel.type, a.tunnel.port, a.tunnel.checksum) == (
        "gue",
        6080,
        "remcsum",
    )
    assert b.tunnel is not None and (b.tunnel.type, b.tunnel.checksum) == ("gre", "csum")


BAD = [
    # (document, expected line, expected fragment)
    ("node: {name: director1}\nvirtual_servers: [\n", 3, "YAML syntax error"),
    ("", 1, "the file is empty"),
    ("- a\n- b\n", 1, "must be a mapping"),
    ("nodes: {name: x}\n", 1, "nodes: unknown key (did you mean 'node'?)"),
    (
        BASE.replace("    port: 80\n", "    port: 80\n    shceduler: rr\n"),
        6,
        "virtual_servers[0].shceduler: unknown key (did you mean 'scheduler'?)",
    ),
    (
        BASE.replace("port: 8080", "port: 70000"),
        7,
        "virtual_servers[0].real_servers[0].port: must be 1..65535, got 70000",
    ),
    (BASE.replace("port: 8080", "port: http"), 7, "port: must be an integer"),
    (BASE.replace("    port: 80\n", ""), 3, "missing required key 'port'"),
    (BASE.replace("    address: 192.0.2.100\n", ""), 3, "missing required key 'address'"),
    (
        BASE.replace("  - name: web\n", "  - port: 1\n").replace("    port: 80\n", ""),
        3,
        "missing required key 'name'",
    ),
    (BASE + "reconcile_interval: 30\n", 8, "write it with a unit, like 30s"),
    (BASE + "reconcile_interval: 30 s\n", 8, "is not a duration"),
    (BASE + "reconcile_interval: 10parsecs\n", 8, "is not a duration"),
    (BASE + "ipvs: {timeouts: {tcp: 1500ms}}\n", 8, "ipvs.timeouts.tcp: must be whole seconds"),
    (BASE + "ipvs: {drain_timeout: -5s}\n", 8, "is not a duration"),
    (BASE.replace("192.0.2.100", "192.0.2.300"), 4, "is not an IPv4 or IPv6 address"),
    (BASE.replace("192.0.2.100", "224.0.0.5"), 4, "multicast"),
    (BASE + "ipvs: {timeouts: {udp: 2147484s}}\n", 8, "ipvs.timeouts.udp: must be 1s..2147483s"),
    (
        BASE.replace("    port: 80\n", "    port: 80\n    persistence: {timeout: 2678401s}\n"),
        6,
        "persistence.timeout: must be 1s..744h, got 2678401s",
    ),
    (BASE.replace("10.0.1.21", "255.255.255.255"), 7, "(unspecified, multicast or broadcast)"),
    (BASE.replace("10.0.1.21", "0.1.2.3"), 7, "(unspecified, multicast or broadcast)"),
    (BASE.replace("10.0.1.21", '"ff02::1"'), 7, "(unspecified, multicast or broadcast)"),
    (BASE.replace("10.0.1.21", '"fe80::1"'), 7, "fe80::1 is link-local: IPVS has no interface"),
    (
        BASE.replace("10.0.1.21", '"::ffff:10.0.1.21"'),
        7,
        "::ffff:10.0.1.21 is an IPv4-mapped IPv6 address: write 10.0.1.21",
    ),
    (
        BASE.replace("10.0.1.21", '"2001:db8::1"'),
        7,
        "ipv6 real server in an ipv4 virtual server: only tunnel forwarding",
    ),
    (
        BASE.replace("    port: 80\n", "    port: 80\n    scheduler: fastest\n"),
        6,
        "scheduler: must be one of",
    ),
    (
        BASE.replace("    port: 80\n", "    port: 80\n    protocol: icmp\n"),
        6,
        "protocol: must be one of tcp, udp, sctp",
    ),
    (
        BASE.replace("    port: 80\n", "    port: 80\n    one_packet: true\n"),
        6,
        "one-packet scheduling is for UDP only, not tcp",
    ),
    (
        BASE.replace(
            "    port: 80\n", "    port: 80\n    scheduler: rr\n    scheduler_flags: [sh-port]\n"
        ),
        7,
        "sh-port is a flag of the sh scheduler, not rr",
    ),
    (
        BASE.replace(
            "    port: 80\n",
            "    port: 80\n    scheduler: sh\n    scheduler_flags: [sh-port, flag-2]\n",
        ),
        7,
        "flag-2 sets the same scheduler flag bit as sh-port",
    ),
    (
        BASE.replace("    port: 80\n", "    port: 80\n    tunnel_type: gue\n"),
        6,
        "tunnel_type gue needs tunnel_port",
    ),
    (
        BASE.replace(
            "    port: 80\n",
            "    port: 80\n    forwarding: tunnel\n    tunnel_type: ipip\n    tunnel_port: 99\n",
        ),
        8,
        "tunnel_port is only for tunnel_type gue",
    ),
    (
        BASE.replace(
            "    port: 80\n",
            "    port: 80\n    forwarding: tunnel\n    tunnel_type: gre\n"
            "    tunnel_checksum: remcsum\n",
        ),
        8,
        "remcsum is for gue tunnels only",
    ),
    (
        BASE.replace("    port: 80\n", "    port: 80\n    forwarding: dr\n    tunnel_type: gre\n"),
        3,
        "tunnel options need forwarding: tunnel",
    ),
    (
        BASE.replace(
            "{address: 10.0.1.21, port: 8080}", "{address: 10.0.1.21, port: 8080, forwarding: dr}"
        ),
        7,
        "dr forwarding cannot change the port",
    ),
    (
        BASE.replace("port: 8080}", "port: 8080, lower_threshold: 5}"),
        7,
        "lower_threshold needs upper_threshold",
    ),
    (
        BASE.replace("port: 8080}", "port: 8080, upper_threshold: 5, lower_threshold: 9}"),
        7,
        "lower_threshold 9 is above upper_threshold 5",
    ),
    (BASE.replace("port: 8080}", "port: 8080, weight: -1}"), 7, "weight: must be 0..65535"),
    (
        BASE.replace("port: 8080}", "port: 8080, wieght: 3}"),
        7,
        "unknown key (did you mean 'weight'?)",
    ),
    (
        BASE + "      - {address: 10.0.1.21, port: 8080}\n",
        8,
        "duplicate real server 10.0.1.21 port 8080 (first as real_servers[0], line 7)",
    ),
    (BASE + BASE.split("virtual_servers:\n")[1], 8, "duplicate virtual server name 'web'"),
    (
        BASE + BASE.split("virtual_servers:\n")[1].replace("name: web", "name: web2"),
        8,
        "duplicate virtual server: tcp 192.0.2.100 port 80 is already defined at line 3",
    ),
    (
        BASE.replace("    port: 80\n", "    port: 80\n    fwmark: 5\n"),
        6,
        "use either fwmark or address and port",
    ),
    (
        BASE.replace("    port: 80\n", "    port: 80\n    family: ipv6\n"),
        6,
        "family is implied by the address",
    ),
    (
        "virtual_servers:\n  - name: m\n    fwmark: 1\n    protocol: udp\n",
        4,
        "a fwmark service matches every protocol",
    ),
    (
        BASE.replace("    port: 80\n", "    port: 80\n    persistence: {timeout: 0s}\n"),
        6,
        "persistence.timeout: must be 1s",
    ),
    (
        BASE.replace("    port: 80\n", "    port: 80\n    persistence: {netmask: 255.0.255.0}\n"),
        6,
        "is not an IPv4 netmask",
    ),
    (
        BASE.replace("    port: 80\n", "    port: 80\n    persistence: {engine: sip}\n"),
        6,
        "the sip persistence engine works on UDP services only",
    ),
    (BASE + "metrics: {listen: localhost:9469}\n", 8, "is not an IP address"),
    (BASE + "metrics: {listen: 127.0.0.1}\n", 8, "must be host:port"),
    (BASE + "state_dir: var/lib\n", 8, "must be an absolute path"),
    (BASE + "ipvs: {sysctls: {expire_nodest_con: 1}}\n", 8, "did you mean 'expire_nodest_conn'?"),
    (BASE + "ipvs: {sysctls: {conn_reuse_mode: 9}}\n", 8, "must be 0..3"),
    (BASE.replace("name: web", "name: web/1"), 3, "must be 1..64 characters"),
    (BASE.replace("    port: 80\n", "    port: 80\n    port: 81\n"), 6, "duplicate key"),
    (
        BASE.replace(
            "real_servers:\n      - {address: 10.0.1.21, port: 8080}",
            "real_servers: {address: 10.0.1.21}",
        ),
        6,
        "real_servers: must be a list",
    ),
]


@pytest.mark.parametrize(("text", "line", "fragment"), BAD, ids=[b[2][:40] for b in BAD])
def test_bad_config_is_named_precisely(text: str, line: int, fragment: str) -> None:
    found = errors(text)
    matching = [e for e in found if fragment in e]
    assert matching, f"expected {fragment!r} in {found}"
    assert matching[0].startswith(f"config.yaml:{line}: "), matching[0]


def test_all_problems_reported_at_once() -> None:
    text = BASE.replace("port: 8080", "port: 0").replace("scheduler", "x") + "bogus: 1\n"
    found = errors(text)
    assert len(found) >= 2
    assert any("bogus" in e for e in found) and any("port" in e for e in found)


def test_real_server_tunnel_keys_override_one_by_one() -> None:
    c = parse_config(
        """\
virtual_servers:
  - name: t
    address: "2001:db8::200"
    port: 80
    forwarding: tunnel
    tunnel_type: gre
    tunnel_checksum: csum
    real_servers:
      - {address: 10.0.5.1}
      - {address: "2001:db8:5::2", tunnel_checksum: nocsum}
      - {address: "2001:db8:5::3", tunnel_type: gue, tunnel_port: 6080}
      - {address: "2001:db8:5::4", tunnel_type: ipip}
"""
    )
    tunnels = [rs.tunnel for rs in c.virtual_servers[0].real_servers]
    assert [(t.type, t.port, t.checksum) for t in tunnels if t] == [
        ("gre", 0, "csum"),
        ("gre", 0, "nocsum"),
        ("gue", 6080, "csum"),
        ("ipip", 0, "nocsum"),
    ]


def test_anchors_aliases_and_merge_keys() -> None:
    c = parse_config(
        """\
virtual_servers:
  - name: a
    address: 192.0.2.1
    port: 80
    real_servers:
      - &base {address: 10.0.0.1, port: 8080, weight: 5, upper_threshold: 9}
      - <<: *base
        address: 10.0.0.2
  - name: b
    address: 192.0.2.2
    port: 80
    real_servers: [*base]
"""
    )
    a, b = c.virtual_servers
    assert [(r.address, r.weight, r.upper_threshold) for r in a.real_servers] == [
        ("10.0.0.1", 5, 9),
        ("10.0.0.2", 5, 9),
    ]
    assert b.real_servers[0].address == "10.0.0.1"


def test_quoted_numbers_and_yaml_11_words() -> None:
    found = errors(BASE.replace("port: 8080", 'port: "8080"').replace("name: web", "name: yes"))
    assert any("port: must be an integer 1..65535, got a string ('8080')" in e for e in found)
    assert any("name: must be a string, got true or false ('yes'); quote it" in e for e in found)
    c = parse_config(BASE.replace("port: 8080", "port: 0x1f90"))
    assert c.virtual_servers[0].real_servers[0].port == 8080


def test_more_than_one_document_is_refused() -> None:
    found = errors(BASE + "---\nnode: {name: other}\n")
    assert any("expected a single document" in e for e in found), found


def test_non_ascii_digits_are_an_error_not_a_crash() -> None:
    for value in ("²", "٣"):
        text = (
            "virtual_servers:\n  - name: a\n    address: 10.0.0.1\n    port: 80\n"
            f"    real_servers: [{{address: 10.0.0.2, port: {value}}}]\n"
        )
        with pytest.raises(ConfigError) as caught:
            parse_config(text, "c.yaml")
        assert [str(p) for p in caught.value.problems] == [
            "c.yaml:5: virtual_servers[0].real_servers[0].port: must be an integer 1..65535,"
            f" got a string ({value!r})"
        ]
