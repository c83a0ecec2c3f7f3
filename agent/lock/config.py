"""Lock settings: the ``lock:`` section of the agent's YAML, as a validated value.

Owns the mapping from configuration to ``Timing`` and the identity of this node.  The
daemon's loader turns YAML into this dataclass (durations already float seconds,
addresses ``host:port``); ``LockConfig.from_mapping`` is a convenience for that.

Must never read files (the key file is opened by ``transport.load_keyring``) or clocks.

YAML::

    lock:
      cluster: lb-prod-1
      listen: 10.0.0.11:6741
      peers: {director1: 10.0.0.11:6741, director2: 10.0.0.12:6741, witness1: 10.0.0.13:6741}
      key_file: /etc/lvs-agent/cluster.key
      lease: 1s
      # optional: node_id (when listen is a wildcard), state_dir, rho, preempt, leases,
      # and the expert overrides guard / acceptor_lease / quarantine / renew_interval.

``peers`` lists every member, this node included; every member is an acceptor, and a
member that never campaigns (a witness) is just a node whose daemon never calls
``campaign``.  Quorum is a majority of ``peers``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from agent.lock.timing import DEFAULT_RHO, Timing
from agent.lock.wire import MAX_NAME

DEFAULT_PORT: Final = 6741
DEFAULT_STATE_DIR: Final = Path("/var/lib/lvs-agent")


class LockConfigError(ValueError):
    """The lock section is invalid; the message names the key."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_endpoint(text: str) -> Endpoint:
    """``10.0.0.11:6741``, ``[fd00::1]:6741`` or a bare address (default port)."""
    text = text.strip()
    host, port = text, DEFAULT_PORT
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise LockConfigError(f"bad address {text!r}")
        host = text[1:close]
        rest = text[close + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise LockConfigError(f"bad address {text!r}")
            port = _port(rest[1:], text)
    elif text.count(":") == 1:
        host, p = text.split(":")
        port = _port(p, text)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise LockConfigError(f"{text!r}: host must be an IP address") from None
    return Endpoint(host, port)


def _port(text: str, whole: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise LockConfigError(f"bad port in {whole!r}") from None
    if not 1 <= port <= 65535:
        raise LockConfigError(f"port out of range in {whole!r}")
    return port


def _name(value: str, key: str) -> str:
    if not value or len(value.encode()) > MAX_NAME:
        raise LockConfigError(f"{key}: must be 1..{MAX_NAME} bytes")
    return value


@dataclass(frozen=True, slots=True)
class LockConfig:
    cluster: str
    listen: Endpoint
    peers: Mapping[str, Endpoint]
    key_file: Path
    lease: float = 1.0
    node_id: str = ""  # "" = the peer whose address equals ``listen``
    state_dir: Path = DEFAULT_STATE_DIR
    rho: float = DEFAULT_RHO
    preempt: bool = False
    # Expert overrides (None = derived from ``lease``; see timing.py).  Every node must use
    # the same values — the timing fingerprint refuses mismatched peers.
    guard: float | None = None
    acceptor_lease: float | None = None
    quarantine: float | None = None
    renew_interval: float | None = None
    leases: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        _name(self.cluster, "cluster")
        if not self.peers:
            raise LockConfigError("peers: at least one member is required")
        for name in self.peers:
            _name(name, "peers")
        for name in self.leases:
            _name(name, "leases")
        me = self.node_id or self._derive_node_id()
        if me not in self.peers:
            raise LockConfigError(f"node_id {me!r} is not in peers")
        object.__setattr__(self, "node_id", me)
        self.timing()  # validates durations (raises TimingError, a ValueError)

    def _derive_node_id(self) -> str:
        matches = [n for n, ep in self.peers.items() if ep == self.listen]
        if len(matches) != 1:
            raise LockConfigError(
                "node_id: cannot tell which peer this node is from 'listen'; set node_id"
            )
        return matches[0]

    def timing(self) -> Timing:
        base = Timing.from_lease(self.lease, self.rho)
        if all(
            v is None
            for v in (self.guard, self.acceptor_lease, self.quarantine, self.renew_interval)
        ):
            return base
        return Timing(
            lease=self.lease,
            guard=base.guard if self.guard is None else self.guard,
            acceptor_lease=(
                base.acceptor_lease if self.acceptor_lease is None else self.acceptor_lease
            ),
            quarantine=base.quarantine if self.quarantine is None else self.quarantine,
            renew_interval=(
                base.renew_interval if self.renew_interval is None else self.renew_interval
            ),
            rho=self.rho,
        )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> LockConfig:
        """Build from an already-parsed mapping (durations in float seconds)."""
        known = {
            "cluster", "listen", "peers", "key_file", "lease", "node_id", "state_dir", "rho",
            "preempt", "guard", "acceptor_lease", "quarantine", "renew_interval", "leases",
        }  # fmt: skip
        unknown = set(data) - known
        if unknown:
            raise LockConfigError(f"unknown keys: {', '.join(sorted(unknown))}")
        for key in ("cluster", "listen", "peers", "key_file"):
            if key not in data:
                raise LockConfigError(f"{key}: required")
        peers = data["peers"]
        if not isinstance(peers, Mapping):
            raise LockConfigError("peers: must be a mapping name -> address")
        kwargs: dict[str, Any] = {
            "cluster": str(data["cluster"]),
            "listen": parse_endpoint(str(data["listen"])),
            "peers": {str(k): parse_endpoint(str(v)) for k, v in peers.items()},
            "key_file": Path(str(data["key_file"])),
        }
        for key in ("lease", "rho", "guard", "acceptor_lease", "quarantine", "renew_interval"):
            if data.get(key) is not None:
                kwargs[key] = float(data[key])
        if "node_id" in data:
            kwargs["node_id"] = str(data["node_id"])
        if "state_dir" in data:
            kwargs["state_dir"] = Path(str(data["state_dir"]))
        if "preempt" in data:
            kwargs["preempt"] = bool(data["preempt"])
        if "leases" in data:
            kwargs["leases"] = tuple(str(x) for x in data["leases"])
        return cls(**kwargs)
