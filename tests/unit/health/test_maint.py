import json
import stat

import pytest

from agent.health.maint import (
    MaintenanceError,
    MaintenanceStore,
    format_real_server,
    parse_real_server,
)

SERVERS = {"web": [("10.0.0.1", 80), ("10.0.0.2", 80)], "v6": [("2001:db8::1", 443)]}


def test_parse_real_server_forms() -> None:
    assert parse_real_server("10.0.0.1:80") == ("10.0.0.1", 80)
    assert parse_real_server("[2001:DB8::1]:443") == ("2001:db8::1", 443)
    assert parse_real_server("10.0.0.1") == ("10.0.0.1", 0)
    assert parse_real_server("2001:db8::1") == ("2001:db8::1", 0)
    assert format_real_server(("2001:db8::1", 443)) == "[2001:db8::1]:443"
    assert format_real_server(("10.0.0.1", 80)) == "10.0.0.1:80"


@pytest.mark.parametrize("bad", ["host:80", "10.0.0.1:x", "10.0.0.1:70000", "[::1", "[::1]80"])
def test_parse_real_server_refuses(bad: str) -> None:
    with pytest.raises(MaintenanceError):
        parse_real_server(bad)


def test_set_persists_and_reports_change(tmp_path) -> None:
    path = tmp_path / "maintenance.json"
    store = MaintenanceStore(path, SERVERS)
    store.load()
    assert store.keys() == frozenset()
    assert store.set("web", ("10.0.0.2", 80), True) is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    mtime = path.stat().st_mtime_ns
    assert store.set("web", ("10.0.0.2", 80), True) is False  # nothing changed: no write
    assert path.stat().st_mtime_ns == mtime
    again = MaintenanceStore(path, SERVERS)
    again.load()
    assert again.keys() == frozenset({("web", ("10.0.0.2", 80))})
    assert again.is_on("web", ("10.0.0.2", 80))
    assert again.set("web", ("10.0.0.2", 80), False) is True
    assert json.loads(path.read_text())["maintenance"] == []


def test_unknown_servers_refused_and_nothing_written(tmp_path) -> None:
    path = tmp_path / "maintenance.json"
    store = MaintenanceStore(path, SERVERS)
    with pytest.raises(MaintenanceError, match="no virtual server 'nope'"):
        store.set("nope", ("10.0.0.1", 80), True)
    with pytest.raises(MaintenanceError, match=r"has no real server 10\.0\.0\.9:80"):
        store.set("web", ("10.0.0.9", 80), True)
    assert not path.exists()


def test_flag_of_a_removed_server_kept_and_can_be_cleared(tmp_path) -> None:
    store = MaintenanceStore(tmp_path / "m.json", SERVERS)
    store.set("web", ("10.0.0.2", 80), True)
    store.configure({"web": [("10.0.0.1", 80)]})
    assert store.keys() == frozenset({("web", ("10.0.0.2", 80))})
    assert store.set("web", ("10.0.0.2", 80), False) is True


@pytest.mark.parametrize("text", ["{", '{"version": 2, "maintenance": []}', '{"version": 1}'])
def test_invalid_file_refused(tmp_path, text: str) -> None:
    path = tmp_path / "m.json"
    path.write_text(text)
    store = MaintenanceStore(path, SERVERS)
    with pytest.raises(MaintenanceError, match="not a valid maintenance file"):
        store.load()
    assert store.keys() == frozenset()


def test_file_owned_like_its_directory(tmp_path) -> None:
    import os

    root = os.geteuid() == 0
    if root:  # as lvs-agent maint run by root for an agent running as its own user
        os.chown(tmp_path, 4321, 4321)
    store = MaintenanceStore(tmp_path / "m.json", SERVERS)
    store.set("web", ("10.0.0.1", 80), True)
    st = (tmp_path / "m.json").stat()
    expected = (4321, 4321) if root else (os.geteuid(), os.getegid())
    assert (st.st_uid, st.st_gid) == expected
