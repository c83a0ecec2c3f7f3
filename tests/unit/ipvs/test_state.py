"""The ownership file: what the agent owns, across restarts and reboots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.ipvs import state
from agent.ipvs.model import AF_INET, AF_INET6, DestKey, ServiceKey
from agent.ipvs.plan import Ownership
from agent.ipvs.state import OwnershipStore, StateFileError

WEB = ServiceKey(AF_INET, 6, "192.0.2.100", 80)
MARK = ServiceKey(AF_INET6, 0, "", 0, 11)
OWNED = Ownership(frozenset({WEB, MARK}), {(WEB, DestKey(AF_INET, "10.0.1.21", 8080)): 1234.5})


def test_a_missing_file_owns_nothing(tmp_path: Path) -> None:
    assert OwnershipStore(tmp_path / "ipvs-state.json").load() == Ownership()


def test_round_trip_and_no_write_when_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "state" / "ipvs-state.json"
    store = OwnershipStore(path)
    assert store.save(OWNED) is True
    assert path.stat().st_mode & 0o777 == 0o600
    again = OwnershipStore(path)
    assert again.load() == OWNED
    mtime = path.stat().st_mtime_ns
    assert again.save(OWNED) is False  # a restart with nothing new writes nothing
    assert path.stat().st_mtime_ns == mtime
    assert [p.name for p in path.parent.iterdir()] == ["ipvs-state.json"]  # no temp left


def test_drain_times_from_another_boot_are_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ipvs-state.json"
    monkeypatch.setattr(state, "boot_id", lambda: "boot-1")
    OwnershipStore(path).save(OWNED)
    monkeypatch.setattr(state, "boot_id", lambda: "boot-2")
    # CLOCK_BOOTTIME started again; the services are still remembered as ours.
    assert OwnershipStore(path).load() == Ownership(OWNED.services, {})


@pytest.mark.parametrize(
    "text",
    [
        "",
        "{",
        "[]",
        '{"version": 2, "services": [], "drains": []}',
        '{"version": 1, "services": [[2, 6, "192.0.2.1"]], "drains": []}',
        json.dumps({"version": 1, "services": [], "drains": [["x"]], "boot_id": state.boot_id()}),
        '{"version": 1, "services": "web", "drains": []}',
    ],
)
def test_a_damaged_file_is_one_error_naming_it(tmp_path: Path, text: str) -> None:
    path = tmp_path / "ipvs-state.json"
    path.write_text(text)
    with pytest.raises(StateFileError) as err:
        OwnershipStore(path).load()
    message = str(err.value)
    assert message.startswith(f"{path}: not a valid lvs-agent state file (")
    assert "move it away to start over" in message


def test_an_unreadable_file_is_one_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "ipvs-state.json"
    path.mkdir()
    with pytest.raises(StateFileError, match=f"^{path}: cannot read: Is a directory$"):
        OwnershipStore(path).load()


def test_the_same_file_is_read_once_and_another_one_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ipvs-state.json"
    daemon, worker = OwnershipStore(path), OwnershipStore(path)
    reads: list[str] = []
    real = json.loads
    monkeypatch.setattr(state.json, "loads", lambda raw: reads.append(raw) or real(raw))
    worker.save(OWNED)
    assert daemon.load() == OWNED and daemon.load() == OWNED
    assert len(reads) == 1  # unchanged: not parsed again
    assert worker.load() == OWNED and len(reads) == 1  # its own write: known
    # another process writes (a new file, renamed over): read again
    worker.save(Ownership(frozenset({WEB})))
    assert daemon.load() == Ownership(frozenset({WEB})) and len(reads) == 2
    # edited in place by hand
    path.write_text(path.read_text() + " " * 8)
    assert daemon.load() == Ownership(frozenset({WEB})) and len(reads) == 3
    path.unlink()
    assert daemon.load() == Ownership()
