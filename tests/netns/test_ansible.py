"""ansible/: lint clean under the production profile, and a real deployment of site.yml.

The deployment runs ``ansible-playbook`` inside a booted systemd container
(tests/netns/nspawn.py) with ``ansible_connection=local``: one director (VRRP only: the
host kernel has no IPVS), one witness and one direct-routing real server, the agent
installed by the role from a wheel of this tree into /opt/lvs-agent, offline (pip reads
only a wheelhouse built here and bound into the container)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.check_skips import skip_or_fail
from tests.netns.nspawn import REPO, Container
from tests.netns.support import metric, wait_until

ANSIBLE = REPO / "ansible"
BIN = Path(sys.executable).parent
DEPLOY = "/srv/deploy"
VIP = "10.99.0.100"
RS_VIP = "10.99.0.200"
KEY = "1 " + "cd" * 32

INVENTORY = """\
[directors]
director1 lvs_address=10.99.0.1 lvs_vrrp_priority=150
[witnesses]
witness1 lvs_address=10.99.0.2
[real_servers]
web1 lvs_address=10.99.0.2
[all:vars]
ansible_connection=local
ansible_python_interpreter=/usr/bin/python3
"""


def director_vars(
    wheel: str, wheelhouse: str, priority: int = 150, vrid: int = 51, realtime: int | None = None
) -> str:
    rt = "" if realtime is None else f", realtime_priority: {realtime}"
    return f"""\
lvs_agent_wheel: {wheel}
lvs_agent_pip_find_links: {wheelhouse}
lvs_agent_key_files: {{}}
lvs_agent_config:
  node: {{name: director1{rt}}}
  metrics: {{listen: "127.0.0.1:9469"}}
  vrrp_instances:
    - name: web
      interface: v0
      vrid: {vrid}
      priority: {priority}
      advert_interval: 100ms
      virtual_ips: ["{VIP}/24"]
"""


def witness_vars(wheel: str, wheelhouse: str) -> str:
    return f"""\
lvs_agent_wheel: {wheel}
lvs_agent_pip_find_links: {wheelhouse}
lvs_cluster_key: "{KEY}"
lvs_witness_config:
  state_dir: /var/lib/lvs-witness
  metrics: {{listen: "127.0.0.1:9470"}}
  witness:
    clusters:
      - cluster: lb-test
        listen: "10.99.0.2:6741"
        key_file: /etc/lvs-agent/cluster.key
        peers: {{director1: "10.99.0.1:6741", director2: "10.99.0.3:6741",
                 witness1: "10.99.0.2:6741"}}
"""


def test_lint_production_profile() -> None:
    lint = BIN / "ansible-lint"
    if not lint.exists():
        skip_or_fail("needs ansible-lint (the test extra)")
    done = subprocess.run(
        [str(lint), "--offline", "--profile=production", "."],
        cwd=ANSIBLE,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This tree's wheel and its dependencies' (built from a copy: the tree stays clean)."""
    if not (BIN / "ansible-playbook").exists():
        skip_or_fail("needs ansible-core (the test extra)")
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "agent", src / "agent", ignore=shutil.ignore_patterns("__pycache__"))
    house = work / "wheelhouse"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "-w", str(house), str(src)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return house


@pytest.fixture(scope="module")
def box(wheelhouse: Path) -> Iterator[Container]:
    if shutil.which("systemd-nspawn") is None:
        skip_or_fail("needs systemd-nspawn (Debian systemd-container)")
    with Container("lvsans", binds=(str(wheelhouse),)) as c:
        wheel = str(next(wheelhouse.glob("lvs_agent-*.whl")))
        c.write(f"{DEPLOY}/inventory/hosts.ini", INVENTORY)
        c.write(
            f"{DEPLOY}/inventory/host_vars/director1.yml", director_vars(wheel, str(wheelhouse))
        )
        c.write(f"{DEPLOY}/inventory/host_vars/witness1.yml", witness_vars(wheel, str(wheelhouse)))
        c.write(f"{DEPLOY}/inventory/host_vars/web1.yml", f'lvs_realserver_vips: ["{RS_VIP}"]\n')
        yield c


def play(box: Container, *extra: str) -> subprocess.CompletedProcess[str]:
    return box.run(
        str(BIN / "ansible-playbook"), "-i", f"{DEPLOY}/inventory", str(ANSIBLE / "site.yml"),
        *extra,
        check=False, timeout=600,
        env={"ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0", "HOME": "/root",
             "PATH": f"{BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
    )  # fmt: skip


def recap(out: str) -> dict[str, dict[str, int]]:
    hosts = {}
    for host, counts in re.findall(r"^(\S+)\s+: (ok=.*)$", out, re.M):
        hosts[host] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", counts)}
    return hosts


def active(box: Container, unit: str) -> str:
    return box.run("systemctl", "is-active", unit, check=False).stdout.strip()


def main_pid(box: Container, unit: str) -> str:
    return box.run("systemctl", "show", "-p", "MainPID", "--value", unit).stdout.strip()


def scrape(box: Container, port: int) -> str:
    return box.run(
        "/usr/bin/python3", "-c",
        f"import urllib.request; print(urllib.request.urlopen("
        f"'http://127.0.0.1:{port}/metrics', timeout=5).read().decode())",
        check=False,
    ).stdout  # fmt: skip


def has_address(box: Container, dev: str, address: str) -> bool:
    return f"inet {address}/" in box.run("ip", "-4", "addr", "show", "dev", dev).stdout


def exposure(box: Container, unit: str) -> float:
    out = box.run("systemd-analyze", "security", "--no-pager", unit).stdout
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out)
    assert found, out
    return float(found.group(1))


def journal(box: Container, unit: str) -> str:
    return box.run("journalctl", "--no-pager", "-o", "cat", "-u", unit).stdout


@pytest.fixture(scope="module")
def deployed(box: Container) -> Container:
    """The first run of site.yml on the fresh container."""
    first = play(box)
    assert first.returncode == 0, first.stdout[-6000:] + first.stderr[-2000:]
    return box


def test_site_deploys_reloads_and_is_idempotent(deployed: Container, wheelhouse: Path) -> None:
    box = deployed
    for unit in ("lvs-agent.service", "lvs-agent-witness.service", "lvs-realserver-vips.service"):
        assert active(box, unit) == "active", unit
    wait_until("the director's VIP", lambda: has_address(box, "v0", VIP), 15)
    assert has_address(box, "lo", RS_VIP)
    assert box.run("sysctl", "-n", "net.ipv4.conf.all.arp_ignore").stdout.strip() == "1"
    assert box.run("sysctl", "-n", "net.ipv4.conf.all.arp_announce").stdout.strip() == "2"
    assert "started: 0 virtual servers" in journal(box, "lvs-agent.service")
    assert "witness: serving 1 cluster(s)" in journal(box, "lvs-agent-witness.service")
    text = scrape(box, 9469)
    assert metric(text, "lvs_agent_vrrp_state", instance="web") == 2.0
    wait_until("the witness's metrics", lambda: "lvs_agent_lock_members" in scrape(box, 9470), 15)
    for unit in ("lvs-agent.service", "lvs-agent-witness.service"):
        assert exposure(box, unit) <= 2.0, unit
    stat = box.run("stat", "-c", "%a %U", "/etc/lvs-agent/cluster.key").stdout.split()
    assert stat == ["600", "lvs-agent"]
    assert "/opt/lvs-agent/bin/lvs-agent" in box.run("readlink", "/usr/local/bin/lvs-agent").stdout

    again = play(box)
    assert again.returncode == 0, again.stdout[-4000:]
    counts = recap(again.stdout)
    assert set(counts) == {"director1", "witness1", "web1"}, again.stdout[-2000:]
    assert all(c["changed"] == 0 for c in counts.values()), again.stdout

    # A changed configuration is a reload: same process, VRRP still master, no transition.
    pid = main_pid(box, "lvs-agent.service")
    entered = metric(text, "lvs_agent_vrrp_transitions_total", instance="web", state="master")
    wheel = str(next(wheelhouse.glob("lvs_agent-*.whl")))
    box.write(
        f"{DEPLOY}/inventory/host_vars/director1.yml",
        director_vars(wheel, str(wheelhouse), priority=160),
    )
    changed = play(box, "--limit", "director1")
    assert changed.returncode == 0, changed.stdout[-4000:]
    assert "RUNNING HANDLER [lvs_agent : Reload lvs-agent]" in changed.stdout
    assert "Restart lvs-agent" not in changed.stdout
    wait_until(
        "the reload's log line",
        lambda: "lvs-agent: reload: " in journal(box, "lvs-agent.service"),
        15,
    )
    assert main_pid(box, "lvs-agent.service") == pid
    text = scrape(box, 9469)
    assert metric(text, "lvs_agent_vrrp_state", instance="web") == 2.0
    assert metric(text, "lvs_agent_vrrp_effective_priority", instance="web") == 160.0
    assert (
        metric(text, "lvs_agent_vrrp_transitions_total", instance="web", state="master") == entered
    )
    assert has_address(box, "v0", VIP)

    # node.realtime_priority brings the unit's real-time drop-in (a restart: the unit's
    # sandbox changes), and taking the key out takes the drop-in away again.
    dropin = "/etc/systemd/system/lvs-agent.service.d/realtime.conf"
    for realtime in (10, None):
        box.write(
            f"{DEPLOY}/inventory/host_vars/director1.yml",
            director_vars(wheel, str(wheelhouse), priority=160, realtime=realtime),
        )
        changed = play(box, "--limit", "director1")
        assert changed.returncode == 0, changed.stdout[-4000:]
        assert "RUNNING HANDLER [lvs_agent : Restart lvs-agent]" in changed.stdout
        present = box.run("test", "-f", dropin, check=False).returncode == 0
        assert present == (realtime is not None)
        assert active(box, "lvs-agent.service") == "active"
        pid = main_pid(box, "lvs-agent.service")
        expected = "SCHED_RR|SCHED_RESET_ON_FORK" if realtime else "SCHED_OTHER"
        wait_until(
            f"the loop at {expected}",
            lambda: f"policy: {expected}" in box.run("chrt", "-p", pid).stdout,  # noqa: B023
            15,
        )


def test_wrong_variable_type_fails_before_any_task(box: Container) -> None:
    done = play(box, "--limit", "director1", "-e", '{"lvs_agent_sysctls": ["ip_forward"]}')
    assert done.returncode != 0
    assert "Validating arguments against arg spec" in done.stdout
    assert "lvs_agent_sysctls" in done.stdout, done.stdout[-3000:]
    assert "Create the lvs-agent group" not in done.stdout


def test_invalid_configuration_fails_at_validate_and_keeps_the_file(
    deployed: Container, wheelhouse: Path
) -> None:
    box = deployed
    assert active(box, "lvs-agent.service") == "active"
    before = box.run("cat", "/etc/lvs-agent/config.yaml").stdout
    pid = main_pid(box, "lvs-agent.service")
    wheel = str(next(wheelhouse.glob("lvs_agent-*.whl")))
    box.write(
        f"{DEPLOY}/inventory/host_vars/director1.yml",
        director_vars(wheel, str(wheelhouse), vrid=300),
    )
    done = play(box, "--limit", "director1")
    assert done.returncode != 0
    assert "failed to validate" in done.stdout, done.stdout[-4000:]
    assert "vrrp_instances[0].vrid: must be 1..255, got 300" in done.stdout
    assert box.run("cat", "/etc/lvs-agent/config.yaml").stdout == before
    assert active(box, "lvs-agent.service") == "active"
    assert main_pid(box, "lvs-agent.service") == pid
