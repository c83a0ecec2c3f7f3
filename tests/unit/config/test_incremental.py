"""agent.config.incremental: a file read again gives exactly what load_config gives."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config import ConfigError, load_config
from agent.config.incremental import Rereader

HEAD = "state_dir: /var/lib/lvs-agent-test\nreconcile_interval: 10s\n"
TAIL = "ipvs:\n  drain_timeout: 60s\n"


def entry(i: int, weight: int = 1, indent: str = "  ", extra: str = "") -> str:
    inner = indent + "  "
    return (
        f"{indent}- name: vs{i}\n{inner}address: 10.1.{i // 250}.{i % 250 + 1}\n"
        f"{inner}port: 80\n{extra}{inner}real_servers:\n"
        f"{inner}  - {{address: 172.16.0.{i % 250 + 1}, port: 8080, weight: {weight}}}\n"
        f"{inner}  - address: 172.16.1.{i % 250 + 1}\n{inner}    port: 8080\n"
    )


def text(entries: list[str], head: str = HEAD, tail: str = TAIL) -> str:
    return head + "virtual_servers:\n" + "".join(entries) + tail


def same_as_load_config(reader: Rereader, path: Path, content: str) -> int:
    """Reads ``content`` with both; returns how many entries the reader reused."""
    path.write_text(content)
    try:
        expected = load_config(str(path))
    except ConfigError as exc:
        with pytest.raises(ConfigError) as got:
            reader.load(str(path))
        assert [str(p) for p in got.value.problems] == [str(p) for p in exc.problems]
        return reader.reused
    assert reader.load(str(path)) == expected
    return reader.reused


def test_one_changed_entry_is_read_again_and_the_rest_reused(tmp_path: Path) -> None:
    path, reader = tmp_path / "c.yaml", Rereader()
    entries = [entry(i) for i in range(20)]
    assert same_as_load_config(reader, path, text(entries)) == 0  # the first read is whole
    entries[7] = entry(7, weight=5)
    assert same_as_load_config(reader, path, text(entries)) == 19
    # an entry added in the middle: the ones after it moved (their lines follow)
    entries.insert(3, entry(100))
    assert same_as_load_config(reader, path, text(entries)) == 20
    got = reader.load(str(path))
    assert got.virtual_servers[10].line == load_config(str(path)).virtual_servers[10].line
    del entries[12]
    assert same_as_load_config(reader, path, text(entries)) == 20
    # another section changed, no entry: the list is taken whole from the last read
    assert same_as_load_config(reader, path, text(entries, tail="ipvs:\n  drain_timeout: 9s\n"))
    assert reader.reused == 20
    # comments and blank lines between entries
    entries[4] = entries[4] + "\n  # a comment\n\n"
    assert same_as_load_config(reader, path, text(entries)) == 19


def test_problems_are_worded_as_load_config_words_them(tmp_path: Path) -> None:
    path, reader = tmp_path / "c.yaml", Rereader()
    entries = [entry(i) for i in range(12)]
    same_as_load_config(reader, path, text(entries))
    bad = [*entries]
    bad[5] = entry(5, weight=70000)
    same_as_load_config(reader, path, text(bad))
    # a changed entry that names the same service as an unchanged one
    dup = [*entries]
    dup[9] = entry(2)
    same_as_load_config(reader, path, text(dup))
    # the reader still has the last valid file's entries
    entries[0] = entry(0, weight=3)
    assert same_as_load_config(reader, path, text(entries)) == 11


def test_files_whose_entries_are_not_their_own_are_read_whole(tmp_path: Path) -> None:
    path, reader = tmp_path / "c.yaml", Rereader()
    entries = [entry(i) for i in range(10)]
    same_as_load_config(reader, path, text(entries))
    anchored = [*entries]
    anchored[0] = entry(0, extra="    scheduler: &s wlc\n")
    anchored[4] = entry(4, extra="    scheduler: *s\n")
    assert same_as_load_config(reader, path, text(anchored)) == 0
    # an open quote before the key: the key and the list could be inside it
    quoted = text(entries, head='node: {name: "a\n b"}\n' + HEAD)
    assert same_as_load_config(reader, path, quoted) == 0
    # entries at column 0
    flat = [entry(i, indent="") for i in range(10)]
    same_as_load_config(reader, path, text(flat))
    flat[2] = entry(2, weight=4, indent="")
    assert same_as_load_config(reader, path, text(flat)) == 9


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["weight", "insert", "delete", "comment", "bad", "dup", "tail"]),
            st.integers(0, 30),
            st.integers(0, 3),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_any_sequence_of_edits_reads_as_load_config_reads_it(
    tmp_path_factory: pytest.TempPathFactory, edits: list[tuple[str, int, int]]
) -> None:
    path, reader = tmp_path_factory.mktemp("inc") / "c.yaml", Rereader()
    entries = [entry(i) for i in range(16)]
    tail = TAIL
    same_as_load_config(reader, path, text(entries))
    for kind, where, value in edits:
        at = where % len(entries) if entries else 0
        if kind == "weight" and entries:
            entries[at] = entry(at + 200, weight=value)
        elif kind == "insert":
            entries.insert(at, entry(300 + where, weight=value))
        elif kind == "delete" and entries:
            del entries[at]
        elif kind == "comment":
            entries.insert(at, "  # note\n" if value % 2 else "\n")
        elif kind == "bad" and entries:
            entries[at] = entry(at + 400, extra="    port: 0\n")
        elif kind == "dup" and len(entries) > 1:
            entries[at] = entries[(at + 1) % len(entries)]
        elif kind == "tail":
            tail = f"ipvs:\n  drain_timeout: {value + 1}s\n"
        same_as_load_config(reader, path, text(entries, tail=tail))
