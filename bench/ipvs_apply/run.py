"""Benchmark: programming N services x 4 real servers — lvs-agent vs ipvsadm-restore vs keepalived.

All in one VM boot (re-runs itself inside the lab VM when this kernel has no
IPVS), each tool in a fresh network namespace (its own empty IPVS table), same
rules for all three; after each namespace is deleted the run waits for the CPUs
to be idle again (the kernel frees the deleted table in the background):

  (a)  lvs-agent apply on an empty table
         command: a new `lvs-agent apply` process, start to exit (interpreter start,
                  imports, config parse, dump, plan, apply); once for a file it
                  has never seen, once for a file in its configuration cache
         engine:  the same work inside a running agent (parse, dump, plan, apply):
                  what a daemon pays on start-up or reload
  (b)  ipvsadm-restore of the same rules
  (b') keepalived -C loading the same virtual_server blocks (no checkers), from
       process start until the last real server is in the kernel
  (c)  a no-op re-apply (command, with and without the configuration cache, and
       engine); beside it `ipvsadm -S -n`, the same kernel read done in C,
       which any exact no-op has to make
  (d)  one weight change in the full table: netlink messages sent, the time of
       that operation, and the whole reconcile (parse, dump, plan, apply)
  (e)  peak RSS of the `lvs-agent apply` process
  (f)  the same weight change by a reload of a running, idle daemon: `lvs-agent
       run` and keepalived, from SIGHUP until the kernel has the new weight;
       with --split FILES also with the services spread over FILES files
       (`include:` / keepalived's `include`), the change in one of them

Prints times and the ratios (a)/(b'), (a)/(b), (c)/(b); writes JSON next to
this file. Software emulation is 5-20x slower than hardware: compare ratios
from the same run, never absolute times across runs.

    .venv/bin/python bench/ipvs_apply/run.py [--sizes 1000,10000] [--split 100] [--only-f]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.ipvs_apply.workload import DESTS, ipvsadm_rules, rip, vip  # noqa: E402


def agent_config(n: int, state_dir: str, weight_of_last: int = 1) -> str:
    out = [f"state_dir: {state_dir}", "virtual_servers:"]
    for i in range(n):
        out.append(
            f"  - name: vs{i}\n    address: {vip(i)}\n    port: 80\n    scheduler: wlc\n"
            "    real_servers:"
        )
        for j in range(DESTS):
            w = weight_of_last if (i == n - 1 and j == DESTS - 1) else 1
            out.append(f"      - {{address: {rip(i, j)}, port: 8080, weight: {w}}}")
    return "\n".join(out) + "\n"


def agent_part(lo: int, hi: int, n: int, weight_of_last: int = 1) -> str:
    """An included file: services lo..hi-1 of ``n``."""
    text = agent_config(hi, "/unused", weight_of_last if hi == n else 1)
    entries = text.split("\n  - name: ")[1 + lo :]
    return "virtual_servers:\n  - name: " + "\n  - name: ".join(entries)


def keepalived_config(n: int, weight_of_last: int = 1, lo: int = 0, defs: bool = True) -> str:
    out = ["global_defs {\n  router_id bench\n}"] if defs else []
    for i in range(lo, n):
        out.append(
            f"virtual_server {vip(i)} 80 {{\n  delay_loop 3600\n  lb_algo wlc\n"
            "  lb_kind NAT\n  protocol TCP"
        )
        for j in range(DESTS):
            w = weight_of_last if (i == n - 1 and j == DESTS - 1) else 1
            out.append(f"  real_server {rip(i, j)} 8080 {{\n    weight {w}\n  }}")
        out.append("}")
    return "\n".join(out) + "\n"


@contextmanager
def fresh_netns() -> Iterator[str]:
    from agent.lab import netns

    name = f"bench-{uuid.uuid4().hex[:8]}"
    netns.add(name)
    try:
        yield name
    finally:
        netns.delete(name)
        settle()


def settle(limit: float = 120.0) -> float:
    """Wait until the CPUs are idle again; the seconds waited.

    A deleted namespace's IPVS table (50,000 objects at 10k) is torn down by a
    kernel worker after `ip netns delete` returns; whichever tool is timed next
    must not share the CPUs with that.
    """

    def jiffies() -> tuple[int, int]:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return sum(values) - values[3] - values[4], sum(values)  # busy, all

    start = time.monotonic()
    busy, total = jiffies()
    while time.monotonic() - start < limit:
        time.sleep(0.5)
        busy2, total2 = jiffies()
        if total2 > total and (busy2 - busy) / (total2 - total) < 0.05:
            break
        busy, total = busy2, total2
    return time.monotonic() - start


def timed_command(argv: list[str], stdin: str | None = None) -> tuple[float, int, int]:
    """(seconds, exit status, peak RSS in KiB) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE if stdin is not None else None,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    if stdin is not None:
        assert proc.stdin is not None
        proc.stdin.write(stdin.encode())
        proc.stdin.close()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        assert proc.stderr is not None
        print(
            f"  ! {' '.join(argv[:6])}...: exit {proc.returncode}: "
            f"{proc.stderr.read().decode()[-500:]}",
            file=sys.stderr,
        )
    return elapsed, proc.returncode, usage.ru_maxrss


def table_size(ns: str) -> tuple[int, int]:
    from agent.ipvs.kernel import IpvsKernel
    from agent.lab import netns

    with netns.entered(ns):
        kernel = IpvsKernel()
    with kernel:
        table = kernel.dump()
    return len(table), sum(len(s.dests) for s in table.values())


def engine_reconcile(
    ns: str, config_path: Path, timing: dict[str, float] | None = None
) -> tuple[float, Any, int, float]:
    """In-process parse + dump + plan + apply: (seconds, outcome, messages, apply seconds).

    ``timing`` receives the parse and dump seconds."""
    from agent.config import load_config
    from agent.ipvs.desired import desired_table
    from agent.ipvs.kernel import IpvsKernel
    from agent.ipvs.reconciler import reconcile
    from agent.ipvs.state import OwnershipStore
    from agent.lab import netns

    with netns.entered(ns):
        kernel = IpvsKernel()
    apply_time = 0.0
    messages = 0

    times = timing if timing is not None else {}

    class Timed:
        def dump(self):  # type: ignore[no-untyped-def]
            t = time.perf_counter()
            try:
                return kernel.dump()
            finally:
                times["dump"] = time.perf_counter() - t

        def get_timeouts(self):  # type: ignore[no-untyped-def]
            return kernel.get_timeouts()

        def apply(self, ops):  # type: ignore[no-untyped-def]
            nonlocal apply_time, messages
            before = kernel.counters.messages_sent
            t = time.perf_counter()
            try:
                return kernel.apply(ops)
            finally:
                apply_time += time.perf_counter() - t
                messages += kernel.counters.messages_sent - before

    with kernel:
        start = time.perf_counter()
        config = load_config(str(config_path))
        times["parse"] = time.perf_counter() - start
        outcome = reconcile(
            Timed(),
            OwnershipStore(Path(config.state_dir) / "ipvs-state.json"),
            desired_table(config.virtual_servers),
            config.ipvs,
        )
        elapsed = time.perf_counter() - start
    return elapsed, outcome, messages, apply_time


def last_weight(kernel: Any, n: int) -> int | None:
    """The weight of the last real server of the last service, or None if not there yet."""
    from agent.ipvs.model import AF_INET, IPPROTO_TCP, ServiceKey

    last = ServiceKey(AF_INET, IPPROTO_TCP, vip(n - 1), 80)
    found = kernel.dump_services([last])
    if last not in found or len(found[last].dests) != DESTS:
        return None
    return max(d.dest.weight for d in found[last].dests.values())


def reload_time(
    proc: subprocess.Popen[bytes], ns: str, n: int, rewrite: Any, timeout: float
) -> float:
    """Seconds from SIGHUP (after ``rewrite()`` gave the last real server weight 7)
    until the kernel shows that weight."""
    from agent.ipvs.kernel import IpvsKernel
    from agent.lab import netns

    with netns.entered(ns):
        kernel = IpvsKernel()
    with kernel:
        settle()
        rewrite()
        start = time.perf_counter()
        proc.send_signal(signal.SIGHUP)
        while time.perf_counter() - start < timeout:
            if last_weight(kernel, n) == 7:
                return time.perf_counter() - start
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args[4]} exited with {proc.returncode}")
            time.sleep(0.02)
    raise TimeoutError("the reload did not reach the kernel in time")


def keepalived_reload(ns: str, n: int, work: Path, timeout: float) -> float:
    """keepalived, loaded and idle, given a file with one weight changed (SIGHUP)."""
    conf = work / f"keepalived-reload-{n}.conf"
    conf.write_text(keepalived_config(n))
    proc = start_keepalived(ns, conf, work)
    try:
        wait_loaded(proc, ns, n, timeout)
        return reload_time(proc, ns, n, lambda: conf.write_text(keepalived_config(n, 7)), timeout)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)


def split_bounds(n: int, files: int) -> list[tuple[int, int]]:
    return [(k * n // files, (k + 1) * n // files) for k in range(files)]


def keepalived_split_reload(ns: str, n: int, files: int, work: Path, timeout: float) -> float:
    """keepalived with ``include`` of ``files`` files; the last one changes."""
    conf_d = work / f"keepalived-{n}-{files}.d"
    conf_d.mkdir(exist_ok=True)
    bounds = split_bounds(n, files)
    for k, (lo, hi) in enumerate(bounds):
        (conf_d / f"{k:04d}.conf").write_text(keepalived_config(hi, 1, lo, defs=False))
    conf = work / f"keepalived-{n}-{files}.conf"
    conf.write_text(f"global_defs {{\n  router_id bench\n}}\ninclude {conf_d}/*.conf\n")
    last = conf_d / f"{files - 1:04d}.conf"
    lo = bounds[-1][0]
    proc = start_keepalived(ns, conf, work)
    try:
        wait_loaded(proc, ns, n, timeout)
        return reload_time(
            proc, ns, n, lambda: last.write_text(keepalived_config(n, 7, lo, defs=False)), timeout
        )
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)


def agent_split_reload(ns: str, n: int, files: int, work: Path, timeout: float) -> float:
    """`lvs-agent run` with ``include`` of ``files`` files; the last one changes."""
    conf_d = work / f"agent-{n}-{files}.d"
    conf_d.mkdir(exist_ok=True)
    bounds = split_bounds(n, files)
    for k, (lo, hi) in enumerate(bounds):
        (conf_d / f"{k:04d}.yaml").write_text(agent_part(lo, hi, n))
    last = conf_d / f"{files - 1:04d}.yaml"
    lo = bounds[-1][0]
    main = (
        f"state_dir: {work}/state-split-{n}\nreconcile_interval: 1h\ninclude: [{conf_d}/*.yaml]\n"
    )
    return agent_reload(
        ns, n, work, timeout, main=main, rewrite=lambda: last.write_text(agent_part(lo, n, n, 7))
    )


def agent_reload(
    ns: str,
    n: int,
    work: Path,
    timeout: float,
    main: str | None = None,
    rewrite: Any = None,
) -> float:
    """`lvs-agent run`, past its first reconcile and idle, given a file with one
    weight changed (SIGHUP). ``main``/``rewrite``: another main file, and what
    makes the change (default: the whole file in one, rewritten)."""
    config = work / f"agent-reload-{n}{'-split' if main else ''}.yaml"
    state = str(work / f"state-reload-{n}")
    config.write_text(main or agent_config(n, state) + "reconcile_interval: 1h\n")
    log = work / f"agent-reload-{n}{'-split' if main else ''}.log"
    argv = ["ip", "netns", "exec", ns, "env", "LVS_AGENT_CACHE_DIR="]
    argv += [sys.executable, "-m", "agent", "run", "-c", str(config)]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        start = time.perf_counter()
        # Idle: the first full reconcile is over, and the configuration worker that
        # the daemon starts then has read the file (a large file; a small one is read
        # on the daemon's thread, without it).
        from agent.config.include import total_size
        from agent.daemon.worker import SMALL_FILE

        idle = ["reconcile: "]
        if total_size(str(config), SMALL_FILE) >= SMALL_FILE:
            idle.append("configuration worker ready")
        while not all(line in log.read_text() for line in idle):
            if proc.poll() is not None or time.perf_counter() - start > timeout:
                raise RuntimeError(f"lvs-agent run did not start: {log.read_text()[-500:]}")
            time.sleep(0.1)
        took = reload_time(
            proc,
            ns,
            n,
            rewrite
            or (lambda: config.write_text(agent_config(n, state, 7) + "reconcile_interval: 1h\n")),
            timeout,
        )
        time.sleep(1.0)  # the reload's own log lines
        for line in log.read_text().splitlines():
            if "reload" in line or "reconcile" in line or "worker" in line:
                # warnings whole: a worker's traceback is one line of them
                shown = line if line.startswith(("WARNING", "ERROR")) else line[:200]
                print(f"       | {shown}", flush=True)
        return took
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=timeout)


def start_keepalived(ns: str, conf: Path, work: Path) -> subprocess.Popen[bytes]:
    argv = ["ip", "netns", "exec", ns, "keepalived", "-n", "-l", "-D", "-C", "-f", str(conf)]
    argv += ["-p", str(work / "k.pid"), "-c", str(work / "c.pid"), "-r", str(work / "v.pid")]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_loaded(
    proc: subprocess.Popen[bytes], ns: str, n: int, timeout: float, start: float | None = None
) -> float:
    """Seconds from ``start`` (default: now) until the last configured real server
    is in the kernel."""
    from agent.ipvs.kernel import IpvsKernel
    from agent.lab import netns

    start = time.perf_counter() if start is None else start
    with netns.entered(ns):
        kernel = IpvsKernel()
    with kernel:
        while time.perf_counter() - start < timeout:
            if last_weight(kernel, n) is not None:
                return time.perf_counter() - start
            if proc.poll() is not None:
                raise RuntimeError(f"keepalived exited with {proc.returncode}")
            time.sleep(0.02)
    raise TimeoutError("keepalived did not load the table in time")


def keepalived_load(ns: str, conf: Path, n: int, work: Path, timeout: float) -> float:
    """Seconds from starting keepalived until the last configured real server is in the kernel."""
    start = time.perf_counter()
    proc = start_keepalived(ns, conf, work)
    try:
        return wait_loaded(proc, ns, n, timeout, start)
    finally:
        proc.send_signal(signal.SIGKILL)  # our own child; the namespace goes with the table
        proc.wait(timeout=30)


def run_split(n: int, files: int, work: Path) -> dict[str, Any]:
    """(f) only: one file and ``files`` files, agent and keepalived, one weight changed."""
    print(f"\n== {n} services x {DESTS} real servers: (f) reloads", flush=True)
    res: dict[str, Any] = {"services": n, "real_servers": n * DESTS, "files": files}
    settle()
    timeout = max(300, n * 0.1)
    with fresh_netns() as ns:
        res["keepalived_reload_s"] = keepalived_reload(ns, n, work, timeout)
    with fresh_netns() as ns:
        res["agent_reload_s"] = agent_reload(ns, n, work, timeout)
    print(
        f"  (f)  one file:   agent {res['agent_reload_s']:8.2f} s   "
        f"keepalived {res['keepalived_reload_s']:8.2f} s",
        flush=True,
    )
    with fresh_netns() as ns:
        res["keepalived_split_reload_s"] = keepalived_split_reload(ns, n, files, work, timeout)
    with fresh_netns() as ns:
        res["agent_split_reload_s"] = agent_split_reload(ns, n, files, work, timeout)
    print(
        f"  (f)  {files} files: agent {res['agent_split_reload_s']:8.2f} s   "
        f"keepalived {res['keepalived_split_reload_s']:8.2f} s   (SIGHUP -> in the kernel)",
        flush=True,
    )
    res["ratios"] = {
        "f_reload/keepalived_reload": res["agent_reload_s"] / res["keepalived_reload_s"],
        "f_split_reload/keepalived_split_reload": res["agent_split_reload_s"]
        / res["keepalived_split_reload_s"],
        "f_split_reload/f_reload": res["agent_split_reload_s"] / res["agent_reload_s"],
    }
    print("  ratios: " + "  ".join(f"{k} {v:.2f}" for k, v in res["ratios"].items()), flush=True)
    return res


def run_size(n: int, work: Path, split: int = 0) -> dict[str, Any]:
    print(f"\n== {n} services x {DESTS} real servers", flush=True)
    res: dict[str, Any] = {"services": n, "real_servers": n * DESTS}
    settle()
    rules = ipvsadm_rules(n)
    kconf = work / f"keepalived-{n}.conf"
    kconf.write_text(keepalived_config(n))
    python = sys.executable

    with fresh_netns() as ns:
        res["ipvsadm_restore_s"], rc, _ = timed_command(
            ["ip", "netns", "exec", ns, "ipvsadm-restore"], stdin=rules
        )
        assert rc == 0 and table_size(ns) == (n, n * DESTS)
        print(f"  (b)  ipvsadm-restore            {res['ipvsadm_restore_s']:8.2f} s", flush=True)
        # Reading the table back, in C: what any exact no-op must at least do.
        res["ipvsadm_save_s"], rc, _ = timed_command(
            ["ip", "netns", "exec", ns, "ipvsadm", "-S", "-n"]
        )
        assert rc == 0
        print(f"       ipvsadm -S -n (read back)  {res['ipvsadm_save_s']:8.2f} s", flush=True)
        # The one listing of every real server the kernel has; it lacks thresholds
        # and tunnel settings, so an exact reader cannot use it.
        res["proc_listing_s"], rc, _ = timed_command(
            ["ip", "netns", "exec", ns, "cat", "/proc/net/ip_vs"]
        )
        assert rc == 0
        print(f"       cat /proc/net/ip_vs        {res['proc_listing_s']:8.2f} s", flush=True)

    # What any command of this agent pays before it reads a byte: the bare
    # interpreter, and the interpreter with the command-line module imported.
    res["python_bare_s"], rc, _ = timed_command([python, "-I", "-S", "-c", "pass"])
    assert rc == 0
    res["python_cli_s"], rc, _ = timed_command([python, "-c", "import agent.cli"])
    assert rc == 0
    print(
        f"       python start-up            {res['python_bare_s']:8.2f} s   "
        f"(with agent.cli imported: {res['python_cli_s']:.2f} s; "
        f"(c)'s whole budget, 0.25 x (b): {0.25 * res['ipvsadm_restore_s']:.2f} s)",
        flush=True,
    )

    with fresh_netns() as ns:
        res["keepalived_s"] = keepalived_load(ns, kconf, n, work, timeout=max(120, n * 0.05))
        print(f"  (b') keepalived -C              {res['keepalived_s']:8.2f} s", flush=True)

    # (a) a new `lvs-agent apply` process on a file it has never seen (cold: the
    # YAML is read and the configuration cache filled), then (c) the same again
    # (warm: from the cache) and once more with the cache off; then (a) on an
    # empty table with the file seen before: a reboot, or a new network namespace.
    cache = work / f"cache-{n}"
    config = work / f"agent-cmd-{n}.yaml"
    config.write_text(agent_config(n, str(work / f"state-cmd-{n}")))

    def apply_cmd(ns: str, cache_dir: Path | str) -> list[str]:
        env = ["env", f"LVS_AGENT_CACHE_DIR={cache_dir}"]
        return ["ip", "netns", "exec", ns, *env, python, "-m", "agent", "apply", "-c", str(config)]

    with fresh_netns() as ns:
        res["agent_command_s"], rc, rss = timed_command(apply_cmd(ns, cache))
        assert rc == 0 and table_size(ns) == (n, n * DESTS), table_size(ns)
        res["agent_peak_rss_mb"] = rss / 1024
        res["agent_noop_command_s"], rc, rss2 = timed_command(apply_cmd(ns, cache))
        assert rc == 0
        res["agent_noop_peak_rss_mb"] = rss2 / 1024
        res["agent_noop_uncached_command_s"], rc, _ = timed_command(apply_cmd(ns, ""))
        assert rc == 0
    with fresh_netns() as ns:
        res["agent_cached_command_s"], rc, _ = timed_command(apply_cmd(ns, cache))
        assert rc == 0 and table_size(ns) == (n, n * DESTS), table_size(ns)
    print(
        f"  (a)  lvs-agent apply, new file  {res['agent_command_s']:8.2f} s   "
        f"peak RSS {res['agent_peak_rss_mb']:.0f} MB\n"
        f"  (a)  lvs-agent apply, file seen {res['agent_cached_command_s']:8.2f} s   "
        "(configuration cache; empty table)\n"
        f"  (c)  no-op apply (command)      {res['agent_noop_command_s']:8.2f} s   "
        f"(cache off: {res['agent_noop_uncached_command_s']:.2f} s)",
        flush=True,
    )

    # The same work inside a running agent (imports and interpreter already paid).
    with fresh_netns() as ns:
        config = work / f"agent-engine-{n}.yaml"
        config.write_text(agent_config(n, str(work / f"state-engine-{n}")))
        res["agent_engine_s"], outcome, msgs, apply_s = engine_reconcile(ns, config)
        assert outcome.ok and len(outcome.plan.steps) == n * (DESTS + 1)
        res["agent_engine_apply_s"] = apply_s
        res["agent_engine_messages"] = msgs
        timing: dict[str, float] = {}
        res["agent_noop_engine_s"], outcome, msgs, _ = engine_reconcile(ns, config, timing)
        assert not outcome.plan.steps and msgs == 0
        res["parse_s"], res["dump_s"] = timing["parse"], timing["dump"]
        # What a running daemon does every reconcile_interval: dump and plan, no parse.
        res["agent_periodic_reconcile_s"] = res["agent_noop_engine_s"] - timing["parse"]
        print(
            f"  (a)  apply (engine)             {res['agent_engine_s']:8.2f} s   "
            f"(of which netlink apply {apply_s:.2f} s, {res['agent_engine_messages']} messages)",
            flush=True,
        )
        print(
            f"  (c)  no-op (engine)             {res['agent_noop_engine_s']:8.2f} s   "
            f"(parse {res['parse_s']:.2f} s, dump {res['dump_s']:.2f} s)",
            flush=True,
        )
        print(
            f"  (c)  periodic reconcile (daemon){res['agent_periodic_reconcile_s']:8.2f} s   "
            "(dump + plan, configuration already in memory)",
            flush=True,
        )
        config.write_text(agent_config(n, str(work / f"state-engine-{n}"), weight_of_last=7))
        res["weight_change_reconcile_s"], outcome, msgs, apply_s = engine_reconcile(ns, config)
        assert [type(op).__name__ for op in outcome.plan.ops] == ["EditDest"], outcome.plan.ops
        res["weight_change_ops"] = len(outcome.plan.ops)
        res["weight_change_messages"] = msgs
        res["weight_change_op_ms"] = apply_s * 1000
        print(
            f"  (d)  one weight change          {res['weight_change_ops']} op, {msgs} netlink "
            f"message, {apply_s * 1000:.1f} ms for the operation, "
            f"{res['weight_change_reconcile_s']:.2f} s for the whole reconcile",
            flush=True,
        )
    # (f) the same one-weight change made by a running daemon's reload (SIGHUP).
    with fresh_netns() as ns:
        res["keepalived_reload_s"] = keepalived_reload(ns, n, work, timeout=max(120, n * 0.05))
    with fresh_netns() as ns:
        res["agent_reload_s"] = agent_reload(ns, n, work, timeout=max(300, n * 0.1))
    print(
        f"  (f)  reload, one weight change  {res['agent_reload_s']:8.2f} s   "
        f"(keepalived: {res['keepalived_reload_s']:.2f} s; SIGHUP -> in the kernel)",
        flush=True,
    )
    b, bk = res["ipvsadm_restore_s"], res["keepalived_s"]
    res["ratios"] = {
        "a_command/b'": res["agent_command_s"] / bk,
        "a_cached_command/b'": res["agent_cached_command_s"] / bk,
        "a_engine/b'": res["agent_engine_s"] / bk,
        "a_command/b": res["agent_command_s"] / b,
        "a_engine/b": res["agent_engine_s"] / b,
        "c_command/b": res["agent_noop_command_s"] / b,
        "c_uncached_command/b": res["agent_noop_uncached_command_s"] / b,
        "c_engine/b": res["agent_noop_engine_s"] / b,
        "c_periodic/b": res["agent_periodic_reconcile_s"] / b,
        "save/b": res["ipvsadm_save_s"] / b,
        "python_cli/b": res["python_cli_s"] / b,
        "c_command/save": res["agent_noop_command_s"] / res["ipvsadm_save_s"],
        "b'/b": bk / b,
        "f_reload/keepalived_reload": res["agent_reload_s"] / res["keepalived_reload_s"],
    }
    if split:
        with fresh_netns() as ns:
            res["keepalived_split_reload_s"] = keepalived_split_reload(
                ns, n, split, work, timeout=max(120, n * 0.05)
            )
        with fresh_netns() as ns:
            res["agent_split_reload_s"] = agent_split_reload(
                ns, n, split, work, timeout=max(300, n * 0.1)
            )
        res["split_files"] = split
        print(
            f"  (f)  the same, {split} files   {res['agent_split_reload_s']:8.2f} s   "
            f"(keepalived: {res['keepalived_split_reload_s']:.2f} s)",
            flush=True,
        )
        res["ratios"]["f_split_reload/keepalived_split_reload"] = (
            res["agent_split_reload_s"] / res["keepalived_split_reload_s"]
        )
    print("  ratios: " + "  ".join(f"{k} {v:.2f}" for k, v in res["ratios"].items()), flush=True)
    return res


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument(
        "--split", type=int, default=0, help="(f) also with the services in this many files"
    )
    parser.add_argument(
        "--only-f", action="store_true", help="the reloads (f) only, one file and --split files"
    )
    parser.add_argument("--out", default=str(Path(__file__).with_name("results.json")))
    args = parser.parse_args()
    if args.only_f and args.out == parser.get_default("out"):
        args.out = str(Path(__file__).with_name("results-f.json"))
    from agent.lab.topology import ipvs_available

    if not ipvs_available():
        from agent.lab.vm import run_in_vm

        print("no IPVS in this kernel: running in the lab VM (software emulation)", flush=True)
        cmd = (
            f"cd {shlex.quote(str(ROOT))} && {shlex.quote(sys.executable)} "
            f"{shlex.quote(__file__)} --sizes {args.sizes} --out {shlex.quote(args.out)}"
            f" --split {args.split}{' --only-f' if args.only_f else ''}"
        )
        return run_in_vm(cmd, rwdirs=[str(ROOT)], memory="4G")
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "virtualized": Path("/sys/hypervisor").exists()
        or "virtme" in " ".join(Path("/proc/cmdline").read_text().split()),
        "sizes": [],
    }
    with tempfile.TemporaryDirectory(prefix="ipvs-bench-") as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            if args.only_f:
                results["sizes"].append(run_split(n, args.split or 100, Path(tmp)))
            else:
                results["sizes"].append(run_size(n, Path(tmp), args.split))
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nwritten {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
