"""``lvs-agent check-health`` against real listeners in a namespace: one up, one refused,
one answering 503; its lines, ``--json``, ``--virtual-server`` and exit codes 0, 3 and 1.

The command runs as its own process inside the checker namespace, as an operator
runs it, with the configuration file of a director whose real servers are the
target namespace's ports.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from agent.lab import netns

from .conftest import TARGET_IP, Site

ROOT = Path(__file__).resolve().parents[3]
UP, REFUSED, BUSY, TCP_ONLY = 8201, 8202, 8203, 8204

CONFIG = f"""\
virtual_servers:
  - name: web
    address: 192.0.2.10
    port: 80
    health_checks:
      - {{type: http, path: /, expect_status: [200-299], timeout: 2s}}
    real_servers:
      - {{address: {TARGET_IP}, port: {UP}}}
      - {{address: {TARGET_IP}, port: {REFUSED}}}
      - {{address: {TARGET_IP}, port: {BUSY}}}
  - name: healthy
    address: 192.0.2.10
    port: 443
    real_servers:
      - {{address: {TARGET_IP}, port: {TCP_ONLY}, health_checks: [{{type: tcp, timeout: 2s}}]}}
      # the same target as web's first: the same http check is probed once for both
      - {{address: {TARGET_IP}, port: {UP}, health_checks: [{{type: http, timeout: 2s}}]}}
"""


def check_health(site: Site, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "agent", "check-health", "-c", str(config), *args]
    return subprocess.run(
        netns.exec_argv(site.checker, argv),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_health_reports_each_check_once(site: Site, tmp_path: Path) -> None:
    site.modes(tcp={UP: "ok", REFUSED: "closed", BUSY: "503", TCP_ONLY: "ok"})
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)

    done = check_health(site, config)
    assert done.returncode == 3, done
    lines = [line.split() for line in done.stdout.splitlines()]
    got = {(cells[1], cells[2], cells[3]): cells for cells in lines}
    assert len(lines) == 5, done.stdout
    up = got["web", f"{TARGET_IP}:{UP}", "http"]
    assert up[0] == "ok" and up[5:7] == ["status", "200"], up
    refused = got["web", f"{TARGET_IP}:{REFUSED}", "http"]
    assert refused[0] == "FAIL" and refused[5] == "refused", refused
    busy = got["web", f"{TARGET_IP}:{BUSY}", "http"]
    assert busy[0] == "FAIL" and busy[5:7] == ["status", "503"], busy
    assert got["healthy", f"{TARGET_IP}:{TCP_ONLY}", "tcp"][0] == "ok"
    assert got["healthy", f"{TARGET_IP}:{UP}", "http"][0] == "ok"
    for cells in lines:
        assert cells[-1].endswith("ms") and float(cells[-1][:-2]) < 2000, cells
    # five lines, four distinct probes: the shared http check of port UP ran once
    assert "5 checks (4 probes): 3 passed, 2 failed" in done.stderr, done.stderr

    as_json = check_health(site, config, "--json")
    assert as_json.returncode == 3, as_json
    records = json.loads(as_json.stdout)
    assert len(records) == 5
    by = {(r["virtual_server"], r["real_server"]["port"], r["check"]): r for r in records}
    assert by["web", UP, "http"]["ok"] is True
    assert by["web", UP, "http"]["reason"] == "status 200"
    assert by["web", REFUSED, "http"] | {"duration": 0} == {
        "virtual_server": "web",
        "real_server": {"address": TARGET_IP, "port": REFUSED},
        "check": "http",
        "target": {"address": TARGET_IP, "port": REFUSED, "source_address": None},
        "description": f"http {TARGET_IP}:{REFUSED}/",
        "ok": False,
        "reason": "refused",
        "duration": 0,
        "weight": None,
    }
    assert by["web", BUSY, "http"]["reason"] == "status 503"

    healthy = check_health(site, config, "--virtual-server", "healthy")
    assert healthy.returncode == 0, healthy
    assert len(healthy.stdout.splitlines()) == 2
    assert all(line.startswith("ok ") for line in healthy.stdout.splitlines())

    unknown = check_health(site, config, "--virtual-server", "nope")
    assert unknown.returncode == 1, unknown
    assert "no virtual server 'nope'" in unknown.stderr

    bad = tmp_path / "bad.yaml"
    bad.write_text(CONFIG.replace("expect_status: [200-299]", "expect_status: [200-2xx]"))
    invalid = check_health(site, bad)
    assert invalid.returncode == 1, invalid
    assert invalid.stdout == ""
    assert f"{bad}:6: virtual_servers[0].health_checks[0].expect_status[0]" in invalid.stderr

    # a server that comes back is reported healthy: exit 0
    site.modes(tcp={REFUSED: "ok", BUSY: "ok"})
    recovered = check_health(site, config)
    assert recovered.returncode == 0, recovered
    assert "5 checks (4 probes): 5 passed, 0 failed" in recovered.stderr
