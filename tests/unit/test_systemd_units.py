"""The shipped systemd units, checked offline: ``systemd-analyze verify`` says nothing
(it only warns, exit 0, on unknown keys and bad values, so any output fails) and
``systemd-analyze security --offline=yes`` scores each at most 2.0. The units run under
a real systemd in tests/netns/test_systemd.py."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.check_skips import skip_or_fail

UNITS = Path(__file__).resolve().parents[2] / "agent" / "packaging" / "systemd"
NAMES = ("lvs-agent.service", "lvs-agent-witness.service")
SYSTEM_UNITS = Path("/usr/lib/systemd/system")


@pytest.fixture(scope="module")
def analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        skip_or_fail("needs systemd-analyze (Debian systemd)")
    return found


@pytest.fixture(scope="module")
def root(analyze: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root holding the system's units, the two units and stub programs for the
    paths they execute (verify fails on an ExecStart this machine lacks)."""
    root = tmp_path_factory.mktemp("root")
    shutil.copytree(SYSTEM_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    for program in ("usr/local/bin/lvs-agent", "bin/kill"):
        stub = root / program
        stub.parent.mkdir(parents=True, exist_ok=True)
        stub.write_text("#!/bin/sh\n")
        stub.chmod(0o755)
    (root / "etc/systemd/system").mkdir(parents=True)
    for name in NAMES:
        shutil.copy(UNITS / name, root / "etc/systemd/system" / name)
    return root


@pytest.mark.parametrize("name", NAMES)
def test_verify_is_silent(analyze: str, root: Path, name: str) -> None:
    done = subprocess.run(
        [analyze, "verify", f"--root={root}", name], capture_output=True, text=True, check=False
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


@pytest.mark.parametrize("name", NAMES)
def test_offline_exposure_at_most_2(analyze: str, name: str) -> None:
    done = subprocess.run(
        [analyze, "security", "--offline=yes", "--no-pager", str(UNITS / name)],
        capture_output=True,
        text=True,
        check=False,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert found, done.stdout + done.stderr
    assert float(found.group(1)) <= 2.0, done.stdout


def test_agent_unit_keeps_only_network_capabilities() -> None:
    text = (UNITS / "lvs-agent.service").read_text()
    for key in ("CapabilityBoundingSet", "AmbientCapabilities"):
        assert f"{key}=CAP_NET_ADMIN CAP_NET_RAW\n" in text
    assert "ExecReload=/bin/kill -HUP $MAINPID\n" in text
    assert "Type=notify\n" in text
