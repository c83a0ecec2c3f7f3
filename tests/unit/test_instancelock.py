"""One agent per state directory, and a clear sentence when the directory is unusable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli import main
from agent.instancelock import InstanceLock

ROOT = Path(__file__).resolve().parents[2]


def test_second_holder_is_told_who_holds_it(tmp_path: Path) -> None:
    first, second = InstanceLock(str(tmp_path)), InstanceLock(str(tmp_path))
    assert first.acquire() is None
    busy = second.acquire()
    assert busy is not None and f"pid {os.getpid()}" in busy
    assert first.holder() == os.getpid()
    first.release()
    assert second.acquire() is None
    second.release()


def test_unusable_state_directory_is_a_sentence(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    problem = InstanceLock(str(tmp_path / "file" / "state")).acquire()
    assert problem == f"cannot use state directory {tmp_path}/file/state: Not a directory"


def test_apply_names_an_unusable_state_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class Kernel:  # enough of IpvsKernel to reach the lock: apply stops there
        def close(self) -> None:
            pass

    monkeypatch.setattr("agent.ipvs.kernel.IpvsKernel", Kernel)
    (tmp_path / "file").write_text("")
    config = tmp_path / "c.yaml"
    config.write_text(f"state_dir: {tmp_path}/file/state\nvirtual_servers: []\n")
    assert main(["apply", "-c", str(config)]) == 1
    err = capsys.readouterr().err
    assert err == f"lvs-agent: cannot use state directory {tmp_path}/file/state: Not a directory\n"


def test_run_names_an_unusable_state_dir(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    config = tmp_path / "c.yaml"
    config.write_text(
        f"state_dir: {tmp_path}/file/state\nmetrics: {{listen: '127.0.0.1:19469'}}\n"
        "virtual_servers: []\n"
    )
    r = subprocess.run(
        [sys.executable, "-m", "agent", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert r.returncode == 1
    assert "cannot use state directory" in r.stderr and "Traceback" not in r.stderr
