"""``lvs-agent witness`` on SIGHUP: reads and checks the file, names what changed, and
keeps serving (a signal must not take the vote away from the clusters it serves)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from agent.config.loader import load_witness_config
from agent.daemon.priority import LoopPriority
from agent.daemon.witness import _on_reload

WITNESS = """\
state_dir: {state}
witness:
  clusters:
    - cluster: lb-prod-1
      listen: 10.0.0.13:6741
      peers: {{d1: 10.0.0.11:6741, d2: 10.0.0.12:6741, w: 10.0.0.13:6741}}
      key_file: /etc/lvs-agent/prod1.key
      lease: {lease}
"""


def _write(path: Path, lease: str) -> None:
    path.write_text(WITNESS.format(state=path.parent / "state", lease=lease))


def test_reload_names_what_changed_and_keeps_running(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "witness.yaml"
    _write(path, "1s")
    running = load_witness_config(str(path))
    caplog.set_level(logging.INFO, logger="lvs-agent")
    calls: list[tuple[int, int]] = []
    priority = LoopPriority(lambda: None, lambda p, n: calls.append((p, n)), lambda: (0, 0))

    _on_reload(str(path), running, priority)
    assert "unchanged" in caplog.text

    _write(path, "2s")
    _on_reload(str(path), running, priority)
    assert "changed (lb-prod-1): a witness applies it on restart" in caplog.text

    assert calls == []  # no node.realtime_priority: the loop's scheduling is not touched

    path.write_text("node: {realtime_priority: 5}\n" + path.read_text())
    _on_reload(str(path), running, priority)
    assert priority.raised == 5  # applied at once, unlike the clusters' settings

    path.write_text("witness: {clusters: [{cluster: x}]}\n")
    _on_reload(str(path), running, priority)
    assert "is invalid; the witness keeps running as it is" in caplog.text

    path.unlink()
    _on_reload(str(path), running, priority)
    assert "cannot read" in caplog.text
