"""Validate the health keys of virtual and real servers into ``agent.health.config`` values.

Owns the rules for ``health_checks`` (of a virtual server and of a real server),
``on_failure``, ``slow_start``, ``min_healthy``, ``quorum``, ``hysteresis``,
``sorry_server`` and ``initial``, and the rule that merges a real server's checks
with its virtual server's. It reports every problem with file:line:key like the
rest of the loader and never runs a check, opens a socket or reads a file. A pool
key that would do nothing because no check is declared is refused
(``check_unchecked``), so every key takes effect or is refused.

Merging: a real server without ``health_checks`` has its virtual server's checks.
A real server's list replaces the virtual server's checks of the types it names
and keeps the others: a virtual server checking ``http`` and ``tcp`` and a real
server listing one ``http`` check gives that real server its own ``http`` check
and the virtual server's ``tcp`` check. ``health_checks: []`` on a real server
means no checks at all (it is always healthy).

Each check reads every check key, so a misspelt key gets the usual "unknown key"
report; a key that has no meaning for the check's ``type`` (``expect_status`` on
a tcp check, ``tls_verify`` on plain http) is refused with the types it is for.
Regular expressions are compiled here, so a bad one is a configuration error,
never a failing probe.
"""

from __future__ import annotations

import re
import shlex
from typing import Final

from agent.config import quick
from agent.config.reader import INT_TAG, Item, MappingNode, Node, Problems, Section
from agent.health.config import (
    CHECK_TYPES,
    DNS_RCODES,
    DNS_TYPES,
    INITIAL,
    ON_FAILURE,
    Check,
    MinHealthy,
    PoolPolicy,
    SorryServer,
)

MAX_INTERVAL: Final = 3600.0
MIN_INTERVAL: Final = 0.05
MIN_TIMEOUT: Final = 0.01
MAX_TIMEOUT: Final = 600.0
MAX_RISE_FALL: Final = 100
MAX_SLOW_START: Final = 3600.0
HTTP_METHODS: Final = ("GET", "HEAD", "POST", "OPTIONS")
MAX_SEND: Final = 4096  # bytes sent by a tcp/udp/agent check

# The check keys that only some types take, and the types that take them.
_ONLY: Final[dict[str, tuple[str, ...]]] = {
    "connect_address": ("tcp", "http", "https", "udp", "dns", "agent"),
    "connect_port": ("tcp", "http", "https", "udp", "dns", "agent"),
    "source_address": ("tcp", "http", "https", "udp", "dns", "agent"),
    "send": ("tcp", "udp", "agent"),
    "expect": ("tcp", "udp"),
    "method": ("http", "https"),
    "path": ("http", "https"),
    "host": ("http", "https"),
    "expect_status": ("http", "https"),
    "expect_body": ("http", "https"),
    "tls_verify": ("https",),
    "tls_ca_file": ("https",),
    "tls_server_name": ("https",),
    "query_name": ("dns",),
    "query_type": ("dns",),
    "expect_rcode": ("dns",),
    "command": ("exec",),
    "dynamic_weight": ("exec",),
}


def read_policy(vs: Section, port: int) -> PoolPolicy | None:
    """The pool policy keys of virtual server ``vs`` (None after recording a problem).

    ``port`` is the virtual server's (0 for fwmark), the sorry server's default
    port. The sorry server's address family is checked once the virtual server's
    is known (``check_sorry_family``: a fwmark service learns it from its real
    servers).
    """
    before = len(vs.problems.found)
    on_failure = vs.get("on_failure", lambda i: i.as_choice(ON_FAILURE), "drain")
    slow_start = vs.get("slow_start", lambda i: i.as_duration(maximum=MAX_SLOW_START), 0.0)
    min_healthy = vs.get("min_healthy", _min_healthy, None)
    quorum = vs.get("quorum", lambda i: i.as_int(0, 2**31 - 1), 1)
    hysteresis = vs.get("hysteresis", lambda i: i.as_int(0, 2**31 - 1), 0)
    sorry_section = vs.section("sorry_server")
    sorry = _sorry_server(sorry_section, port) if sorry_section is not None else None
    initial = vs.get("initial", lambda i: i.as_choice(INITIAL), "up")
    no_command: tuple[str, ...] = ()
    quorum_up = vs.get("quorum_up", _command, no_command)
    quorum_down = vs.get("quorum_down", _command, no_command)
    if quorum is not None and hysteresis is not None and hysteresis > quorum:
        vs.error(
            f"hysteresis {hysteresis} is above quorum {quorum}: the pool could never "
            "lose its quorum",
            "hysteresis",
        )
    if len(vs.problems.found) > before:
        return None
    assert on_failure is not None and slow_start is not None and initial is not None
    assert quorum is not None and hysteresis is not None
    assert quorum_up is not None and quorum_down is not None
    return PoolPolicy(
        on_failure=on_failure,
        slow_start=slow_start,
        min_healthy=min_healthy,
        quorum=quorum,
        hysteresis=hysteresis,
        sorry_server=sorry,
        initial=initial,
        quorum_up=quorum_up,
        quorum_down=quorum_down,
    )


def read_quietly(
    pairs: list[tuple[Node, Node]], port: int
) -> tuple[PoolPolicy, tuple[Check, ...]] | None:
    """The health keys of a virtual server that ``agent.config.quick`` reads: the same
    rules as ``read_policy`` and ``read_checks``, with the problems dropped (None:
    there was one, and the general reader reads the entry and reports it)."""
    scratch = Problems("")
    node = MappingNode(0)
    node.value = pairs
    vs = Section(node, "", scratch)
    item = vs.item("health_checks")
    checks = read_checks(item) if item is not None else ()
    policy = read_policy(vs, port)
    if scratch.found or checks is None or policy is None:
        return None
    check_unchecked(vs, policy, bool(checks))  # real servers' checks are not read here
    if scratch.found:
        return None  # refused: the general reader reports it
    return policy, checks


def check_sorry_family(
    vs: Section, policy: PoolPolicy | None, family: str, forwarding: str | None
) -> None:
    """A sorry server is a real server of the service, forwarded as the virtual
    server forwards: the same address family unless that is a tunnel."""
    if policy is None or policy.sorry_server is None or forwarding == "tunnel":
        return
    got = quick.address_family(policy.sorry_server.address)
    if got != family:
        vs.error(f"{got} sorry server in an {family} virtual server", "sorry_server")


# Why a pool-policy key set on a virtual server without health checks would do nothing
# (``check_unchecked``); None: it takes effect anyway.
_NEEDS_CHECKS: Final = {
    "min_healthy": "min_healthy holds in real servers whose checks fail (maintenance is "
    "never held)",
    "slow_start": "slow_start ramps up real servers that recover from failing checks",
    "initial": "initial is the state of checks before they answer",
}
_QUORUM_ACTS = "the quorum is acted on by health checks, a sorry_server, quorum_up or quorum_down"


def check_unchecked(vs: Section, policy: PoolPolicy | None, checked: bool) -> None:
    """Every pool-policy key takes effect or is refused; ``checked`` says whether the
    virtual server or any of its real servers declares ``health_checks``.

    Without checks no real server ever fails: only ``lvs-agent maint`` takes one out
    (weight 0, never held by the floor, never ramped). So ``min_healthy``,
    ``slow_start`` and ``initial`` would do nothing and are refused. The quorum is
    still tracked when something acts on it (``PoolPolicy.watches_quorum``): a
    ``sorry_server`` (serving from the start when the real servers' weights do not
    reach ``quorum + hysteresis``, e.g. with no real servers, as keepalived does, and
    when maintenance takes the weight below ``quorum - hysteresis``), ``quorum_up``
    or ``quorum_down``; ``quorum`` and ``hysteresis`` need one of these, and
    ``on_failure`` (how the real servers leave while the sorry server serves) needs
    the sorry server.
    """
    if policy is None or checked:
        return
    why = dict(_NEEDS_CHECKS)
    if not policy.watches_quorum:
        why["quorum"] = why["hysteresis"] = _QUORUM_ACTS
    if policy.sorry_server is None:
        why["on_failure"] = (
            "on_failure applies to real servers whose checks fail and to those a "
            "sorry_server replaces"
        )
    for key, reason in why.items():
        if vs.has(key):
            vs.error(
                f"{reason}; neither this virtual server nor its real servers declare "
                "health_checks",
                key,
            )


def _min_healthy(item: Item) -> MinHealthy | None:
    if item.scalar_tag == INT_TAG:
        count = item.as_int(1, 65535)
        return None if count is None else MinHealthy(count)
    text = item.as_str()
    if text is None:
        return None
    number = text.removesuffix("%").strip()
    if text.endswith("%") and number.isascii() and number.isdigit() and 1 <= int(number) <= 100:
        return MinHealthy(int(number), percent=True)
    item.error(f"must be a count of real servers (like 2) or a share (like 50%), got {text!r}")
    return None


def _sorry_server(s: Section, vs_port: int) -> SorryServer | None:
    before = len(s.problems.found)
    address = quick.unicast_item(s.item("address", required=True))
    # a fwmark service (no port of its own) may forward to port 0: the client's port
    port = s.get("port", lambda i: i.as_int(0 if not vs_port else 1, 65535), vs_port)
    weight = s.get("weight", lambda i: i.as_int(1, 65535), 1)
    s.finish()
    if len(s.problems.found) > before or address is None:
        return None
    assert port is not None and weight is not None
    return SorryServer(address, port, weight)


# --- checks ------------------------------------------------------------------------


def read_checks(item: Item) -> tuple[Check, ...] | None:
    """A ``health_checks`` list; None after recording a problem."""
    entries = item.as_list()
    if entries is None:
        return None
    before = len(item.problems.found)
    checks: list[Check] = []
    seen: dict[Check, int] = {}
    for entry in entries:
        section = entry.as_section()
        if section is None:
            continue
        check = _check(section)
        if check is None:
            continue
        if check in seen:
            entry.error(f"the same check as health_checks[{seen[check]}]")
            continue
        seen[check] = len(checks)
        checks.append(check)
    if len(item.problems.found) > before:
        return None
    return tuple(checks)


def merge(base: tuple[Check, ...], own: tuple[Check, ...] | None) -> tuple[Check, ...]:
    """A real server's effective checks: its own list replaces ``base``'s checks of
    the types it names and keeps the rest; None (no list) keeps ``base``."""
    if own is None:
        return base
    if not own:
        return ()
    replaced = {c.type for c in own}
    return tuple(c for c in base if c.type not in replaced) + own


def check_sources(rs: Section, checks: tuple[Check, ...], address: str) -> None:
    """A check's source address has the family of where the probe goes."""
    for check in checks:
        if check.source_address is None:
            continue
        target = check.connect_address or address
        if quick.address_family(check.source_address) != quick.address_family(target):
            rs.error(
                f"a {check.type} check from {check.source_address} cannot reach {target} "
                "(another address family)",
                "health_checks" if rs.has("health_checks") else None,
            )


def _check(s: Section) -> Check | None:
    before = len(s.problems.found)
    kind = s.get("type", lambda i: i.as_choice(CHECK_TYPES), None, required=True)
    defaults = Check(kind or "tcp")
    interval = s.get("interval", _interval, defaults.interval)
    timeout = s.get(
        "timeout", lambda i: i.as_duration(minimum=MIN_TIMEOUT, maximum=MAX_TIMEOUT), 1.0
    )
    rise = s.get("rise", lambda i: i.as_int(1, MAX_RISE_FALL), defaults.rise)
    fall = s.get("fall", lambda i: i.as_int(1, MAX_RISE_FALL), defaults.fall)
    fast_interval = s.get("fast_interval", _interval, None)
    down_interval = s.get("down_interval", _interval, None)
    connect_address = quick.unicast_item(s.item("connect_address"))
    connect_port = s.get("connect_port", lambda i: i.as_int(1, 65535), 0)
    source_address = quick.unicast_item(s.item("source_address"))
    send = s.get("send", _send, b"")
    expect = s.get("expect", _regex, None)
    method = s.get("method", _method, "GET")
    path = s.get("path", _path, "/")
    host = s.get("host", _host, None)
    expect_status = s.get("expect_status", _statuses, defaults.expect_status)
    expect_body = s.get("expect_body", _regex, None)
    tls_verify = s.get("tls_verify", lambda i: i.as_bool(), True)
    tls_ca_file = s.get("tls_ca_file", Item.as_absolute_path, None)
    tls_server_name = s.get("tls_server_name", _host, None)
    query_name = s.get("query_name", _dns_name, ".")
    query_type = s.get("query_type", lambda i: i.as_choice(tuple(DNS_TYPES)), "A")
    expect_rcode = s.get("expect_rcode", lambda i: i.as_choice(tuple(DNS_RCODES)), "NOERROR")
    no_command: tuple[str, ...] = ()
    command = s.get("command", _argv, no_command)
    dynamic_weight = s.get("dynamic_weight", lambda i: i.as_bool(), False)
    s.finish()
    if kind is not None:
        for key, types in _ONLY.items():
            if kind not in types and s.has(key):
                s.error(f"{key} is not a key of {kind} checks (it is for {_types(types)})", key)
        if kind == "exec" and not command:
            s.error("an exec check needs 'command' (the program and its arguments)")
    if len(s.problems.found) > before:
        return None
    assert kind is not None and interval is not None and timeout is not None
    assert rise is not None and fall is not None and connect_port is not None
    assert send is not None and method is not None and path is not None
    assert expect_status is not None and tls_verify is not None and query_name is not None
    assert query_type is not None and expect_rcode is not None and command is not None
    assert dynamic_weight is not None
    return Check(
        type=kind,
        interval=interval,
        timeout=timeout,
        rise=rise,
        fall=fall,
        fast_interval=fast_interval,
        down_interval=down_interval,
        connect_address=connect_address,
        connect_port=connect_port,
        source_address=source_address,
        send=send,
        expect=expect,
        method=method,
        path=path,
        host=host,
        expect_status=expect_status,
        expect_body=expect_body,
        tls_verify=tls_verify,
        tls_ca_file=tls_ca_file,
        tls_server_name=tls_server_name,
        query_name=query_name,
        query_type=query_type,
        expect_rcode=expect_rcode,
        command=command,
        dynamic_weight=dynamic_weight,
    )


def _types(types: tuple[str, ...]) -> str:
    return types[0] if len(types) == 1 else ", ".join(types[:-1]) + " and " + types[-1]


def _interval(item: Item) -> float | None:
    return item.as_duration(minimum=MIN_INTERVAL, maximum=MAX_INTERVAL)


def _send(item: Item) -> bytes | None:
    text = item.as_str()
    if text is None:
        return None
    data = text.encode("utf-8")
    if not data or len(data) > MAX_SEND:
        item.error(f"must be 1..{MAX_SEND} bytes (UTF-8), got {len(data)}")
        return None
    return data


def _regex(item: Item) -> str | None:
    text = item.as_str()
    if text is None:
        return None
    try:
        re.compile(text.encode("utf-8"))  # as the probes compile it: on the reply's bytes
    except re.error as exc:
        item.error(f"is not a regular expression: {exc}")
        return None
    return text


def _method(item: Item) -> str | None:
    return item.as_choice(HTTP_METHODS)


def _printable(text: str) -> bool:
    return text.isascii() and text.isprintable() and " " not in text


def _path(item: Item) -> str | None:
    text = item.as_str()
    if text is None:
        return None
    if not text.startswith("/") or not _printable(text):
        item.error(
            f"must start with '/' and be printable ASCII without spaces (%-encode them), "
            f"got {text!r}"
        )
        return None
    return text


def _host(item: Item) -> str | None:
    text = item.as_str()
    if text is None:
        return None
    if not text or not _printable(text) or len(text) > 255:
        item.error(f"must be a host name (printable ASCII, no spaces), got {text!r}")
        return None
    return text


_STATUS: Final = re.compile(r"([1-5][0-9][0-9])(?:-([1-5][0-9][0-9]))?")


def _statuses(item: Item) -> tuple[tuple[int, int], ...] | None:
    entries = [item] if item.scalar_tag else item.as_list()
    if entries is None:
        return None
    if not entries:
        item.error("must name at least one status code or range, like [200-299]")
        return None
    ranges: list[tuple[int, int]] = []
    for entry in entries:
        if entry.scalar_tag == "":
            entry.error("must be a status code (200) or a range (200-299)")
            continue
        text = entry.as_str()  # 200 keeps its spelling; true or null is refused
        if text is None:
            continue
        m = _STATUS.fullmatch(text.strip())
        lo = int(m.group(1)) if m else 0
        hi = int(m.group(2) or lo) if m else 0
        if m is None or hi < lo:
            entry.error(f"must be a status code 100..599 (200) or a range (200-299), got {text!r}")
            continue
        ranges.append((lo, hi))
    return tuple(ranges) if len(ranges) == len(entries) else None


def _dns_name(item: Item) -> str | None:
    text = item.as_str()
    if text is None:
        return None
    name = text.rstrip(".") if text != "." else ""
    labels = name.split(".") if name else []
    good = len(name) <= 253 and all(
        0 < len(label) < 64 and label.isascii() and label.isprintable() and " " not in label
        for label in labels
    )
    if not good:
        item.error(f"must be a DNS name like example.org (or '.' for the root), got {text!r}")
        return None
    return text


def _argv(item: Item) -> tuple[str, ...] | None:
    if item.scalar_tag:
        item.error(
            "must be a list: the program and its arguments, like [/usr/local/bin/check, --fast]"
            " (run without a shell)"
        )
        return None
    entries = item.as_list()
    if entries is None:
        return None
    if not entries:
        item.error("must name the program to run")
        return None
    argv: list[str | None] = [_word(e) for e in entries]
    if any(a is None for a in argv):
        return None
    return tuple(a for a in argv if a is not None)


def _command(item: Item) -> tuple[str, ...] | None:
    """A notify command: an argv list, or one command line split into words as a
    shell would split it (as the VRRP ``notify`` key is); run without a shell."""
    if item.scalar_tag == "":
        return _argv(item)
    text = item.as_str()
    if text is None:
        return None
    try:
        words = shlex.split(text)
    except ValueError as exc:
        item.error(f"cannot be split into words like a shell would: {exc}")
        return None
    if not words:
        item.error("must be a command line or a list (the program and its arguments), not empty")
        return None
    if any("\0" in w for w in words):
        item.error("must not contain NUL characters")
        return None
    return tuple(words)


def _word(item: Item) -> str | None:
    text = item.as_str()  # a number keeps its spelling: [/usr/bin/check, 5]
    if text is None:
        return None
    if not text or "\0" in text:
        item.error("must be a non-empty string without NUL characters")
        return None
    return text
