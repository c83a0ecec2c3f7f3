"""``lvs-agent maint`` and ``failover`` without a running agent (no socket answers)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )


def config(tmp_path: Path) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(
        f"state_dir: {tmp_path / 'state'}\n"
        "virtual_servers:\n"
        "  - {name: web, address: '2001:db8::a', port: 80, protocol: tcp,\n"
        "     real_servers: [{address: '2001:db8::2', port: 80},\n"
        "                    {address: '2001:db8::1', port: 80}]}\n"
    )
    (tmp_path / "state").mkdir(mode=0o700)
    return path


def test_maint_without_agent_writes_the_file(tmp_path: Path) -> None:
    c = config(tmp_path)
    on = run("maint", "web", "[2001:DB8::1]:80", "on", "-c", str(c))
    assert on.returncode == 0, on.stderr
    assert "web [2001:db8::1]:80 now in maintenance (no running agent" in on.stdout
    saved = json.loads((tmp_path / "state" / "maintenance.json").read_text())
    assert saved["maintenance"] == [{"virtual_server": "web", "address": "2001:db8::1", "port": 80}]
    again = run("maint", "web", "[2001:db8::1]:80", "on", "-c", str(c))
    assert "already in maintenance" in again.stdout
    unknown = run("maint", "web", "[2001:db8::9]:80", "off", "-c", str(c))
    assert unknown.returncode == 1
    assert "virtual server 'web' has no real server [2001:db8::9]:80" in unknown.stderr
    bad = run("maint", "web", "host:80", "on", "-c", str(c))
    assert bad.returncode == 1 and "not an IP address" in bad.stderr


def test_failover_of_an_instance_needs_a_running_agent(tmp_path: Path) -> None:
    out = run("failover", "web", "-c", str(config(tmp_path)))
    assert out.returncode == 1
    assert "no running agent answered" in out.stderr
