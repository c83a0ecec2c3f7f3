"""The health keys: every value read into the model, every bad one named with file:line:key,
the merge of a real server's checks with its virtual server's, and ``pools_of``."""

from __future__ import annotations

import pickle
import textwrap

import pytest

from agent.config import ConfigError, parse_config
from agent.config.model import Config
from agent.health import (
    Check,
    MinHealthy,
    PoolPolicy,
    SorryServer,
    check_key,
    member,
    pools_of,
)


def load(text: str) -> Config:
    return parse_config(textwrap.dedent(text), "config.yaml")


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(text)
    return [str(p) for p in info.value.problems]


ISSUE = """\
virtual_servers:
  - name: web-http
    address: 192.0.2.10
    port: 80
    health_checks:
      - {type: http, path: /healthz, expect_status: [200-299], interval: 2s, timeout: 1s,
         rise: 2, fall: 3}
    on_failure: drain
    slow_start: 30s
    min_healthy: 50%
    quorum: 1
    hysteresis: 0
    sorry_server: {address: 10.0.9.9, port: 80}
    real_servers:
      - {address: 10.0.1.21, port: 8080, health_checks: [{type: tcp, connect_port: 8081}]}
      - {address: 10.0.1.22, port: 8080}
"""


def test_the_issue_example() -> None:
    vs = load(ISSUE).virtual_servers[0]
    assert vs.health == PoolPolicy(
        on_failure="drain",
        slow_start=30.0,
        min_healthy=MinHealthy(50, percent=True),
        quorum=1,
        hysteresis=0,
        sorry_server=SorryServer("10.0.9.9", 80, 1),
        initial="up",
    )
    http = Check("http", path="/healthz", expect_status=((200, 299),))
    first, second = vs.real_servers
    # a tcp check of its own; the http check of the virtual server stays
    assert first.checks == (http, Check("tcp", connect_port=8081))
    assert second.checks == (http,)


def test_defaults_without_health_keys() -> None:
    vs = load(
        """\
        virtual_servers:
          - {name: a, address: 192.0.2.1, port: 80, real_servers: [{address: 10.0.0.1}]}
          - name: b
            address: 192.0.2.2
            port: 80
            quorum: 2
            health_checks: [{type: tcp}]
            real_servers: [{address: 10.0.0.1}]
        """
    ).virtual_servers
    assert vs[0].health == PoolPolicy()
    assert vs[0].real_servers[0].checks == ()
    assert vs[1].health == PoolPolicy(quorum=2)


MERGE = """\
virtual_servers:
  - name: web
    address: 192.0.2.10
    port: 80
    health_checks:
      - {type: http, path: /a}
      - {type: http, path: /b}
      - {type: tcp}
    real_servers:
      - {address: 10.0.1.1}
      - {address: 10.0.1.2, health_checks: [{type: http, path: /c}]}
      - {address: 10.0.1.3, health_checks: [{type: dns, query_name: example.org}]}
      - {address: 10.0.1.4, health_checks: []}
      - {address: 10.0.1.5, health_checks: null}
"""


def test_a_real_servers_checks_replace_those_of_the_same_type_and_extend_the_rest() -> None:
    a, b, tcp = Check("http", path="/a"), Check("http", path="/b"), Check("tcp")
    got = [rs.checks for rs in load(MERGE).virtual_servers[0].real_servers]
    assert got == [
        (a, b, tcp),  # inherited
        (tcp, Check("http", path="/c")),  # both http checks replaced
        (a, b, tcp, Check("dns", query_name="example.org")),  # extended
        (),  # [] is no checks at all
        (a, b, tcp),  # null is as if absent
    ]


def test_every_check_key_is_read() -> None:
    vs = load(
        r"""
        virtual_servers:
          - name: web
            address: 192.0.2.10
            port: 443
            health_checks:
              - type: https
                interval: 5s
                timeout: 500ms
                rise: 1
                fall: 5
                fast_interval: 1s
                down_interval: 30s
                connect_address: 10.0.2.1
                connect_port: 8443
                source_address: 10.0.0.254
                method: HEAD
                path: /health?full=1
                host: www.example.org
                expect_status: [200, 204-206, "301"]
                expect_body: '"status":\s*"ok"'
                tls_verify: false
                tls_ca_file: /etc/ssl/private-ca.pem
                tls_server_name: api.example.org
              - {type: tcp, send: "PING\r\n", expect: ^\+PONG}
              - {type: udp, send: hello, expect: olleh}
              - {type: dns, query_name: example.org., query_type: AAAA, expect_rcode: NXDOMAIN}
              - {type: exec, command: [/usr/local/bin/check, --port, 443], dynamic_weight: true,
                 timeout: 10s}
              - {type: agent, connect_port: 9999, send: "hello\n"}
            real_servers: [{address: 10.0.1.1}]
        """
    ).virtual_servers[0]
    https, tcp, udp, dns, exec_, agent = vs.real_servers[0].checks
    assert https == Check(
        "https",
        interval=5.0,
        timeout=0.5,
        rise=1,
        fall=5,
        fast_interval=1.0,
        down_interval=30.0,
        connect_address="10.0.2.1",
        connect_port=8443,
        source_address="10.0.0.254",
        method="HEAD",
        path="/health?full=1",
        host="www.example.org",
        expect_status=((200, 200), (204, 206), (301, 301)),
        expect_body='"status":\\s*"ok"',
        tls_verify=False,
        tls_ca_file="/etc/ssl/private-ca.pem",
        tls_server_name="api.example.org",
    )
    assert tcp == Check("tcp", send=b"PING\r\n", expect="^\\+PONG")
    assert udp == Check("udp", send=b"hello", expect="olleh")
    assert dns == Check(
        "dns", query_name="example.org.", query_type="AAAA", expect_rcode="NXDOMAIN"
    )
    assert exec_ == Check(
        "exec", timeout=10.0, command=("/usr/local/bin/check", "--port", "443"), dynamic_weight=True
    )
    assert agent == Check("agent", connect_port=9999, send=b"hello\n")


def test_policy_values() -> None:
    vs = load(
        """\
        virtual_servers:
          - name: web
            fwmark: 7
            on_failure: remove
            slow_start: 1m
            min_healthy: 2
            quorum: 10
            hysteresis: 3
            initial: down
            sorry_server: {address: 10.0.9.9, weight: 5}
            health_checks: [{type: tcp, connect_port: 80}]
            real_servers: [{address: 10.0.1.1}]
        """
    ).virtual_servers[0]
    assert vs.health == PoolPolicy(
        on_failure="remove",
        slow_start=60.0,
        min_healthy=MinHealthy(2),
        quorum=10,
        hysteresis=3,
        sorry_server=SorryServer("10.0.9.9", 0, 5),
        initial="down",
    )


def test_quorum_commands_are_a_list_or_a_command_line() -> None:
    vs = load(
        _vs(
            "health_checks: [{type: tcp}]\n"
            "quorum_up: [/usr/local/bin/notify, up, 'two words']\n"
            "quorum_down: /usr/local/bin/notify down 'two words' 5"
        )
    ).virtual_servers[0]
    assert vs.health.quorum_up == ("/usr/local/bin/notify", "up", "two words")
    assert vs.health.quorum_down == ("/usr/local/bin/notify", "down", "two words", "5")
    # checks declared on a real server only are enough
    vs = load(
        _vs("quorum_up: [/bin/up]", "{address: 10.0.1.1, health_checks: [{type: tcp}]}")
    ).virtual_servers[0]
    assert vs.health.quorum_up == ("/bin/up",) and vs.health.quorum_down == ()


def _vs(keys: str, rs: str = "{address: 10.0.1.1}") -> str:
    return (
        "virtual_servers:\n"
        "  - name: web\n"
        "    address: 192.0.2.10\n"
        "    port: 80\n"
        + "".join(f"    {line}\n" for line in keys.splitlines())
        + f"    real_servers:\n      - {rs}\n"
    )


def _hc(check: str) -> str:
    return _vs(f"health_checks:\n  - {check}")


BAD = [
    # (document, line, key path, part of the message)
    (_vs("on_failure: delete"), 5, "virtual_servers[0].on_failure", "drain, remove"),
    (_vs("slow_start: 30"), 5, "virtual_servers[0].slow_start", "like 30s"),
    (_vs("slow_start: 2h"), 5, "virtual_servers[0].slow_start", "must be 0s..1h"),
    (_vs("min_healthy: 150%"), 5, "virtual_servers[0].min_healthy", "like 50%"),
    (_vs("min_healthy: half"), 5, "virtual_servers[0].min_healthy", "like 50%"),
    (_vs("min_healthy: 0"), 5, "virtual_servers[0].min_healthy", "must be 1..65535"),
    (_vs("quorum: -1"), 5, "virtual_servers[0].quorum", "must be 0.."),
    (_vs("quorum: 1\nhysteresis: 2"), 6, "virtual_servers[0].hysteresis", "above quorum 1"),
    (_vs("initial: maybe"), 5, "virtual_servers[0].initial", "up, down"),
    (_vs("sorry_server: 10.0.9.9"), 5, "virtual_servers[0].sorry_server", "mapping"),
    (_vs("sorry_server: {port: 80}"), 5, "virtual_servers[0].sorry_server", "'address'"),
    (
        _vs("sorry_server: {address: 10.0.9.9, wieght: 2}"),
        5,
        "virtual_servers[0].sorry_server.wieght",
        "did you mean 'weight'",
    ),
    (
        _vs("sorry_server: {address: 'fd00::9'}"),
        5,
        "virtual_servers[0].sorry_server",
        "ipv6 sorry server in an ipv4",
    ),
    (_vs("health_checks: {type: tcp}"), 5, "virtual_servers[0].health_checks", "must be a list"),
    (_hc("{interval: 2s}"), 6, "virtual_servers[0].health_checks[0]", "'type'"),
    (_hc("{type: icmp}"), 6, "virtual_servers[0].health_checks[0].type", "tcp, http"),
    (_hc("{type: tcp, interval: 2}"), 6, "virtual_servers[0].health_checks[0].interval", "2s"),
    (_hc("{type: tcp, interval: 10ms}"), 6, "health_checks[0].interval", "must be 50ms..1h"),
    (_hc("{type: tcp, timeout: 0s}"), 6, "health_checks[0].timeout", "must be 10ms"),
    (_hc("{type: tcp, rise: 0}"), 6, "health_checks[0].rise", "must be 1..100"),
    (_hc("{type: tcp, fall: x}"), 6, "health_checks[0].fall", "integer"),
    (_hc("{type: tcp, fast_interval: 1}"), 6, "health_checks[0].fast_interval", "1s"),
    (_hc("{type: tcp, down_interval: 2d}"), 6, "health_checks[0].down_interval", "..1h"),
    (_hc("{type: tcp, connect_address: db1}"), 6, "health_checks[0].connect_address", "not an"),
    (_hc("{type: tcp, connect_port: 0}"), 6, "health_checks[0].connect_port", "1..65535"),
    (_hc("{type: tcp, source_address: 1.2.3}"), 6, "health_checks[0].source_address", "not an"),
    (_hc("{type: tcp, send: ''}"), 6, "health_checks[0].send", "1..4096 bytes"),
    (_hc("{type: tcp, expect: '(unclosed'}"), 6, "health_checks[0].expect", "regular expr"),
    (_hc("{type: http, method: FETCH}"), 6, "health_checks[0].method", "GET, HEAD"),
    (_hc("{type: http, path: healthz}"), 6, "health_checks[0].path", "start with '/'"),
    (_hc("{type: http, path: /a b}"), 6, "health_checks[0].path", "without spaces"),
    (_hc("{type: http, host: 'a b'}"), 6, "health_checks[0].host", "host name"),
    (_hc("{type: http, expect_status: [200-2xx]}"), 6, "expect_status[0]", "range (200-299)"),
    (_hc("{type: http, expect_status: [299-200]}"), 6, "expect_status[0]", "range"),
    (_hc("{type: http, expect_status: [99]}"), 6, "expect_status[0]", "100..599"),
    (_hc("{type: http, expect_status: []}"), 6, "health_checks[0].expect_status", "at least"),
    (_hc("{type: http, expect_status: [{a: 1}]}"), 6, "expect_status[0]", "status code"),
    (_hc("{type: http, expect_body: '[a-'}"), 6, "health_checks[0].expect_body", "regular"),
    (_hc("{type: https, tls_verify: maybe}"), 6, "health_checks[0].tls_verify", "true or false"),
    (_hc("{type: https, tls_ca_file: ca.pem}"), 6, "tls_ca_file", "absolute path"),
    (_hc("{type: https, tls_server_name: ''}"), 6, "tls_server_name", "host name"),
    (_hc("{type: dns, query_name: 'a..b'}"), 6, "health_checks[0].query_name", "DNS name"),
    (_hc("{type: dns, query_type: AXFR}"), 6, "health_checks[0].query_type", "A, NS"),
    (_hc("{type: dns, expect_rcode: OK}"), 6, "health_checks[0].expect_rcode", "NOERROR"),
    (_hc("{type: exec}"), 6, "virtual_servers[0].health_checks[0]", "needs 'command'"),
    (_hc("{type: exec, command: /bin/check -x}"), 6, "health_checks[0].command", "a list"),
    (_hc("{type: exec, command: []}"), 6, "health_checks[0].command", "the program"),
    (_hc("{type: exec, command: [/bin/c, '']}"), 6, "health_checks[0].command[1]", "non-empty"),
    (_hc("{type: exec, command: [/bin/c, null]}"), 6, "health_checks[0].command[1]", "string"),
    (_hc("{type: exec, command: [/bin/c], dynamic_weight: 1}"), 6, "dynamic_weight", "true"),
    # keys that mean nothing for the check's type
    (_hc("{type: tcp, path: /x}"), 6, "health_checks[0].path", "not a key of tcp checks"),
    (_hc("{type: http, tls_verify: false}"), 6, "tls_verify", "it is for https"),
    (_hc("{type: http, send: x}"), 6, "health_checks[0].send", "tcp, udp and agent"),
    (_hc("{type: agent, expect: x}"), 6, "health_checks[0].expect", "tcp and udp"),
    (_hc("{type: udp, query_type: A}"), 6, "health_checks[0].query_type", "for dns"),
    (_hc("{type: tcp, command: [/bin/true]}"), 6, "health_checks[0].command", "for exec"),
    (_hc("{type: exec, command: [/x], connect_port: 1}"), 6, "connect_port", "not a key of exec"),
    (_hc("{type: tcp, intervall: 2s}"), 6, "intervall", "did you mean 'interval'"),
    # quorum commands
    (_vs("health_checks: [{type: tcp}]\nquorum_up: ''"), 6, "quorum_up", "not empty"),
    (_vs("health_checks: [{type: tcp}]\nquorum_up: []"), 6, "quorum_up", "the program"),
    (_vs("health_checks: [{type: tcp}]\nquorum_up: 'a \"b'"), 6, "quorum_up", "split into"),
    (_vs("health_checks: [{type: tcp}]\nquorum_down: [/x, null]"), 6, "quorum_down[1]", "string"),
    (_vs("health_checks: [{type: tcp}]\nquorum_down: {a: 1}"), 6, "quorum_down", "a list"),
    # keys that would do nothing without health checks
    (_vs("min_healthy: 1"), 5, "virtual_servers[0].min_healthy", "declare health_checks"),
    (_vs("slow_start: 10s"), 5, "virtual_servers[0].slow_start", "ramps up real servers"),
    (_vs("initial: down"), 5, "virtual_servers[0].initial", "declare health_checks"),
    (_vs("quorum: 2"), 5, "virtual_servers[0].quorum", "a sorry_server, quorum_up"),
    (_vs("quorum: 3\nhysteresis: 1"), 6, "virtual_servers[0].hysteresis", "a sorry_server"),
    (_vs("on_failure: remove"), 5, "virtual_servers[0].on_failure", "declare health_checks"),
    (
        _vs("quorum_up: /bin/up\non_failure: drain"),
        6,
        "virtual_servers[0].on_failure",
        "those a sorry_server replaces",
    ),
    (
        _vs("health_checks: []\nquorum_down: /bin/down\nslow_start: 1s"),
        7,
        "virtual_servers[0].slow_start",
        "declare health_checks",
    ),
    (
        _vs("health_checks:\n  - {type: tcp}\n  - {type: tcp}"),
        7,
        "virtual_servers[0].health_checks[1]",
        "the same check as health_checks[0]",
    ),
    # a real server's own checks
    (
        _vs("", "{address: 10.0.1.1, health_checks: [{type: tcp, rise: 0}]}"),
        6,
        "virtual_servers[0].real_servers[0].health_checks[0].rise",
        "must be 1..100",
    ),
    (
        _vs("", "{address: 10.0.1.1, health_checks: tcp}"),
        6,
        "virtual_servers[0].real_servers[0].health_checks",
        "must be a list",
    ),
    (
        _vs("", "{address: 10.0.1.1, health_checks: [{type: tcp, source_address: 'fd00::1'}]}"),
        6,
        "virtual_servers[0].real_servers[0].health_checks",
        "another address family",
    ),
]


@pytest.mark.parametrize(("text", "line", "key", "fragment"), BAD)
def test_bad_values_are_named_with_file_line_and_key(
    text: str, line: int, key: str, fragment: str
) -> None:
    found = errors(text)
    assert any(
        p.startswith(f"config.yaml:{line}: ") and key in p.split(": ")[1] and fragment in p
        for p in found
    ), found


def test_a_virtual_servers_source_address_is_checked_against_each_real_server() -> None:
    found = errors(
        """\
        virtual_servers:
          - name: web
            address: 192.0.2.10
            port: 80
            health_checks: [{type: tcp, source_address: 10.0.0.254}]
            real_servers:
              - {address: 10.0.1.1}
              - {address: 10.0.1.2, forwarding: tunnel, health_checks: []}
          - name: web6
            address: "fd00::10"
            port: 80
            health_checks: [{type: tcp, source_address: 10.0.0.254}]
            real_servers:
              - {address: "fd00::1"}
        """
    )
    assert found == [
        "config.yaml:14: virtual_servers[1].real_servers[0]: a tcp check from 10.0.0.254 "
        "cannot reach fd00::1 (another address family)"
    ]


def test_pools_of() -> None:
    config = load(ISSUE + MERGE.removeprefix("virtual_servers:\n").replace("port: 80", "port: 81"))
    pools = pools_of(config)
    assert [p.name for p in pools] == ["web-http", "web"]
    web_http, web = pools
    assert web_http.policy == config.virtual_servers[0].health
    assert web.policy == PoolPolicy()
    first = web_http.members[0]
    assert (first.address, first.port, first.weight) == ("10.0.1.21", 8080, 1)
    http = Check("http", path="/healthz", expect_status=((200, 299),))
    assert first.checks == (
        check_key(http, "10.0.1.21", 8080),
        check_key(Check("tcp", connect_port=8081), "10.0.1.21", 8080),
    )
    # the tcp check on 8081 probes 10.0.1.21:8081
    assert first.checks[1].target.port == 8081
    assert [len(m.checks) for m in web.members] == [3, 2, 4, 0, 3]


def test_one_probe_per_target_across_virtual_servers() -> None:
    """The same real servers behind two VIPs, checked the same way: one identity each."""
    config = load(
        """\
        virtual_servers:
          - name: v4-80
            address: 192.0.2.10
            port: 80
            health_checks: [{type: http, connect_port: 8080}]
            real_servers: [{address: 10.0.1.1, port: 8080}]
          - name: v4-443
            address: 192.0.2.10
            port: 443
            health_checks: [{type: http}]
            real_servers: [{address: 10.0.1.1, port: 8080}]
        """
    )
    a, b = pools_of(config)
    assert a.members[0].checks == b.members[0].checks


def test_health_fields_survive_pickling() -> None:
    """The reload worker sends virtual servers back as pickles."""
    config = load(ISSUE)
    assert pickle.loads(pickle.dumps(config.virtual_servers)) == config.virtual_servers


def test_pools_of_builds_what_member_builds() -> None:
    config = load(ISSUE + MERGE.removeprefix("virtual_servers:\n").replace("port: 80", "port: 81"))
    for pool, vs in zip(pools_of(config), config.virtual_servers, strict=True):
        assert pool.members == tuple(
            member(rs.address, rs.port, rs.weight, rs.checks) for rs in vs.real_servers
        )


QUICK_CASES = [
    ISSUE,
    _hc("{type: tcp, source_address: 10.0.0.254}"),
    _hc("{type: tcp}\nmin_healthy: 2\nquorum: 3\nhysteresis: 1\ninitial: down\non_failure: remove"),
    _hc("{type: tcp}\nsorry_server: {address: 10.0.9.9, weight: 3}\nslow_start: 10s"),
    _vs("sorry_server: {address: 10.0.9.9}\nquorum: 3\nhysteresis: 1\non_failure: remove"),
    _vs("quorum_down: /bin/down\nquorum: 2"),
    _vs("health_checks: []"),
    _vs("health_checks: null"),
    _hc("{type: exec, command: [/bin/true], dynamic_weight: true}"),
    _vs("health_checks: [{type: tcp}]\nquorum_up: [/bin/up, 1]\nquorum_down: /bin/down 'a b'"),
]


@pytest.mark.parametrize("text", QUICK_CASES)
def test_the_quick_reader_reads_the_virtual_servers_health_keys(text: str) -> None:
    """The common shape with health keys at the virtual server takes the quick path,
    and builds what the general reader builds (tests/unit/conftest.py compares each)."""
    from agent.config import quick

    taken: list[bool] = []
    real = quick.virtual_server

    def counting(node: object, *args: object) -> object:
        result = real(node, *args)  # type: ignore[arg-type]
        taken.append(result is not None)
        return result

    quick.virtual_server = counting  # type: ignore[assignment]
    try:
        load(text)
    finally:
        quick.virtual_server = real
    # the issue's example: a real server with its own checks is read the general way
    assert taken == [text is not ISSUE]


QUICK_DECLINED = [
    # bad values: the general reader reports them
    (_vs("quorum: -1"), "quorum"),
    (_vs("quorum: 2"), "declare health_checks"),
    (_vs("sorry_server: {address: 10.0.9.9}\nslow_start: 1s"), "declare health_checks"),
    (_hc("{type: tcp, rise: 0}"), "rise"),
    (_vs("sorry_server: {address: 'fd00::9'}"), "sorry server"),
    (
        _vs("health_checks: [{type: tcp, source_address: 'fd00::1'}]"),
        "another address family",
    ),
]


@pytest.mark.parametrize(("text", "fragment"), QUICK_DECLINED)
def test_the_quick_reader_leaves_problems_to_the_general_one(text: str, fragment: str) -> None:
    found = errors(text)
    assert len(found) == 1 and fragment in found[0], found
