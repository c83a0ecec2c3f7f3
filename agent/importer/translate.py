"""Translate keepalived statements into this agent's configuration document.

Pure: statements in, a ``yamlout.Map`` and the list of what was left out (with
file:line and why) out. Owns the keyword mapping and keepalived's defaults where
they differ from the agent's (VRRP version 2, delay_loop 60 s, connect_timeout
5 s, a failed real server removed unless ``inhibit_on_failure``). Never reads
files, never validates the result (``lvs-agent check-config`` does that).

keepalived's checker timing is not rise/fall: a real server that is up is retried
``retry`` times, ``delay_before_retry`` apart, before it goes down; a real server that
is down comes back on its first success, checked every ``delay_loop``. That is
``rise: 1``, ``fall: retry + 1``, ``fast_interval: delay_before_retry``,
``interval`` and ``down_interval`` = ``delay_loop``, ``timeout`` = ``connect_timeout``.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from dataclasses import dataclass, field

from agent.config.duration import format_duration
from agent.config.model import SCHEDULERS
from agent.importer.parser import Statement
from agent.importer.yamlout import Element, Entry, Map, Seq

NOT_SUPPORTED = "not supported"
NO_EQUIVALENT = "no equivalent"
DIFFERS = "differs"

FLAGS = ("sh-port", "sh-fallback", "mh-port", "mh-fallback", "flag-1", "flag-2", "flag-3")
LB_KINDS = {"NAT": "nat", "DR": "dr", "TUN": "tunnel"}
DEFAULT_DELAY_LOOP = 60.0
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_DELAY_BEFORE_RETRY = 1.0
CHECKERS = {
    "TCP_CHECK": "tcp",
    "HTTP_GET": "http",
    "SSL_GET": "https",
    "DNS_CHECK": "dns",
    "UDP_CHECK": "udp",
    "MISC_CHECK": "exec",
}
GARP_GLOBALS = {
    "vrrp_garp_master_delay": "delay",
    "vrrp_garp_master_repeat": "repeat",
    "vrrp_garp_master_refresh": "refresh",
    "vrrp_garp_lower_prio_repeat": "lower_prio_repeat",
    "vrrp_garp_lower_prio_delay": "lower_prio_delay",
}
GARP_INSTANCE = {
    "garp_master_delay": "delay",
    "garp_master_repeat": "repeat",
    "garp_master_refresh": "refresh",
    "garp_lower_prio_repeat": "lower_prio_repeat",
    "garp_lower_prio_delay": "lower_prio_delay",
}
GARP_DURATIONS = ("delay", "refresh", "lower_prio_delay")


@dataclass(frozen=True)
class Skipped:
    """A keyword that was not translated."""

    file: str
    line: int
    keyword: str
    why: str  # NOT_SUPPORTED | NO_EQUIVALENT | DIFFERS
    detail: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.keyword}: {self.why}: {self.detail}"


@dataclass
class Result:
    document: Map
    skipped: list[Skipped] = field(default_factory=list)


class _Bad(Exception):
    """An argument keepalived would not take either: the keyword is skipped."""


def translate(statements: list[Statement]) -> Result:
    return _Translator().run(statements)


def _num(s: Statement, index: int = 0, *, low: float | None = None) -> float:
    try:
        value = float(s.args[index])
    except (IndexError, ValueError):
        raise _Bad(f"expects a number, got {' '.join(s.args) or 'nothing'}") from None
    if low is not None and value < low:
        raise _Bad(f"must be at least {low:g}")
    return value


def _int(s: Statement, index: int = 0) -> int:
    value = _num(s, index)
    if value != int(value):
        raise _Bad(f"expects a whole number, got {s.args[index]}")
    return int(value)


def _arg(s: Statement, index: int = 0) -> str:
    if len(s.args) <= index:
        raise _Bad("expects a value")
    return s.args[index]


def _command_line(s: Statement) -> str:
    """A keepalived notify script as one command line (the agent splits it into words,
    as keepalived does): its one argument, or its several words joined."""
    if not s.args:
        raise _Bad("expects a command")
    line = s.args[0] if len(s.args) == 1 else shlex.join(s.args)
    try:
        if shlex.split(line):
            return line
    except ValueError as exc:
        raise _Bad(str(exc)) from None
    raise _Bad("expects a command")


def _dur(seconds: float) -> str:
    return format_duration(seconds)


def _address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise _Bad(f"{text!r} is not an IP address") from None


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise _Bad(f"{text!r} is not a port")
    return int(text)


def _safe_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:64]
    return name or "unnamed"


def _words(s: Statement) -> str:
    return " ".join([s.keyword, *s.args])


class _Translator:
    def __init__(self) -> None:
        self.skipped: list[Skipped] = []
        self.vrrp_version = 2  # keepalived's default
        self.garp_defaults: dict[str, tuple[float | int, Statement]] = {}
        self.scripts: dict[str, Statement] = {}
        self.groups: dict[str, Statement] = {}
        self.node: Map | None = None
        self.ipvs: Map | None = None
        self.names: set[str] = set()
        self.synced: dict[str, bool] = {}  # sync group member -> tracker weights apply

    def skip(self, s: Statement, why: str, detail: str, keyword: str | None = None) -> None:
        self.skipped.append(Skipped(s.file, s.line, keyword or s.keyword, why, detail))

    def run(self, statements: list[Statement]) -> Result:
        doc = Map()
        # Definitions first: keepalived resolves scripts and groups by name wherever they are.
        for s in statements:
            if s.keyword == "global_defs":
                self.global_defs(s)
            elif s.keyword == "vrrp_script" and s.args:
                self.scripts[s.args[0]] = s
            elif s.keyword == "virtual_server_group" and s.args:
                self.groups[s.args[0]] = s
            elif s.keyword == "vrrp_sync_group":
                # keepalived ignores tracker weights in a sync group unless it says otherwise:
                # a failing tracker puts the member (and so the group) in FAULT.
                weighted = any(c.keyword == "sync_group_tracking_weight" for c in s.children)
                for c in s.children:
                    if c.keyword == "group":
                        for m in c.children:
                            for name in (m.keyword, *m.args):
                                self.synced[name] = weighted
        if self.node is not None:
            doc.add("node", self.node)
        if self.ipvs is not None:
            doc.add("ipvs", self.ipvs)
        servers, instances, sync_groups = Seq(), Seq(), Seq()
        used_scripts: set[str] = set()
        for s in statements:
            try:
                if s.keyword in ("global_defs", "virtual_server_group"):
                    continue
                if s.keyword == "vrrp_script":
                    if not s.args:
                        raise _Bad("needs a name")
                    continue
                if s.keyword == "virtual_server":
                    self.virtual_server(s, servers)
                elif s.keyword == "vrrp_instance":
                    _vrrp_instance(self, s, instances, used_scripts)
                elif s.keyword == "vrrp_sync_group":
                    _sync_group(self, s, sync_groups)
                else:
                    self.skip(s, NOT_SUPPORTED, "this block has no counterpart in lvs-agent")
            except _Bad as exc:
                self.skip(s, NOT_SUPPORTED, str(exc))
        for name, s in self.scripts.items():
            if name not in used_scripts:
                self.skip(s, NO_EQUIVALENT, f"script {name!r} is tracked by no vrrp_instance")
        if servers.elements:
            doc.add("virtual_servers", servers)
        if instances.elements:
            doc.add("vrrp_instances", instances)
        if sync_groups.elements:
            doc.add("vrrp_sync_groups", sync_groups)
        return Result(doc, self.skipped)

    # --- global_defs --------------------------------------------------------------

    def global_defs(self, block: Statement) -> None:
        for s in block.children:
            try:
                self.global_def(s)
            except _Bad as exc:
                self.skip(s, NOT_SUPPORTED, str(exc))

    def global_def(self, s: Statement) -> None:
        k = s.keyword
        if k in ("router_id", "lvs_id"):
            name = _safe_name(_arg(s))
            if name != _arg(s):
                self.skip(s, DIFFERS, f"node names take letters, digits, '-', '_', '.': {name!r}")
            self.node = self.node or Map()
            self.node.replace("name", name, s.where)
        elif k in ("vrrp_rt_priority", "checker_rt_priority"):
            # VRRP and the checks share the agent's one loop: the higher priority wins.
            priority = _int(s)
            if not 1 <= priority <= 99:
                raise _Bad("must be 1..99")
            self.node = self.node or Map()
            before = self.node.get("realtime_priority")
            if isinstance(before, int) and before >= priority:
                self.skip(s, DIFFERS, f"VRRP and checks share one loop: {before} is kept")
                return
            self.node.replace("realtime_priority", priority, s.where)
        elif k == "vrrp_version":
            version = _int(s)
            if version not in (2, 3):
                raise _Bad("must be 2 or 3")
            self.vrrp_version = version
        elif k in GARP_GLOBALS:
            value: float | int = _int(s) if "repeat" in k else _num(s, low=0)
            self.garp_defaults[GARP_GLOBALS[k]] = (value, s)
        elif k == "lvs_timeouts":
            self.lvs_timeouts(s)
        elif k in ("script_user", "enable_script_security"):
            self.skip(s, NO_EQUIVALENT, "the agent runs scripts as the user it runs as")
        elif k == "lvs_flush":
            self.skip(s, DIFFERS, "the agent never flushes: it changes only the services it owns")
        elif k in ("notification_email", "notification_email_from", "smtp_server") or k.startswith(
            "smtp_"
        ):
            self.skip(s, NO_EQUIVALENT, "the agent sends no mail; alert on its metrics")
        else:
            self.skip(s, NOT_SUPPORTED, "global setting without a counterpart")

    def lvs_timeouts(self, s: Statement) -> None:
        names = {"tcp": "tcp", "tcpfin": "tcp_fin", "udp": "udp"}
        timeouts = Map()
        args = list(s.args)
        while args:
            key = args.pop(0)
            if key not in names or not args:
                raise _Bad(f"unknown or incomplete part {key!r} (tcp, tcpfin, udp take seconds)")
            seconds = args.pop(0)
            if not seconds.isdigit() or int(seconds) < 1:
                raise _Bad(f"{key} takes whole seconds, got {seconds!r}")
            timeouts.add(names[key], _dur(int(seconds)), s.where)
        if timeouts.entries:
            self.ipvs = Map()
            self.ipvs.add("timeouts", timeouts, s.where)

    # --- virtual servers ------------------------------------------------------------

    def _unique(self, name: str) -> str:
        base, n = name, 2
        while name in self.names:
            name = f"{base[:60]}-{n}"
            n += 1
        self.names.add(name)
        return name

    def virtual_server(self, s: Statement, out: Seq) -> None:
        if len(s.args) == 2 and s.args[0] == "fwmark":
            mark = _int(s, 1)
            if not 1 <= mark <= 2**32 - 1:
                raise _Bad("fwmark must be 1..4294967295")
            self.service(s, out, [("fwmark", mark, None, s)])
        elif len(s.args) == 2 and s.args[0] == "group":
            group = self.groups.get(s.args[1])
            if group is None:
                raise _Bad(f"no virtual_server_group named {s.args[1]!r}")
            self.service(s, out, self.group_members(group))
        elif len(s.args) == 2:
            self.service(s, out, [("address", _address(s.args[0]), _port(s.args[1]), s)])
        else:
            raise _Bad("expects IP PORT, fwmark N or group NAME")

    def group_members(self, group: Statement) -> list[tuple[str, object, int | None, Statement]]:
        members: list[tuple[str, object, int | None, Statement]] = []
        for m in group.children:
            words = [m.keyword, *m.args]
            try:
                if words[0] == "fwmark" and len(words) == 2:
                    members.append(("fwmark", _int(m, 0), None, m))
                elif len(words) == 2:
                    first, _, last = words[0].partition("-")
                    port = _port(words[1])
                    start = ipaddress.ip_address(first)
                    count = 1
                    if last:  # keepalived's range: 10.0.0.1-10 varies the last part
                        if not last.isdigit() and start.version == 4:
                            raise _Bad(f"bad range {words[0]!r}")
                        end = int(last) if start.version == 4 else int(last, 16)
                        tail = int(start) & (0xFF if start.version == 4 else 0xFFFF)
                        if end < tail:
                            raise _Bad(f"bad range {words[0]!r}")
                        count = end - tail + 1
                    for i in range(count):
                        members.append(("address", str(start + i), port, m))
                else:
                    raise _Bad("expects IP[-LAST] PORT or fwmark N")
            except (_Bad, ValueError) as exc:
                self.skip(m, NOT_SUPPORTED, str(exc), _words(m))
        if not members:
            raise _Bad(f"virtual_server_group {group.args[0]!r} has no usable member")
        return members

    def service(
        self,
        s: Statement,
        out: Seq,
        identities: list[tuple[str, object, int | None, Statement]],
    ) -> None:
        body = _ServiceBody(self, s)
        for kind, value, port, origin in identities:
            vs = Map()
            if kind == "fwmark":
                vs.add("name", self._unique(f"fwmark-{value}"), origin.where)
                vs.add("fwmark", value, origin.where)  # type: ignore[arg-type]
            else:
                address = str(value)
                protocol = body.protocol or "udp"
                vs.add(
                    "name", self._unique(_safe_name(f"{protocol}-{address}-{port}")), origin.where
                )
                vs.add("address", address, origin.where)
                vs.add("port", port, origin.where)
                if body.protocol is None:
                    vs.add("protocol", "udp", s.where, ["keepalived's default without protocol"])
            body.fill(vs, kind == "fwmark", port)
            out.add(vs, f"{s.where} {_words(s)}")
        body.report()


class _ServiceBody:
    """A virtual_server block read once; written into each of its identities."""

    def __init__(self, t: _Translator, s: Statement) -> None:
        self.t = t
        self.s = s
        self.protocol: str | None = None
        self.entries: list[tuple[str, object, str, list[str]]] = []  # key, value, where, notes
        self.delay_loop = DEFAULT_DELAY_LOOP
        self.forwarding = "nat"
        self.persistence: Map | None = None
        self.flags: list[str] = []
        self.inhibit: Statement | None = None
        self.real_servers: list[Statement] = []
        self.commands: list[tuple[str, str, Statement]] = []  # quorum_up/_down: key, line
        self.quorum: list[Statement] = []  # quorum, hysteresis
        self.alpha: Statement | None = None
        self.fwmark = s.args[:1] == ["fwmark"]
        protocol_stmt: Statement | None = None
        for c in s.children:
            try:
                if c.keyword == "protocol":
                    protocol_stmt = c
                    p = _arg(c).lower()
                    if p not in ("tcp", "udp", "sctp"):
                        raise _Bad("TCP, UDP or SCTP")
                    self.protocol = p
                elif c.keyword == "delay_loop":
                    self.delay_loop = _num(c, low=0.001)
            except _Bad as exc:
                t.skip(c, NOT_SUPPORTED, str(exc))
        if self.fwmark and protocol_stmt is not None:
            t.skip(protocol_stmt, NO_EQUIVALENT, "a fwmark service matches what its mark selects")
            self.protocol = None
        for c in s.children:
            try:
                self.read(c)
            except _Bad as exc:
                t.skip(c, NOT_SUPPORTED, str(exc))

    def read(self, c: Statement) -> None:
        k, t = c.keyword, self.t
        if k in ("protocol", "delay_loop"):
            return
        if k in ("lb_algo", "lvs_sched"):
            algo = _arg(c)
            if algo not in SCHEDULERS:
                raise _Bad(f"unknown scheduler {algo!r}")
            self.entries.append(("scheduler", algo, c.where, []))
        elif k in ("lb_kind", "lvs_method"):
            kind = _arg(c).upper()
            if kind not in LB_KINDS:
                raise _Bad("NAT, DR or TUN")
            self.forwarding = LB_KINDS[kind]
            self.entries.append(("forwarding", self.forwarding, c.where, []))
            if len(c.args) > 1:
                t.skip(c, NOT_SUPPORTED, "tunnel options of lb_kind (use tunnel_type in YAML)")
        elif k == "persistence_timeout":
            seconds = _int(c) if c.args else 360  # keepalived: 6 minutes without a value
            self.persistence = self.persistence or Map()
            self.persistence.entries.insert(0, Entry("timeout", _dur(seconds), c.where))
        elif k == "persistence_granularity":
            self.persistence = self.persistence or Map()
            mask = _arg(c)
            self.persistence.add("netmask", int(mask) if mask.isdigit() else mask, c.where)
        elif k == "persistence_engine":
            self.persistence = self.persistence or Map()
            self.persistence.add("engine", _arg(c), c.where)
        elif k in FLAGS:
            self.flags.append(k)
            self.entries.append(("", k, c.where, []))
        elif k == "ops":
            if self.protocol in ("tcp", "sctp"):
                t.skip(c, DIFFERS, f"keepalived drops one-packet scheduling on {self.protocol}")
            else:
                self.entries.append(("one_packet", True, c.where, []))
        elif k == "sorry_server":
            sorry = Map()
            sorry.add("address", _address(_arg(c, 0)), c.where)
            sorry.add("port", _port(_arg(c, 1)) if len(c.args) > 1 else 0, c.where)
            self.entries.append(("sorry_server", sorry, c.where, []))
        elif k in ("quorum", "hysteresis"):
            self.entries.append((k, _int(c), c.where, []))
            self.quorum.append(c)
        elif k == "alpha":
            self.alpha = c
            self.entries.append(
                ("initial", "down", c.where, ["keepalived alpha: real servers start down"])
            )
        elif k == "inhibit_on_failure":
            self.inhibit = c
        elif k == "real_server":
            self.real_servers.append(c)
        elif k == "virtualhost":
            t.skip(c, NO_EQUIVALENT, "set host on the http checks it is meant for")
        elif k in ("quorum_up", "quorum_down"):
            self.commands.append((k, _command_line(c), c))
        elif k == "sorry_server_inhibit":
            t.skip(c, DIFFERS, "the sorry server is added with its weight while quorum is lost")
        elif k == "ha_suspend":
            t.skip(c, NO_EQUIVALENT, "checks run on every director, backups included")
        else:
            t.skip(c, NOT_SUPPORTED, "virtual_server setting without a counterpart")

    def fill(self, vs: Map, fwmark: bool, port: int | None) -> None:
        if self.protocol and not fwmark:
            vs.add("protocol", self.protocol, self.s.where)
        flags = Seq()
        quorum = next((v for k, v, _, _ in self.entries if k == "quorum"), 1)
        checked, watched = self.checked(), self.watched()
        for key, value, where, notes in self.entries:
            if (key in ("quorum", "hysteresis") and not watched) or (
                key == "initial" and not checked
            ):
                continue  # it would do nothing: left out in report()
            if key == "":
                flags.add(value, where)  # type: ignore[arg-type]
            elif key == "hysteresis" and isinstance(quorum, int) and value >= quorum:  # type: ignore[operator]
                note = f"keepalived lowers hysteresis {value} to quorum - 1"
                vs.add(key, max(quorum - 1, 0), where, [note])
            else:
                vs.add(key, value, where, notes)  # type: ignore[arg-type]
        if watched:
            for key, command, c in self.commands:  # else left out in report()
                vs.add(key, command, c.where)
        if flags.elements:
            vs.add("scheduler_flags", flags)
        if self.persistence is not None:
            if not any(e.key == "timeout" for e in self.persistence.entries):
                self.persistence.entries.insert(0, Entry("timeout", "6m", self.s.where))
            vs.add("persistence", self.persistence)
        rs_inhibit = [
            self.inhibit is not None or _has(r, "inhibit_on_failure") for r in self.real_servers
        ]
        if checked or self.sorry():
            # keepalived takes the real servers out the same way when the sorry server
            # comes in (``perform_quorum_state``)
            drain = self.inhibit is not None or (bool(rs_inhibit) and all(rs_inhibit))
            where = self.inhibit.where if self.inhibit is not None else self.s.where
            note = (
                "keepalived inhibit_on_failure"
                if drain
                else "keepalived removes a failed real server"
            )
            vs.add("on_failure", "drain" if drain else "remove", where, [note])
        real_servers = Seq()
        for r in self.real_servers:
            try:
                real_servers.add(self.real_server(r, fwmark, port), f"{r.where} {_words(r)}")
            except _Bad as exc:
                self.t.skip(r, NOT_SUPPORTED, str(exc))
        vs.add("real_servers", real_servers)

    def checked(self) -> bool:
        """A real server has a checker: its health can change."""
        return any(_checkers(r) for r in self.real_servers)

    def sorry(self) -> bool:
        return any(key == "sorry_server" for key, _, _, _ in self.entries)

    def watched(self) -> bool:
        """Something acts on the quorum: a checker moves it, or a sorry server is added
        at start when it is not met (keepalived runs ``quorum_down`` then)."""
        return self.checked() or self.sorry()

    def report(self) -> None:
        if not self.watched():
            why = "no checker on any real server and no sorry_server: the quorum never acts"
            for _, _, c in self.commands:
                self.t.skip(c, NO_EQUIVALENT, why)
            for c in self.quorum:
                self.t.skip(c, NO_EQUIVALENT, why)
        if self.alpha is not None and not self.checked():
            self.t.skip(
                self.alpha, NO_EQUIVALENT, "no checker on any real server: none starts down"
            )
        if self.real_servers and self.inhibit is None:
            marks = [_has(r, "inhibit_on_failure") for r in self.real_servers if _checkers(r)]
            if any(marks) and not all(marks):
                self.t.skip(
                    self.s,
                    DIFFERS,
                    "inhibit_on_failure on some real servers only: on_failure is per virtual "
                    "server, all of them drain",
                    "inhibit_on_failure",
                )

    def real_server(self, r: Statement, fwmark: bool, vs_port: int | None) -> Map:
        t = self.t
        if len(r.args) not in (1, 2):
            raise _Bad("expects IP [PORT]")
        rs = Map()
        rs.add("address", _address(r.args[0]), r.where)
        port = _port(r.args[1]) if len(r.args) == 2 else (vs_port or 0)
        if self.forwarding in ("dr", "tunnel") and not fwmark:
            if port != vs_port:
                t.skip(r, DIFFERS, f"{self.forwarding} cannot change the port: {vs_port} is used")
        elif port or fwmark:
            rs.add("port", port, r.where)
        checks = Seq()
        for c in r.children:
            try:
                k = c.keyword
                if k == "weight":
                    weight = _int(c)
                    if not 0 <= weight <= 65535:
                        raise _Bad("must be 0..65535")
                    rs.add("weight", weight, c.where)
                elif k == "uthreshold":
                    rs.add("upper_threshold", _int(c), c.where)
                elif k == "lthreshold":
                    rs.add("lower_threshold", _int(c), c.where)
                elif k == "inhibit_on_failure":
                    continue  # read by the virtual server (on_failure)
                elif k in CHECKERS:
                    for check in self.checker(c):
                        checks.add(check, f"{c.where} {c.keyword}")
                elif k in ("SMTP_CHECK", "BFD_CHECK", "FILE_CHECK", "PING_CHECK"):
                    t.skip(c, NOT_SUPPORTED, "this checker type has no counterpart")
                elif k in ("notify_up", "notify_down"):
                    t.skip(c, NOT_SUPPORTED, "per real server commands are not run")
                elif k in ("delay_loop", "retry", "delay_before_retry", "connect_timeout"):
                    t.skip(c, NOT_SUPPORTED, "set it inside the checker")
                else:
                    t.skip(c, NOT_SUPPORTED, "real_server setting without a counterpart")
            except _Bad as exc:
                t.skip(c, NOT_SUPPORTED, str(exc))
        if not rs.has("weight"):
            rs.add("weight", 1, r.where)
        if checks.elements:
            rs.add("health_checks", checks)
        return rs

    # --- checkers ----------------------------------------------------------------

    def checker(self, c: Statement) -> list[Map]:
        t = self.t
        kind = CHECKERS[c.keyword]
        base = Map()
        base.add("type", kind, c.where)
        delay_loop, timeout = self.delay_loop, DEFAULT_CONNECT_TIMEOUT
        retry = 0 if kind == "exec" else 1
        delay_before_retry = DEFAULT_DELAY_BEFORE_RETRY
        where = {"retry": c.where, "delay_before_retry": c.where, "timeout": c.where}
        urls: list[Statement] = []
        extra = Map()
        host: str | None = None
        sni = False
        for x in c.children:
            try:
                k = x.keyword
                if k == "delay_loop":
                    delay_loop, where["interval"] = _num(x, low=0.001), x.where
                elif k in ("connect_timeout", "misc_timeout"):
                    timeout, where["timeout"] = _num(x, low=0.001), x.where
                elif k in ("retry", "nb_get_retry"):
                    retry, where["retry"] = _int(x), x.where
                elif k == "delay_before_retry":
                    delay_before_retry, where["delay_before_retry"] = _num(x, low=0), x.where
                elif k == "connect_ip":
                    extra.add("connect_address", _address(_arg(x)), x.where)
                elif k == "connect_port":
                    extra.add("connect_port", _port(_arg(x)), x.where)
                elif k == "bindto":
                    extra.add("source_address", _address(_arg(x)), x.where)
                elif k == "warmup":
                    t.skip(x, DIFFERS, "the agent spreads the first checks with its own jitter")
                elif k == "url" and kind in ("http", "https"):
                    urls.append(x)
                elif k == "virtualhost" and kind in ("http", "https"):
                    host = _arg(x)
                elif k == "enable_sni" and kind == "https":
                    sni = True
                elif k == "misc_path" and kind == "exec":
                    try:
                        argv = shlex.split(_arg(x))
                    except ValueError as exc:
                        raise _Bad(str(exc)) from None
                    command = Seq()
                    for word in argv:
                        command.add(word)
                    extra.add("command", command, x.where)
                elif k == "misc_dynamic" and kind == "exec":
                    extra.add("dynamic_weight", True, x.where)
                elif k == "type" and kind == "dns":
                    extra.add("query_type", _arg(x).upper(), x.where)
                elif k == "name" and kind == "dns":
                    extra.add("query_name", _arg(x), x.where)
                elif k == "payload" and kind == "udp":
                    extra.add("send", _hex_text(_arg(x)), x.where)
                elif k == "require_reply" and kind == "udp":
                    if x.args:
                        extra.add("expect", "^" + re.escape(_hex_text(x.args[0])), x.where)
                    else:
                        t.skip(x, DIFFERS, "without data: any reply passes, as without it")
                elif k in ("user",) and kind == "exec":
                    t.skip(x, NO_EQUIVALENT, "the agent runs the command as the user it runs as")
                else:
                    t.skip(x, NOT_SUPPORTED, f"{c.keyword} setting without a counterpart")
            except _Bad as exc:
                t.skip(x, NOT_SUPPORTED, str(exc))
        if kind == "dns" and not extra.has("query_type"):
            extra.add("query_type", "SOA", c.where, ["keepalived's DNS_CHECK default type"])
        if kind == "https":
            extra.add(
                "tls_verify",
                False,
                c.where,
                ["keepalived's SSL_GET does not verify the certificate"],
            )
        if kind == "exec" and not extra.has("command"):
            raise _Bad("MISC_CHECK needs misc_path")
        base.entries.extend(extra.entries)
        interval = _dur(delay_loop)
        base.add("interval", interval, where.get("interval", self.s.where))
        base.add("timeout", _dur(timeout), where["timeout"])
        base.add(
            "rise",
            1,
            where["retry"],
            [
                (
                    f"keepalived: a server that is up fails after {retry + 1} failed tries "
                    f"(retry {retry}, {_dur(delay_before_retry)} apart); one success"
                    if retry
                    else "keepalived: a server that is up fails on its first failure; one success"
                ),
                f"brings a server that is down back at once (rise 1), checked every {interval}",
            ],
        )
        base.add("fall", retry + 1, where["retry"])
        if delay_before_retry > 0 and retry:
            base.add("fast_interval", _dur(delay_before_retry), where["delay_before_retry"])
        base.add("down_interval", interval, where.get("interval", self.s.where))
        if kind not in ("http", "https"):
            return [base]
        if not urls:
            raise _Bad(f"{c.keyword} without a url block checks nothing")
        checks = []
        for u in urls:
            check = Map(list(base.entries))
            url_host = host
            for x in u.children:
                try:
                    k = x.keyword
                    if k == "path":
                        check.add("path", _arg(x), x.where)
                    elif k == "status_code":
                        codes = Seq()
                        for code in x.args:
                            if not re.fullmatch(r"\d{3}(-\d{3})?", code):
                                raise _Bad(f"bad status {code!r}")
                            codes.add(int(code) if code.isdigit() else code)
                        check.add("expect_status", codes, x.where)
                    elif k == "regex":
                        check.add("expect_body", _arg(x), x.where)
                    elif k == "virtualhost":
                        url_host = _arg(x)
                    elif k == "digest":
                        t.skip(x, NOT_SUPPORTED, "body digests: use expect_body (a regex)")
                    else:
                        t.skip(x, NOT_SUPPORTED, "url setting without a counterpart")
                except _Bad as exc:
                    t.skip(x, NOT_SUPPORTED, str(exc))
            if not check.has("expect_status"):
                check.add(
                    "expect_status", Seq([Element("200-299")]), u.where, ["keepalived: any 2xx"]
                )
            if url_host:
                check.add("host", url_host, u.where)
                if kind == "https" and not sni:
                    check.add("tls_server_name", None, u.where, ["no SNI, as without enable_sni"])
            checks.append(check)
        return checks


# --- VRRP ---------------------------------------------------------------------------


def _vrrp_instance(t: _Translator, s: Statement, out: Seq, used_scripts: set[str]) -> None:
    if len(s.args) != 1:
        raise _Bad("expects a name")
    inst = Map()
    name = _safe_name(s.args[0])
    if name != s.args[0]:
        t.skip(s, DIFFERS, f"instance names take letters, digits, '-', '_', '.': {name!r}", "name")
    inst.add("name", name, s.where)
    version: tuple[int, str] = (t.vrrp_version, s.where)
    garp = Map()
    garp_values: dict[str, tuple[object, str]] = {
        key: (value, st.where) for key, (value, st) in t.garp_defaults.items()
    }
    vips, peers, tracks, scripts = Seq(), Seq(), Seq(), Seq()
    for c in s.children:
        try:
            k = c.keyword
            if k == "interface":
                inst.add("interface", _arg(c), c.where)
            elif k == "virtual_router_id":
                inst.add("vrid", _int(c), c.where)
            elif k == "priority":
                inst.add("priority", _int(c), c.where)
            elif k == "advert_int":
                inst.add("advert_interval", _dur(_num(c, low=0.01)), c.where)
            elif k == "version":
                version = (_int(c), c.where)
            elif k == "nopreempt":
                inst.add("preempt", False, c.where)
            elif k == "preempt":
                inst.add("preempt", True, c.where)
            elif k == "preempt_delay":
                inst.add("preempt_delay", _dur(_num(c, low=0)), c.where)
            elif k == "state":
                t.skip(
                    c,
                    DIFFERS,
                    "no initial state: every instance starts as backup (priority 255 as master) "
                    "and the election decides",
                )
            elif k == "unicast_src_ip":
                t.skip(c, NO_EQUIVALENT, "adverts leave from the interface's primary address")
            elif k == "unicast_peer":
                for p in c.children:
                    try:
                        peers.add(_address(p.keyword), p.where)
                        if p.args:
                            t.skip(p, NOT_SUPPORTED, "per peer options", _words(p))
                    except _Bad as exc:
                        t.skip(p, NOT_SUPPORTED, str(exc))
            elif k == "authentication":
                _authentication(t, c, inst)
            elif k in ("virtual_ipaddress", "virtual_ipaddress_excluded"):
                _vips(t, c, vips, inst)
            elif k == "track_interface":
                for x in c.children:
                    entry: Map | str = x.keyword
                    if x.keyword == inst.get("interface"):
                        t.skip(x, NO_EQUIVALENT, "an instance's own interface is always tracked")
                        continue
                    if len(x.args) == 2 and x.args[0] == "weight":
                        entry = Map()
                        entry.add("name", x.keyword, x.where)
                        entry.add("weight", _weight(t, s, _int(x, 1)), x.where)
                    elif x.args:
                        t.skip(x, NOT_SUPPORTED, "expects NAME [weight N]", _words(x))
                        continue
                    tracks.add(entry, x.where)
            elif k == "track_script":
                for x in c.children:
                    script = _track_script(t, x, s)
                    used_scripts.add(x.keyword)  # reported here if it could not be tracked
                    if script is not None:
                        scripts.add(script, x.where)
            elif k == "notify":
                inst.add("notify", _arg(c), c.where)
            elif k in ("notify_master", "notify_backup", "notify_fault", "notify_stop"):
                t.skip(
                    c,
                    DIFFERS,
                    "one 'notify' command gets the state as an argument; fold it into notify",
                )
            elif k in GARP_INSTANCE:
                key = GARP_INSTANCE[k]
                garp_values[key] = (_int(c) if "repeat" in key else _num(c, low=0), c.where)
            elif k in ("dont_track_primary", "smtp_alert"):
                t.skip(c, NO_EQUIVALENT, "no counterpart in lvs-agent")
            else:
                t.skip(c, NOT_SUPPORTED, "vrrp_instance setting without a counterpart")
        except _Bad as exc:
            t.skip(c, NOT_SUPPORTED, str(exc))
    inst.add(
        "version", version[0], version[1], [] if version[1] != s.where else ["keepalived's default"]
    )
    if peers.elements:
        inst.add("unicast_peers", peers)
    inst.add("virtual_ips", vips)
    if tracks.elements:
        inst.add("track_interfaces", tracks)
    if scripts.elements:
        inst.add("track_scripts", scripts)
    for key in ("repeat", "delay", "refresh", "lower_prio_repeat", "lower_prio_delay"):
        if key in garp_values:
            value, where = garp_values[key]
            garp.add(key, _dur(float(value)) if key in GARP_DURATIONS else value, where)  # type: ignore[arg-type]
    if garp.entries:
        inst.add("garp", garp)
    out.add(inst, f"{s.where} vrrp_instance {s.args[0]}")


def _authentication(t: _Translator, c: Statement, inst: Map) -> None:
    kind, password = None, None
    for x in c.children:
        if x.keyword == "auth_type":
            kind = x
        elif x.keyword == "auth_pass":
            password = x
        else:
            t.skip(x, NOT_SUPPORTED, "authentication setting without a counterpart")
    if kind is not None and _arg(kind).upper() != "PASS":
        t.skip(kind, NOT_SUPPORTED, "only auth_type PASS (VRRPv2 simple password)")
        return
    if password is not None:
        text = _arg(password)
        notes = []
        if len(text.encode()) > 8:
            text = text.encode()[:8].decode(errors="ignore")
            notes = ["keepalived sends only the first 8 characters"]
        inst.add("auth_pass", text, password.where, notes)


def _vips(t: _Translator, c: Statement, vips: Seq, inst: Map) -> None:
    interface = inst.get("interface")
    for x in c.children:
        try:
            ipaddress.ip_interface(x.keyword)
        except ValueError:
            t.skip(x, NOT_SUPPORTED, f"{x.keyword!r} is not an address", _words(x))
            continue
        args = list(x.args)
        if len(args) >= 2 and args[0] == "dev" and args[1] == interface:
            args = args[2:]
        if args:
            t.skip(
                x,
                NOT_SUPPORTED,
                f"address options {' '.join(args)!r} (VIPs live on the instance's interface)",
                _words(x),
            )
            continue
        if c.keyword == "virtual_ipaddress_excluded":
            t.skip(x, DIFFERS, "not left out of adverts: added as a VIP like the others", _words(x))
        vips.add(x.keyword, x.where)


def _weight(t: _Translator, instance: Statement, weight: int) -> int:
    """A tracker's weight as keepalived applies it: 0 (FAULT) in a sync group unless
    the group has sync_group_tracking_weight."""
    return weight if t.synced.get(instance.args[0], True) else 0


def _track_script(t: _Translator, x: Statement, instance: Statement) -> Map | None:
    definition = t.scripts.get(x.keyword)
    if definition is None:
        t.skip(x, NOT_SUPPORTED, f"no vrrp_script named {x.keyword!r}", _words(x))
        return None
    entry = Map()
    entry.add("name", _safe_name(x.keyword), x.where)
    weight: tuple[int, str] | None = None
    reverse: Statement | None = None  # "weight N reverse": the script's result inverted
    for d in definition.children:
        try:
            k = d.keyword
            if k == "script":
                entry.add("script", _arg(d), d.where)
            elif k in ("interval", "timeout"):
                entry.add(k, _dur(_num(d, low=0.1)), d.where)
            elif k in ("rise", "fall"):
                entry.add(k, _int(d), d.where)
            elif k == "weight":
                weight = (_int(d), d.where)
                reverse = d if len(d.args) > 1 else None
            elif k == "init_fail":
                entry.add("init_fail", True, d.where)
            elif k == "user":
                t.skip(d, NO_EQUIVALENT, "the agent runs scripts as the user it runs as")
            else:
                t.skip(d, NOT_SUPPORTED, "vrrp_script setting without a counterpart")
        except _Bad as exc:
            t.skip(d, NOT_SUPPORTED, str(exc))
    if len(x.args) >= 2 and x.args[0] == "weight":
        try:
            weight = (_int(x, 1), x.where)
        except _Bad as exc:
            t.skip(x, NOT_SUPPORTED, str(exc), _words(x))
        reverse = x if len(x.args) > 2 else None
    if reverse is not None:
        why = "weight ... reverse (an inverted script result): the script is not tracked"
        t.skip(reverse, NOT_SUPPORTED, why, _words(reverse))
        return None
    if weight is not None:
        entry.add("weight", _weight(t, instance, weight[0]), weight[1])
    if not entry.has("script"):
        t.skip(definition, NOT_SUPPORTED, "vrrp_script without script")
        return None
    return entry


def _sync_group(t: _Translator, s: Statement, out: Seq) -> None:
    if len(s.args) != 1:
        raise _Bad("expects a name")
    group = Map()
    group.add("name", _safe_name(s.args[0]), s.where)
    for c in s.children:
        if c.keyword == "group":
            members = Seq()
            for m in c.children:
                members.add(_safe_name(m.keyword), m.where)
                for extra in m.args:
                    members.add(_safe_name(extra), m.where)
            group.add("instances", members, c.where)
        elif c.keyword == "sync_group_tracking_weight":
            continue  # read with the members' trackers
        elif c.keyword == "notify":
            try:
                group.add("notify", _arg(c), c.where)
            except _Bad as exc:
                t.skip(c, NOT_SUPPORTED, str(exc))
        elif c.keyword in ("notify_master", "notify_backup", "notify_fault", "notify_stop"):
            t.skip(c, DIFFERS, "one 'notify' command gets the state as an argument")
        else:
            t.skip(c, NOT_SUPPORTED, "vrrp_sync_group setting without a counterpart")
    out.add(group, f"{s.where} vrrp_sync_group {s.args[0]}")


def _hex_text(text: str) -> str:
    """keepalived's UDP payloads are hex; the agent's send/expect are text."""
    try:
        data = bytes.fromhex(text)
    except ValueError:
        raise _Bad(f"{text!r} is not hex") from None
    if not all(32 <= b < 127 for b in data):
        raise _Bad("only printable ASCII payloads can be written as YAML text")
    return data.decode()


def _has(s: Statement, keyword: str) -> bool:
    return any(c.keyword == keyword for c in s.children)


def _checkers(r: Statement) -> bool:
    return any(c.keyword in CHECKERS for c in r.children)
