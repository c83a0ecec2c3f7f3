"""Validate the ``lock:`` section (the quorum lease lock) and ``witness:`` files.

Builds ``agent.lock.LockConfig`` values with every problem reported at its
file:line:key, like the rest of the loader; the rules that relate durations to
one another (``Timing``) and peers to ``listen`` are ``LockConfig``'s own and are
reported here against the key they concern. Never reads the key file.
"""

from __future__ import annotations

from pathlib import Path

from agent.config.reader import Item, ScalarNode, Section
from agent.lock.config import Endpoint, LockConfig, LockConfigError, parse_endpoint
from agent.lock.timing import MIN_LEASE, TimingError
from agent.lock.wire import MAX_NAME

MAX_PEERS = 15  # a quorum of 8; more directors than that is a misunderstanding


def _lock_name(item: Item) -> str | None:
    value = item.as_str()
    if value is not None and (
        not value
        or len(value.encode()) > MAX_NAME
        or not all(c.isalnum() or c in "-_." for c in value)
    ):
        item.error(f"must be 1..{MAX_NAME} characters of letters, digits, '-', '_' or '.'")
        return None
    return value


def _endpoint(item: Item) -> Endpoint | None:
    text = item.as_str()
    if text is None:
        return None
    try:
        return parse_endpoint(text)
    except LockConfigError as exc:
        item.error(f"{exc}; write address:port, IPv6 as [address]:port")
        return None


def _peers(s: Section) -> dict[str, Endpoint] | None:
    section = s.section("peers", required=True)
    if section is None:
        return None
    peers: dict[str, Endpoint] = {}
    ok = True
    seen: dict[Endpoint, str] = {}
    for key_node, _ in section.node.value:
        if not isinstance(key_node, ScalarNode):
            ok = False  # reported by Section
            continue
        name = str(key_node.value)
        item = section.item(name)
        if item is None:
            section.error(f"peer {name!r} needs an address", name)
            ok = False
            continue
        if _lock_name(Item(key_node, section.path, s.problems, name)) is None:
            ok = False
            continue
        ep = _endpoint(item)
        if ep is None:
            ok = False
            continue
        if ep in seen:
            item.error(f"{ep} is also the address of peer {seen[ep]!r}")
            ok = False
        seen.setdefault(ep, name)
        peers[name] = ep
    section.finish()
    if ok and not peers:
        s.error("needs at least one member (every director and witness, this node too)", "peers")
        return None
    if len(peers) > MAX_PEERS:
        s.error(f"at most {MAX_PEERS} members", "peers")
        return None
    return peers if ok else None


def read_lock_section(
    s: Section,
    default_state_dir: str,
    leases: tuple[str, ...] = (),
    lines: dict[str, int] | None = None,
) -> LockConfig | None:
    """One cluster's settings from a ``lock:`` mapping (or a witness ``clusters`` entry).
    ``lines`` receives the lines of ``key_file`` and ``state_dir``."""
    before = len(s.problems.found)
    cluster = s.get("cluster", _lock_name, None, required=True)
    listen = s.get("listen", _endpoint, None, required=True)
    peers = _peers(s)
    key_file = s.get("key_file", Item.as_absolute_path, None, required=True)
    lease = s.get("lease", lambda i: i.as_duration(MIN_LEASE, 3600), 1.0)
    node_id = s.get("node_id", _lock_name, "")
    state_dir = s.get("state_dir", Item.as_absolute_path, default_state_dir)
    rho_item = s.item("clock_error_ppm")
    rho = 1e-3
    if rho_item is not None:
        ppm = rho_item.as_int(0, 99_999)
        rho = ppm / 1e6 if ppm is not None else rho
    overrides = {
        key: s.get(key, lambda i: i.as_duration(0.001, 3600), None)
        for key in ("guard", "acceptor_lease", "quarantine", "renew_interval")
    }
    s.finish()
    for key in ("key_file", "state_dir"):
        item = s.item(key)
        if item is not None and lines is not None:
            lines[item.path] = item.line
    if len(s.problems.found) > before:
        return None
    assert cluster and listen and peers and key_file and lease and state_dir is not None
    # preempt is per lease: the VRRP instance's (or sync group's) own ``preempt``.
    try:
        return LockConfig(
            cluster=cluster,
            listen=listen,
            peers=peers,
            key_file=Path(key_file),
            lease=lease,
            node_id=node_id or "",
            state_dir=Path(state_dir),
            rho=rho,
            leases=leases,
            guard=overrides["guard"],
            acceptor_lease=overrides["acceptor_lease"],
            quarantine=overrides["quarantine"],
            renew_interval=overrides["renew_interval"],
        )
    except TimingError as exc:
        key = next((k for k, v in overrides.items() if v is not None), "lease")
        s.error(f"{exc} (every member must use the same durations)", key)
    except LockConfigError as exc:
        if node_id:
            s.error(f"{exc}", "node_id")
        elif str(exc).startswith("node_id"):
            s.error(
                "is not the address of exactly one of the peers; which peer is this node? "
                "set node_id",
                "listen",
            )
        else:
            s.error(str(exc), "peers")
    return None


def read_witness(
    root: Section, default_state_dir: str, lines: dict[str, int] | None = None
) -> tuple[LockConfig, ...]:
    """The clusters a witness serves: ``witness: {clusters: [...]}`` and/or ``lock:``.

    A witness is an acceptor in each cluster; it never campaigns, so it declares no
    lease names up front (an acceptor learns them from the proposers' messages).
    """
    found: list[LockConfig] = []
    lock = root.section("lock")
    if lock is not None:
        cfg = read_lock_section(lock, default_state_dir, lines=lines)
        if cfg is not None:
            found.append(cfg)
    witness = root.section("witness")
    if witness is not None:
        for item in witness.items("clusters"):
            s = item.as_section()
            if s is None:
                continue
            cfg = read_lock_section(s, default_state_dir, lines=lines)
            if cfg is not None:
                found.append(cfg)
        witness.finish()
    return tuple(found)
