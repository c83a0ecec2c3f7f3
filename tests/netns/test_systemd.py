"""The shipped systemd units, run by a real systemd: a container booted from this host's
tree (tests/netns/nspawn.py) with the units installed as the Ansible role installs them,
the agent from this repository (read-only) and a VRRP-only configuration on a veth pair in
a namespace made for the test (the host kernel has no IPVS)."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator

import pytest

from agent.daemon.worker import NICE as WORKER_NICE
from agent.daemon.worker import SMALL_FILE
from tests.check_skips import skip_or_fail
from tests.netns.nspawn import REPO, REPO_IN, Container
from tests.netns.support import metric, wait_until

UNITS = REPO / "agent" / "packaging" / "systemd"
VIP = "10.99.0.100"
KEY = "1 " + "ab" * 32 + "\n"

AGENT_CONFIG = (
    f"""\
node: {{name: director1}}
metrics: {{listen: "127.0.0.1:9469"}}
vrrp_instances:
  - {{name: web, interface: v0, vrid: 51, priority: 150, advert_interval: 100ms,
     virtual_ips: [{VIP}/24]}}
# Comments past SMALL_FILE bytes: the daemon reads this file in its configuration worker.
"""
    + ("#" * 99 + "\n") * (SMALL_FILE // 100 + 1)
)

WITNESS_CONFIG = """\
state_dir: /var/lib/lvs-witness
metrics: {listen: "127.0.0.1:9470"}
witness:
  clusters:
    - {cluster: lb-test, listen: "10.99.0.2:6741", key_file: /etc/lvs-agent/cluster.key,
       peers: {director1: "10.99.0.1:6741", director2: "10.99.0.3:6741",
               witness1: "10.99.0.2:6741"}}
"""

# The repository's venv, seen from a venv made with the container's /usr/bin/python3 (the
# repository venv's own interpreter may live under /root, which the units hide), through
# REPO_IN (the clone itself may live under /tmp or /root, hidden from the units too).
SHIM = f"""\
useradd --system --home-dir /var/lib/lvs-agent --shell /usr/sbin/nologin lvs-agent
/usr/bin/python3 -m venv --without-pip /opt/lvs-agent
site=$(/opt/lvs-agent/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
repo_site=$(ls -d {REPO_IN}/.venv/lib/python3*/site-packages)
printf '%s\\n' {REPO_IN} "import site; site.addsitedir('$repo_site')" \\
    > "$site/lvs-agent-repo.pth"
printf '#!/opt/lvs-agent/bin/python\\nfrom agent.cli import run\\nrun()\\n' \\
    > /opt/lvs-agent/bin/lvs-agent
chmod 755 /opt/lvs-agent/bin/lvs-agent
ln -s /opt/lvs-agent/bin/lvs-agent /usr/local/bin/lvs-agent
install -d -m 0755 /etc/lvs-agent
chgrp lvs-agent /etc/lvs-agent/config.yaml /etc/lvs-agent/witness.yaml
chown lvs-agent: /etc/lvs-agent/cluster.key
cp {UNITS}/lvs-agent.service {UNITS}/lvs-agent-witness.service /etc/systemd/system/
systemctl daemon-reload
"""


@pytest.fixture(scope="module")
def box() -> Iterator[Container]:
    if shutil.which("systemd-nspawn") is None:
        skip_or_fail("needs systemd-nspawn (Debian systemd-container)")
    with Container("lvsunit") as c:
        c.write("/etc/lvs-agent/config.yaml", AGENT_CONFIG, 0o640)
        c.write("/etc/lvs-agent/witness.yaml", WITNESS_CONFIG, 0o640)
        c.write("/etc/lvs-agent/cluster.key", KEY, 0o600)
        c.sh(SHIM)
        yield c


def scrape(box: Container, port: int, check: bool = True) -> str:
    return box.run(
        "/usr/bin/python3", "-c",
        f"import urllib.request; print(urllib.request.urlopen("
        f"'http://127.0.0.1:{port}/metrics', timeout=5).read().decode())",
        check=check,
    ).stdout  # fmt: skip


def exposure(box: Container, unit: str) -> float:
    out = box.run("systemd-analyze", "security", "--no-pager", unit).stdout
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out)
    assert found, out
    return float(found.group(1))


def has_vip(box: Container) -> bool:
    return f"inet {VIP}/24" in box.run("ip", "-4", "addr", "show", "dev", "v0").stdout


def worker_nice(box: Container) -> list[str]:
    out = box.run("ps", "-eo", "ni,args", "--no-headers").stdout
    return [line.split()[0] for line in out.splitlines() if "agent.daemon.worker" in line]


def journal(box: Container, unit: str) -> str:
    return box.run("journalctl", "--no-pager", "-o", "cat", "-u", unit).stdout


def test_agent_unit_runs_reloads_and_stops(box: Container) -> None:
    box.run("systemctl", "start", "lvs-agent.service")
    assert box.run("systemctl", "is-active", "lvs-agent.service").stdout.strip() == "active"
    wait_until("the VIP on the only director", lambda: has_vip(box), 15)
    assert "started: 0 virtual servers from /etc/lvs-agent/config.yaml" in journal(
        box, "lvs-agent.service"
    )
    text = scrape(box, 9469)
    assert metric(text, "lvs_agent_vrrp_state", instance="web") == 2.0
    entered = metric(text, "lvs_agent_vrrp_transitions_total", instance="web", state="master")
    status = box.run("systemctl", "show", "-p", "MainPID,User", "lvs-agent.service").stdout
    pid = re.search(r"MainPID=(\d+)", status)
    assert pid and "User=lvs-agent" in status
    caps = box.run("grep", "^Cap", f"/proc/{pid.group(1)}/status").stdout
    # CAP_NET_ADMIN (12) and CAP_NET_RAW (13) and nothing else, as an unprivileged user
    assert "CapEff:\t0000000000003000" in caps and "CapBnd:\t0000000000003000" in caps
    # systemd's view: the one-line status and the watchdog the agent pings.
    def shown() -> str:
        props = "StatusText,WatchdogUSec"
        return box.run("systemctl", "show", "-p", props, "lvs-agent.service").stdout

    wait_until(
        "the status line",
        lambda: "StatusText=VRRP web MASTER; 0 services; 0 real servers" in shown(),
        10,
    )
    assert "WatchdogUSec=30s" in shown()
    assert "systemd watchdog: pinging every 15s" in journal(box, "lvs-agent.service")
    # lvs-agent status from root, through the socket in the unit's RuntimeDirectory.
    answer = json.loads(box.run("lvs-agent", "status", "--json").stdout)
    assert [(i["name"], i["state"]) for i in answer["vrrp"]] == [("web", "MASTER")]
    assert box.run("stat", "-c", "%a %U", "/run/lvs-agent/agent.sock").stdout.split() == [
        "600",
        "lvs-agent",
    ]
    # The configuration worker lowers its priority (setpriority is let through the filter).
    wait_until("the configuration worker", lambda: bool(worker_nice(box)), 15)
    assert worker_nice(box) == [str(WORKER_NICE)]

    box.run("systemctl", "reload", "lvs-agent.service")
    wait_until(
        "the reload's log line",
        lambda: "lvs-agent: reload: " in journal(box, "lvs-agent.service"),
        15,
    )
    assert box.run("systemctl", "is-active", "lvs-agent.service").stdout.strip() == "active"
    assert has_vip(box)
    text = scrape(box, 9469)
    assert metric(text, "lvs_agent_vrrp_state", instance="web") == 2.0
    assert (
        metric(text, "lvs_agent_vrrp_transitions_total", instance="web", state="master") == entered
    )
    after = box.run("systemctl", "show", "-p", "MainPID", "lvs-agent.service").stdout
    assert f"MainPID={pid.group(1)}" in after  # reloaded, not restarted

    assert exposure(box, "lvs-agent.service") <= 2.0

    box.run("systemctl", "stop", "lvs-agent.service")
    assert not has_vip(box)
    assert box.run("systemctl", "is-active", "lvs-agent.service", check=False).stdout.strip() in (
        "inactive",
        "failed",
    )
    assert "Deactivated successfully" in journal(box, "lvs-agent.service")


def test_witness_unit_serves_its_cluster(box: Container) -> None:
    box.run("systemctl", "start", "lvs-agent-witness.service")
    wait_until(
        "the witness's metrics",
        lambda: "lvs_agent_lock_members" in scrape(box, 9470, check=False),
        15,
    )
    assert box.run("systemctl", "is-active", "lvs-agent-witness.service").stdout.strip() == "active"
    assert "witness: serving 1 cluster(s)" in journal(box, "lvs-agent-witness.service")
    assert metric(scrape(box, 9470), "lvs_agent_lock_members", cluster="lb-test") == 3.0
    assert exposure(box, "lvs-agent-witness.service") <= 2.0
    box.run("systemctl", "stop", "lvs-agent-witness.service")


def test_sandbox_lets_the_agent_write_only_the_net_sysctls_it_names(box: Container) -> None:
    """The agent keeps net.ipv4.vs.* in place through ``ReadWritePaths=`` under
    ``ProtectKernelTunables=``. This kernel has no IPVS, so the same sandbox (the unit's
    own lines) runs with another per-namespace sysctl directory in that place: as the
    lvs-agent user with CAP_NET_ADMIN it writes there, and nowhere else in /proc/sys."""
    skip = ("Type", "ExecStart", "ExecReload", "Restart", "RestartSec")
    props = []
    service = (UNITS / "lvs-agent.service").read_text().split("[Service]")[1].split("[")[0]
    for line in service.splitlines():
        if not line or line.startswith("#") or line.split("=")[0] in skip:
            continue
        props += ["-p", line.replace("/proc/sys/net/ipv4/vs", "/proc/sys/net/ipv4/conf/v1")]
    assert "ReadWritePaths=-/proc/sys/net/ipv4/conf/v1" in props
    for dev in ("v0", "v1"):
        box.run("sysctl", "-w", f"net.ipv4.conf.{dev}.arp_ignore=0")
    done = box.run(
        "systemd-run", "--wait", "--pipe", "--quiet", *props,
        "/bin/sh", "-c",
        "echo 1 > /proc/sys/net/ipv4/conf/v1/arp_ignore;"
        " echo 1 > /proc/sys/net/ipv4/conf/v0/arp_ignore",
        check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "Read-only file system" in done.stderr, done.stderr
    assert box.run("sysctl", "-n", "net.ipv4.conf.v1.arp_ignore").stdout.strip() == "1"
    assert box.run("sysctl", "-n", "net.ipv4.conf.v0.arp_ignore").stdout.strip() == "0"


def schedulers(box: Container, pid: str) -> dict[str, str]:
    """Thread id -> ``chrt -p``'s policy and priority, for every thread of ``pid``."""
    out = {}
    for tid in box.run("ls", f"/proc/{pid}/task").stdout.split():
        shown = box.run("chrt", "-p", tid).stdout
        policy = re.search(r"policy: (\S+)", shown)
        prio = re.search(r"priority: (\d+)", shown)
        assert policy and prio, shown
        out[tid] = f"{policy.group(1)} {prio.group(1)}"
    return out


def test_realtime_priority_needs_the_drop_in_and_is_only_the_loops(box: Container) -> None:
    """``node.realtime_priority`` under the packaged unit is refused (RestrictRealtime, no
    CAP_SYS_NICE): logged, counted, VRRP runs on. With the shipped drop-in the loop's
    thread alone runs at SCHED_RR; its other threads and the configuration worker do
    not; a reload without the key puts the loop back."""
    config = AGENT_CONFIG.replace(
        "node: {name: director1}", "node: {name: director1, realtime_priority: 10}"
    )
    dropin = "/etc/systemd/system/lvs-agent.service.d/realtime.conf"
    box.write("/etc/lvs-agent/config.yaml", config, 0o640)
    box.run("chgrp", "lvs-agent", "/etc/lvs-agent/config.yaml")
    try:
        box.run("systemctl", "start", "lvs-agent.service")
        wait_until("the VIP", lambda: has_vip(box), 15)
        assert "cannot run at SCHED_RR (Operation not permitted)" in journal(
            box, "lvs-agent.service"
        )
        assert metric(scrape(box, 9469), "lvs_agent_errors_total", kind="scheduling") == 1.0
        box.run("systemctl", "stop", "lvs-agent.service")

        box.write(dropin, (UNITS / "realtime.conf").read_text())
        box.run("systemctl", "daemon-reload")
        box.run("systemctl", "start", "lvs-agent.service")
        wait_until("the VIP", lambda: has_vip(box), 15)
        wait_until("the configuration worker", lambda: bool(worker_nice(box)), 15)
        pid = box.run("systemctl", "show", "-p", "MainPID", "--value", "lvs-agent.service")
        pid_s = pid.stdout.strip()
        threads = schedulers(box, pid_s)
        assert threads.pop(pid_s) == "SCHED_RR|SCHED_RESET_ON_FORK 10", journal(
            box, "lvs-agent.service"
        )[-3000:]
        assert threads and set(threads.values()) == {"SCHED_OTHER 0"}, threads
        worker = box.run("pgrep", "-f", "agent.daemon.worker").stdout.split()
        assert worker and schedulers(box, worker[0])[worker[0]] == "SCHED_OTHER 0"
        assert worker_nice(box) == [str(WORKER_NICE)]
        assert "event loop at SCHED_RR 10" in journal(box, "lvs-agent.service")
        assert metric(scrape(box, 9469), "lvs_agent_errors_total", kind="scheduling") is None

        box.write("/etc/lvs-agent/config.yaml", AGENT_CONFIG, 0o640)
        box.run("chgrp", "lvs-agent", "/etc/lvs-agent/config.yaml")
        box.run("systemctl", "reload", "lvs-agent.service")
        wait_until(
            "the loop back at normal priority",
            lambda: schedulers(box, pid_s)[pid_s].startswith("SCHED_OTHER"),
            15,
        )
        assert has_vip(box)
    finally:
        box.run("systemctl", "stop", "lvs-agent.service", check=False)
        box.run("rm", "-f", dropin)
        box.run("systemctl", "daemon-reload")
        box.write("/etc/lvs-agent/config.yaml", AGENT_CONFIG, 0o640)
        box.run("chgrp", "lvs-agent", "/etc/lvs-agent/config.yaml")
