"""The ``lvs-agent`` command line.

Owns argument parsing, exit codes and what each command prints. Imports are
lazy so that ``--help`` and ``check-config`` start fast and need no kernel.

Exit codes: 0 success (``plan``: nothing pending), 1 error, 2 ``plan`` found
changes pending (``import-keepalived``: keywords left out), 3 ``check-health`` found
failing checks.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from agent.config import Config
    from agent.ipvs.configcache import CompiledConfig

DEFAULT_CONFIG = "/etc/lvs-agent/config.yaml"

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_PENDING = 2
MAX_PROBLEMS_SHOWN = 50  # a broken generated file can hold thousands of the same mistake
STRICT_HELP = "treat warnings as errors (exit 1)"


class _Formatter(argparse.HelpFormatter):
    """argparse's help formatter, sized as shutil.get_terminal_size would size it,
    without importing shutil (and with it bz2, lzma, zlib and fnmatch): argparse
    builds a formatter for every add_argument, so every command paid for it."""

    def __init__(self, prog: str) -> None:
        try:
            columns = int(os.environ["COLUMNS"])
        except (KeyError, ValueError):
            out = sys.__stdout__
            try:
                columns = os.get_terminal_size(out.fileno()).columns if out else 80
            except (ValueError, OSError):
                columns = 80
        super().__init__(prog, width=(columns or 80) - 2)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lvs-agent",
        formatter_class=_Formatter,
        description="LVS director agent: programs the kernel IPVS table from a YAML "
        "configuration and keeps it there.",
        epilog="Exit status: 0 ok (plan: nothing pending), 1 error, 2 plan: changes pending "
        "(import-keepalived: keywords left out), 3 check-health: some checks failed. "
        "plan and apply cache what they read from a valid file in /var/cache/lvs-agent "
        "(LVS_AGENT_CACHE_DIR moves it; empty turns it off).",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(name: str, help_text: str) -> argparse.ArgumentParser:
        cmd = sub.add_parser(
            name, help=help_text, description=help_text, formatter_class=_Formatter
        )
        cmd.add_argument(
            "-c",
            "--config",
            default=DEFAULT_CONFIG,
            metavar="FILE",
            help=f"configuration file (default {DEFAULT_CONFIG})",
        )
        return cmd

    check = with_config(
        "check-config",
        "validate the configuration file and the files it includes, then check it "
        "against this host (lock key "
        "file, state_dir, VRRP interfaces, track script, notify and exec check programs, "
        "https CA files); changes "
        "nothing. Problems exit 1; what may differ on the director (an interface or "
        "program missing, state_dir not created yet) is a warning: exit 0 unless --strict",
    )
    check.add_argument("--strict", action="store_true", help=STRICT_HELP)
    health = with_config(
        "check-health",
        "run every configured health check once, at the same time (each distinct check "
        "against a target once), and print a line per virtual server, real server and "
        "check: ok or FAIL, the reason (refused, timeout, status 503, tls: ...) and how "
        "long it took. Needs no IPVS and changes nothing. Exit 0 all passed, 3 some "
        "failed, 1 error",
    )
    health.add_argument("--json", action="store_true", help="print the results as JSON")
    health.add_argument(
        "--virtual-server", metavar="NAME", help="check this virtual server's real servers only"
    )
    with_config("plan", "print the IPVS operations that apply would make, one per line")
    with_config("apply", "reconcile the IPVS table with the configuration once")
    with_config(
        "run",
        "run the agent: reconcile at start, every reconcile_interval, on "
        "SIGHUP (re-reading the configuration); SIGTERM leaves the IPVS table in place",
    )
    status = with_config(
        "status",
        "ask the running agent (its status socket) for VRRP states, the lock's holder "
        "and term, and every virtual service with its real servers: configured, health "
        "and kernel weights, connections, health and last check, maintenance; printed "
        "like ipvsadm -Ln. Without a running agent: the kernel's IPVS table only (and "
        "the lock's last written state), saying so",
    )
    status.add_argument("--json", action="store_true", help="print JSON, for scripts")
    failover = with_config(
        "failover",
        "make the running agent hand over to another director now: INSTANCE (a VRRP "
        "master sends priority 0 and does not preempt for 60s; a quorum instance "
        "releases its lease), or without INSTANCE every lease held and every VRRP "
        "master. VIPs go first; the agent campaigns again after a hold-off, and with "
        "preempt a higher-priority node takes over again then",
    )
    failover.add_argument("instance", nargs="?", metavar="INSTANCE", help="a VRRP instance")
    maint = with_config(
        "maint",
        "put a real server of a virtual server in or out of maintenance (weight 0 while "
        "in); kept in state_dir/maintenance.json across restarts. Set through the running "
        "agent, or written to the file when none runs",
    )
    maint.add_argument("virtual_server", metavar="VIRTUAL_SERVER", help="its name")
    maint.add_argument(
        "real_server", metavar="REAL_SERVER", help="addr:port, [v6addr]:port (fwmark: addr)"
    )
    maint.add_argument("state", choices=("on", "off"), help="on: in maintenance")
    witness = with_config(
        "witness",
        "run as a quorum witness: an acceptor-only lock member for one or more clusters "
        "(no IPVS, no VRRP), so that two directors plus a witness have a majority. "
        "The file has a 'lock' section and/or 'witness: {clusters: [{cluster, listen, "
        "peers, key_file, lease, node_id}, ...]}'; metrics.listen serves lvs_agent_lock_*",
    )
    witness.add_argument(
        "--check",
        action="store_true",
        help="validate the witness file and check its key files and state directories "
        "on this host, then exit (0 valid, 1 invalid); no other effect",
    )
    witness.add_argument("--strict", action="store_true", help=f"with --check: {STRICT_HELP}")

    imp = sub.add_parser(
        "import-keepalived",
        formatter_class=_Formatter,
        help="translate a keepalived.conf into this agent's YAML configuration",
        description="Read a keepalived.conf as keepalived does (include, comments, quoted "
        "strings, $VAR definitions, @id conditional lines) and write the equivalent YAML, "
        "each entry commented with the keepalived file:line it came from. Every keyword "
        "not translated is listed on stderr with file:line and why. The result is validated "
        "as check-config does (without the host checks). Exit 0 all translated, 2 something "
        "left out, 1 unreadable or invalid input, or a translation the agent refuses (its "
        "problems are listed against the output's lines).",
    )
    imp.add_argument("file", metavar="FILE", help="the keepalived configuration file")
    imp.add_argument("-o", "--output", metavar="OUT", help="write the YAML here (default stdout)")
    imp.add_argument(
        "--config-id",
        metavar="ID",
        help="keep @ID lines, drop other @name lines (keepalived's -i; default: the host "
        "name up to the first dot)",
    )

    lab = sub.add_parser(
        "lab",
        formatter_class=_Formatter,
        help="build a throwaway LVS lab in network namespaces and send traffic through it",
        description="Build a client, directors running this agent and two HTTP real servers "
        "in network namespaces; send requests through the VIP; show which real server "
        "answered and the IPVS table; tear everything down. With two or more directors, "
        "VRRP elects the one holding the VIP and the lab kills the master's agent in the "
        "middle of a stream of requests to show the failover. Runs inside a VM with a "
        "stock Debian kernel when the running kernel has no IPVS. Needs root.",
    )
    lab.add_argument(
        "--forwarding",
        choices=("nat", "dr"),
        default="nat",
        help="how the director forwards to the real servers (default nat)",
    )
    lab.add_argument(
        "--directors",
        type=int,
        choices=(1, 2, 3),
        default=2,
        help="directors (default 2: VRRP failover; 1: a static VIP)",
    )
    lab.add_argument(
        "--requests", type=int, help="requests to send (default 6, or 40 with VRRP failover)"
    )
    lab.add_argument(
        "--election",
        choices=("vrrp", "quorum"),
        default="vrrp",
        help="vrrp (default): the failover demo above; quorum: two directors and a witness, "
        "the master cut off from the others first with election: vrrp (split brain), then "
        "with election: quorum (it gives the VIP up), then kill -9 of the holder; prints a "
        "side-by-side summary (DR; --forwarding, --directors and --requests do not apply)",
    )
    lab.add_argument(
        "--plot",
        metavar="FILE",
        help="with --election quorum: also draw the timelines to a PNG (needs matplotlib: "
        "pip install 'lvs-agent[plot]')",
    )
    lab.add_argument("--in-vm", action="store_true", help=argparse.SUPPRESS)
    return p


# commands run() ends with os._exit
ONE_SHOT = ("apply", "plan", "check-config", "check-health", "status", "maint")


def main(argv: list[str] | None = None) -> int:
    return _dispatch(_parser().parse_args(argv))


def _dispatch(args: argparse.Namespace) -> int:
    command: str = args.command
    if command == "lab":
        from agent.lab.demo import main as lab_main

        return lab_main(
            forwarding=args.forwarding,
            requests=args.requests,
            in_vm=args.in_vm,
            directors=args.directors,
            election=args.election,
            plot=args.plot,
        )
    if command == "import-keepalived":
        return _import_keepalived(args.file, args.output, args.config_id)
    if command == "witness" and args.check:
        return _check_witness(args.config, args.strict)
    if command == "witness":
        from agent.daemon.witness import run_witness

        return run_witness(args.config)
    if command in ("apply", "plan"):
        compiled = _compile(args.config)
        if compiled is None:
            return EXIT_ERROR
        return _with_kernel(command, compiled)
    config = _load(args.config)
    if config is None:
        return EXIT_ERROR
    if command == "check-config":
        services = len(config.virtual_servers)
        servers = sum(len(vs.real_servers) for vs in config.virtual_servers)
        return _check_host(
            config,
            args.strict,
            f"{args.config}: valid ({services} virtual server{'' if services == 1 else 's'}, "
            f"{servers} real server{'' if servers == 1 else 's'}{_included(config)})",
        )
    if command == "check-health":
        from agent.health.once import main as check_health

        return check_health(config, args.virtual_server, args.json)
    if command == "run":
        from agent.daemon import run

        return run(args.config, config)
    if command == "failover":
        return _failover(config, args.instance)
    if command == "maint":
        return _maint(config, args.virtual_server, args.real_server, args.state == "on")
    from agent.status import AgentUnavailable, ask, render_status

    fallback = ""
    try:
        answer = ask(config.state_dir, {"command": "status"})
    except AgentUnavailable as exc:
        fallback = f"no running agent answered ({exc})"
    else:
        if not answer.get("ok"):
            print(f"lvs-agent: {answer.get('error')}", file=sys.stderr)
            return EXIT_ERROR
        if args.json:
            import json

            print(json.dumps({"running": True, **answer["result"]}, indent=1))  # type: ignore[dict-item]
        else:
            print(render_status(answer["result"]), end="")  # type: ignore[arg-type]
        return EXIT_OK
    if config.lock is not None and not args.json:
        _lock_status(config)
        if not config.virtual_servers:
            if fallback:
                print(f"lvs-agent: {fallback}: showing the lock's last state only", file=sys.stderr)
            return EXIT_OK
    from agent.ipvs.configcache import CompiledConfig

    return _with_kernel(
        "status-json" if args.json else command,
        CompiledConfig(config.state_dir, config.ipvs, {}),
        fallback,
    )


def _included(config: Config) -> str:
    """``, 3 included files`` for check-config's summary ('' without ``include``)."""
    count = len({f for included in config.includes for f in included.files})
    if not config.includes:
        return ""
    return f", {count} included file{'' if count == 1 else 's'}"


def _import_keepalived(path: str, output: str | None, config_id: str | None) -> int:
    from agent.importer import KeepalivedSyntaxError, import_keepalived

    try:
        result = import_keepalived(path, config_id)
    except KeepalivedSyntaxError as exc:
        print(f"lvs-agent: {exc}", file=sys.stderr)
        return EXIT_ERROR
    for note in result.notes:
        print(f"{note} (keepalived only warns)", file=sys.stderr)
    for skipped in result.skipped:
        print(skipped, file=sys.stderr)
    if output is None:
        sys.stdout.write(result.yaml)
    else:
        try:
            with open(output, "w", encoding="utf-8") as f:
                f.write(result.yaml)
        except OSError as exc:
            print(f"lvs-agent: {output}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_ERROR
    from agent.config import ConfigError, parse_config

    try:  # what keepalived allows and the agent refuses (two services on one address...)
        parse_config(result.yaml, output or "<stdout>")
    except ConfigError as exc:
        for problem in exc.problems[:MAX_PROBLEMS_SHOWN]:
            print(problem, file=sys.stderr)
        print(f"{path}: the translation is not a valid configuration", file=sys.stderr)
        return EXIT_ERROR
    if result.skipped:
        print(f"{path}: {len(result.skipped)} keyword(s) not translated", file=sys.stderr)
        return EXIT_PENDING
    return EXIT_OK


def _check_witness(path: str, strict: bool) -> int:
    from agent.config.loader import load_witness_config

    config = _load(path, load_witness_config)
    if config is None:
        return EXIT_ERROR
    clusters = ", ".join(c.cluster for c in config.witness)
    return _check_host(
        config, strict, f"{path}: valid witness file ({len(config.witness)} cluster(s): {clusters})"
    )


def _check_host(config: Config, strict: bool, valid: str) -> int:
    """After validation: what this host says about the file (agent.config.host).
    Warnings do not change the exit status unless ``strict`` makes them errors."""
    from dataclasses import replace

    from agent.config.host import check_host

    found = check_host(config)
    if strict:
        found = [replace(f, warning=False) for f in found]
    errors = sum(not f.warning for f in found)
    for finding in found:
        print(finding, file=sys.stderr)
    if errors:
        print(
            f"{config.source}: valid, but not on this host ({errors} problem"
            f"{'s' if errors != 1 else ''}); nothing was changed",
            file=sys.stderr,
        )
        return EXIT_ERROR
    warnings = len(found)
    print(valid + (f"; {warnings} warning{'s' if warnings != 1 else ''}" if warnings else ""))
    return EXIT_OK


def _ask(config: Config, request: dict[str, object]) -> dict[str, object] | str:
    """The running agent's answer, or why none came."""
    from agent.status import AgentUnavailable, ask

    try:
        return ask(config.state_dir, request)
    except AgentUnavailable as exc:
        return str(exc)


def _answered(answer: dict[str, object]) -> int:
    if not answer.get("ok"):
        print(f"lvs-agent: {answer.get('error')}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def _failover(config: Config, instance: str | None) -> int:
    import os
    import signal

    from agent.instancelock import InstanceLock

    answer = _ask(config, {"command": "failover", "instance": instance})
    if isinstance(answer, dict):
        if _answered(answer) == EXIT_OK:
            done = answer["result"]["handed_over"]  # type: ignore[index]
            print("\n".join(done) if done else "nothing to hand over")
            return EXIT_OK
        return EXIT_ERROR
    if instance is not None:
        print(f"lvs-agent: no running agent answered ({answer})", file=sys.stderr)
        return EXIT_ERROR
    pid = InstanceLock(config.state_dir).holder()
    if pid is None:
        print(
            f"lvs-agent: no running agent for state directory {config.state_dir}",
            file=sys.stderr,
        )
        return EXIT_ERROR
    try:
        os.kill(pid, signal.SIGUSR1)
    except OSError as exc:
        print(f"lvs-agent: cannot signal pid {pid}: {exc.strerror}", file=sys.stderr)
        return EXIT_ERROR
    print(f"asked lvs-agent (pid {pid}) to hand its leases and VRRP masters over (SIGUSR1)")
    return EXIT_OK


def _maint(config: Config, vs: str, rs: str, on: bool) -> int:
    from pathlib import Path

    from agent.health.maint import (
        FILE_NAME,
        MaintenanceError,
        MaintenanceStore,
        configured_servers,
        format_real_server,
        parse_real_server,
    )
    from agent.instancelock import InstanceLock

    answer = _ask(config, {"command": "maint", "virtual_server": vs, "real_server": rs, "on": on})
    if isinstance(answer, dict):
        if _answered(answer) == EXIT_OK:
            print(answer["result"]["text"])  # type: ignore[index]
            return EXIT_OK
        return EXIT_ERROR
    pid = InstanceLock(config.state_dir).holder()
    if pid is not None:
        print(f"lvs-agent: the agent (pid {pid}) did not answer ({answer})", file=sys.stderr)
        return EXIT_ERROR
    path = Path(config.state_dir) / FILE_NAME
    store = MaintenanceStore(path, configured_servers(config.virtual_servers))
    try:
        key = parse_real_server(rs)
        store.load()
        changed = store.set(vs, key, on)
    except MaintenanceError as exc:
        print(f"lvs-agent: {exc}", file=sys.stderr)
        return EXIT_ERROR
    word = "in" if on else "out of"
    print(
        f"{vs} {format_real_server(key)} {'now' if changed else 'already'} {word} maintenance "
        f"(no running agent: recorded in {path}, applied when it starts)"
    )
    return EXIT_OK


def _lock_status(config: Config) -> None:
    import json
    from pathlib import Path

    from agent.daemon import LOCK_STATUS_FILE
    from agent.status.render import lease_holder

    path = Path(config.state_dir) / LOCK_STATUS_FILE
    try:
        st = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        print(f"lock: no status from a running agent ({path}: {exc})")
        return
    print(
        f"lock: node {st['node']} incarnation {st['incarnation']}, quorum "
        f"{'reachable' if st['quorum_reachable'] else 'NOT reachable'} "
        f"({', '.join(st['reachable'])})" + (", quarantined" if st["quarantined"] else "")
    )
    for ls in st["leases"]:
        print(
            f"  lease {ls['name']}: {lease_holder(ls)}; priority {ls['priority']}"
            f"{'' if ls['campaigning'] else ' (not campaigning)'}; acquisitions "
            f"{ls['acquisitions']}, losses {ls['losses']}, releases {ls['releases']}"
        )


def _load(path: str, loader: Callable[[str], Config] | None = None) -> Config | None:
    from agent.config import ConfigError, load_config

    try:
        return (loader or load_config)(path)
    except ConfigError as exc:
        for problem in exc.problems[:MAX_PROBLEMS_SHOWN]:
            print(problem, file=sys.stderr)
        if len(exc.problems) > MAX_PROBLEMS_SHOWN:
            print(f"... and {len(exc.problems) - MAX_PROBLEMS_SHOWN} more", file=sys.stderr)
        print(
            f"{path}: invalid ({len(exc.problems)} problem"
            f"{'s' if len(exc.problems) != 1 else ''}); nothing was changed",
            file=sys.stderr,
        )
    except OSError as exc:
        print(f"lvs-agent: cannot read {path}: {exc.strerror}", file=sys.stderr)
    return None


def _compile(path: str) -> CompiledConfig | None:
    """What apply and plan need from the file: from the cache when these bytes
    were read before, else read and validated (and then cached)."""
    from pathlib import Path

    from agent.ipvs.configcache import CompiledConfig, ConfigCache

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        print(f"lvs-agent: cannot read {path}: {exc.strerror}", file=sys.stderr)
        return None
    from agent.config.include import included_bytes

    # The cache is keyed by the content of every file read: the main file's bytes,
    # then each included file's path and bytes (None: the include list cannot be
    # told before reading, so no cache for this run).
    included = included_bytes(path, data)
    key = None if included is None else _cache_key(data, included)
    cache = ConfigCache.default()
    compiled = cache.load(key) if key is not None else None
    if compiled is not None:
        return compiled

    def parse(source: str) -> Config:
        from agent.config.loader import decode_config, parse_config

        return parse_config(decode_config(data, source), source, included=included)

    config = _load(path, parse)
    if config is None:
        return None
    from agent.ipvs.desired import desired_table

    compiled = CompiledConfig(config.state_dir, config.ipvs, desired_table(config.virtual_servers))
    if key is not None:
        cache.store(key, compiled)
    return compiled


def _cache_key(data: bytes, included: dict[str, bytes]) -> bytes:
    """The main file's bytes alone, or followed by each included file's path and bytes
    (length-prefixed, so no two sets of files give the same key)."""
    if not included:
        return data
    parts = [data]
    for name, content in included.items():
        encoded = name.encode("utf-8", "surrogateescape")
        parts += [b"\0include\0%d:" % len(encoded), encoded, b"%d:" % len(content), content]
    return b"".join(parts)


def _with_kernel(command: str, config: CompiledConfig, fallback: str = "") -> int:
    """``fallback``: why ``status`` shows the kernel alone (no agent answered), said once."""
    from pathlib import Path

    from agent.ipvs.kernel import IpvsKernel, IpvsUnavailable
    from agent.ipvs.reconciler import reconcile
    from agent.ipvs.state import OwnershipStore, StateFileError

    try:
        kernel = IpvsKernel()
    except IpvsUnavailable as exc:
        # One sentence: the kernel's own problem is what the operator acts on.
        print(f"lvs-agent: {fallback + ', and ' if fallback else ''}{exc}", file=sys.stderr)
        return EXIT_ERROR
    if fallback:
        print(f"lvs-agent: {fallback}: showing the kernel's IPVS table only", file=sys.stderr)
    store = OwnershipStore(Path(config.state_dir) / "ipvs-state.json")
    lock = None
    if command == "apply":
        from agent.instancelock import InstanceLock

        lock = InstanceLock(config.state_dir)
        busy = lock.acquire()
        if busy:
            kernel.close()
            print(f"lvs-agent: {busy}", file=sys.stderr)
            return EXIT_ERROR
    try:
        with kernel:
            if command == "status":
                return _status(kernel, store)
            if command == "status-json":
                return _status_json(kernel, store)
            outcome = reconcile(
                kernel,
                store,
                config.table,
                config.ipvs,
                dry_run=command == "plan",
            )
    except StateFileError as exc:
        print(f"lvs-agent: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        if exc.filename:  # the ownership file in state_dir, not the kernel
            print(f"lvs-agent: {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        else:
            print(f"lvs-agent: netlink: {exc}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        if lock is not None:
            lock.release()

    # Tens of thousands of lines on a table load: written in one call, not one
    # print() each; stdout is flushed before each line on stderr, keeping order.
    if command == "plan":
        lines = [f"{step.text}\n" for step in outcome.plan.steps]
        lines.extend(f"{change}\n" for change in outcome.sysctls)
        sys.stdout.write("".join(lines))
        n = len(outcome.plan.steps) + len(outcome.sysctls)
        print(
            f"{n} operation{'s' if n != 1 else ''} pending" if n else "nothing to do",
            file=sys.stderr,
        )
        return EXIT_PENDING if n else EXIT_OK

    failed = 0
    applied: list[str] = []

    def fail(line: str) -> None:
        nonlocal failed
        failed += 1
        sys.stdout.write("".join(applied))
        sys.stdout.flush()
        applied.clear()
        print(line, file=sys.stderr)

    for step, result in zip(outcome.plan.steps, outcome.results, strict=False):
        if result is None:
            applied.append(f"applied: {step.text}\n")
        else:
            fail(f"failed: {step.text}: {result}")
    applied.extend(f"applied: {change}\n" for change in outcome.sysctls)
    for error in outcome.sysctl_errors:
        fail(f"failed: {error}")
    sys.stdout.write("".join(applied))
    done = len(outcome.plan.steps) + len(outcome.sysctls) - failed
    summary = f"{done} applied, {failed} failed"
    if outcome.plan.draining:
        summary += (
            f"; {outcome.plan.draining} real server(s) draining (removed by "
            "`lvs-agent run`, or by a later apply once idle)"
        )
    print(summary if done or failed or outcome.plan.draining else "nothing to do", file=sys.stderr)
    return EXIT_ERROR if failed else EXIT_OK


def _status(kernel: object, store: object) -> int:
    from agent.ipvs.render import render_table

    table = kernel.dump()  # type: ignore[attr-defined]
    owned = store.load().services  # type: ignore[attr-defined]
    print(render_table(table, owned), end="")
    return EXIT_OK


def _status_json(kernel: object, store: object) -> int:
    import json

    from agent.status.view import FORWARD, service_text

    table = kernel.dump()  # type: ignore[attr-defined]
    owned = store.load().services  # type: ignore[attr-defined]
    services = [
        {
            "service": service_text(key),
            "scheduler": table[key].service.scheduler,
            "owned": key in owned,
            "real_servers": [
                {
                    "address": d.dest.key.address,
                    "port": d.dest.key.port,
                    "forward": FORWARD.get(d.dest.fwd, "?"),
                    "kernel_weight": d.dest.weight,
                    "active": d.active_conns,
                    "inactive": d.inactive_conns,
                }
                for _, d in sorted(table[key].dests.items())
            ],
        }
        for key in sorted(table)
    ]
    print(json.dumps({"running": False, "kernel_services": services}, indent=1))
    return EXIT_OK


def run() -> None:
    """The process entry point (``lvs-agent``, ``python -m agent``).

    A one-shot command that read a large configuration ends with hundreds of
    thousands of objects alive; tearing them down one by one at interpreter exit
    is pure cost (seconds under emulation), so the process exits straight after
    flushing its output. ``main`` returns normally for callers in-process.
    """
    args = _parser().parse_args()
    code = _dispatch(args)
    profiled = sys.getprofile() is not None or sys.gettrace() is not None  # they write at exit
    if args.command in ONE_SHOT and not profiled:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):
            code = code or EXIT_ERROR
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    run()
