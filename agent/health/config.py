"""What a health check is and what a virtual server does with its results: frozen values.

This module owns the check and pool-policy value types, their defaults, and the
check's identity (``check_key``). It must never do I/O, parse YAML or know about
the scheduler: the configuration loader builds these objects (and reports bad
values with file:line:key); the core and the scheduler only read them.

Defaults are the ones HAProxy and keepalived users expect:

- ``interval`` 2 s, ``rise`` 2, ``fall`` 3: HAProxy's ``inter``/``rise``/``fall``.
- ``timeout`` 1 s (HAProxy caps a check's connect and response at ``inter``;
  keepalived's ``connect_timeout`` defaults to 5 s, too slow to drain in seconds).
- ``fast_interval`` and ``down_interval`` default to ``interval``, as HAProxy's
  ``fastinter``/``downinter`` do when unset.
- ``on_failure: drain`` (weight 0, keepalived's ``inhibit_on_failure``),
  ``initial: up`` (keepalived without ``alpha``), ``quorum`` 1 and ``hysteresis`` 0
  (keepalived's defaults), ``slow_start`` off, ``min_healthy`` off.
- https verifies certificates (``tls_verify: true``); http expects a 2xx status
  (keepalived expects 200; HAProxy also takes 3xx, but a redirect to a login
  page is not a healthy application).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Final

CHECK_TYPES: Final = ("tcp", "http", "https", "udp", "dns", "exec", "agent")
ON_FAILURE: Final = ("drain", "remove")
INITIAL: Final = ("up", "down")
DNS_TYPES: Final = {
    "A": 1,
    "NS": 2,
    "CNAME": 5,
    "SOA": 6,
    "PTR": 12,
    "MX": 15,
    "TXT": 16,
    "AAAA": 28,
    "SRV": 33,
}
DNS_RCODES: Final = {
    "NOERROR": 0,
    "FORMERR": 1,
    "SERVFAIL": 2,
    "NXDOMAIN": 3,
    "NOTIMP": 4,
    "REFUSED": 5,
}


@dataclass(frozen=True, slots=True)
class Check:
    """One check as declared. Addresses and ports left empty/0 mean the real server's own.

    ``send`` and ``expect`` serve tcp, udp (and ``send`` the agent check);
    ``expect_status`` holds inclusive ranges, ``(200, 200)`` for a single code.
    """

    type: str
    interval: float = 2.0
    timeout: float = 1.0
    rise: int = 2
    fall: int = 3
    fast_interval: float | None = None  # None: ``interval``
    down_interval: float | None = None  # None: ``interval``
    connect_address: str | None = None
    connect_port: int = 0
    source_address: str | None = None
    # tcp / udp / agent
    send: bytes = b""
    expect: str | None = None  # regex on the reply (bytes pattern, compiled by the probe)
    # http / https
    method: str = "GET"
    path: str = "/"
    host: str | None = None  # Host header; None: the target address
    expect_status: tuple[tuple[int, int], ...] = ((200, 299),)  # a redirect is not health
    expect_body: str | None = None
    tls_verify: bool = True
    tls_ca_file: str | None = None
    tls_server_name: str | None = None  # SNI and the name verified; None: ``host``
    # dns
    query_name: str = "."
    query_type: str = "A"
    expect_rcode: str = "NOERROR"
    # exec
    command: tuple[str, ...] = ()
    dynamic_weight: bool = False  # keepalived's misc_dynamic exit-status mapping

    @property
    def fast(self) -> float:
        return self.interval if self.fast_interval is None else self.fast_interval

    @property
    def down(self) -> float:
        return self.interval if self.down_interval is None else self.down_interval


@dataclass(frozen=True, slots=True)
class Target:
    """Where one check's probe goes, resolved against its real server."""

    address: str
    port: int
    source_address: str | None = None


@dataclass(frozen=True, slots=True)
class CheckKey:
    """A check's identity: its type, its target and every field of the check.

    Two real servers (of two virtual servers, say the same backends behind an
    IPv4 VIP on ports 80 and 443) that declare the same check against the same
    target share ONE probe and one rise/fall state (keepalived #2111, #2358).
    Every field takes part, timing included: checks that differ in ``rise`` or
    ``interval`` cannot share a state, and a reload that changes a check starts
    that check afresh while unchanged ones keep theirs.
    """

    check: Check
    target: Target

    @property
    def type(self) -> str:
        return self.check.type


def check_key(check: Check, address: str, port: int) -> CheckKey:
    """The identity of ``check`` declared on the real server ``address:port``.

    The connect and source addresses move into the target, so ``connect_port:
    8080`` declared on a real server on port 8443 and a plain check on the real
    server at port 8080 are one probe.
    """
    return CheckKey(
        replace(check, connect_address=None, connect_port=0, source_address=None),
        Target(
            check.connect_address or address,
            check.connect_port or port,
            check.source_address,
        ),
    )


@dataclass(frozen=True, slots=True)
class MinHealthy:
    """The pool floor: a count, or a percentage of the virtual server's real servers."""

    value: int
    percent: bool = False

    def floor(self, members: int) -> int:
        if not self.percent:
            return min(self.value, members)
        return -(-self.value * members // 100)  # ceiling: 50 % of 3 keeps 2


@dataclass(frozen=True, slots=True)
class SorryServer:
    address: str
    port: int
    weight: int = 1


@dataclass(frozen=True, slots=True)
class PoolPolicy:
    """What a virtual server does with its real servers' health."""

    on_failure: str = "drain"  # drain: weight 0 | remove: out of the table
    slow_start: float = 0.0  # seconds of linear ramp after recovery; 0: off
    min_healthy: MinHealthy | None = None  # None: no floor
    quorum: int = 1  # summed healthy weight needed; below it the sorry server is used
    hysteresis: int = 0
    sorry_server: SorryServer | None = None
    initial: str = "up"  # state of a real server's checks before their first result
    quorum_up: tuple[str, ...] = ()  # argv run when the quorum is regained; (): none
    quorum_down: tuple[str, ...] = ()  # argv run when the quorum is lost; (): none

    @property
    def watches_quorum(self) -> bool:
        """Whether something acts on the quorum besides checks: a sorry server or a
        quorum command. Such a pool is decided even without health checks (its
        quorum can be unmet from the start, and ``lvs-agent maint`` moves it)."""
        return self.sorry_server is not None or bool(self.quorum_up or self.quorum_down)


@dataclass(frozen=True, slots=True)
class Member:
    """A real server as the health engine sees it: its key, weight and checks."""

    address: str
    port: int
    weight: int
    checks: tuple[CheckKey, ...] = ()

    @property
    def key(self) -> tuple[str, int]:
        return (self.address, self.port)


@dataclass(frozen=True, slots=True)
class Pool:
    """A virtual server's real servers and policy, keyed by the virtual server's name."""

    name: str
    members: tuple[Member, ...]
    policy: PoolPolicy = field(default_factory=PoolPolicy)


def member(address: str, port: int, weight: int, checks: tuple[Check, ...]) -> Member:
    """A ``Member`` whose checks are keyed against ``address:port``."""
    return Member(address, port, weight, tuple(check_key(c, address, port) for c in checks))
