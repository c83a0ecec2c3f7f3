"""The configuration cache of apply/plan: a hit gives exactly what reading the file
gives, anything doubtful is a miss, and nothing is trusted that others could write."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings

from agent.config import load_config
from agent.ipvs import configcache
from agent.ipvs.configcache import KEEP, CompiledConfig, ConfigCache
from agent.ipvs.desired import desired_table
from agent.ipvs.model import DesiredTable
from tests.unit.ipvs.test_plan_properties import desired_tables

ROOT = Path(__file__).resolve().parents[3]
FILES = [ROOT / "config.example.yaml", ROOT / "tests/kernel/data/every-option.yaml"]


def compiled_from(path: Path) -> CompiledConfig:
    config = load_config(str(path))
    return CompiledConfig(config.state_dir, config.ipvs, desired_table(config.virtual_servers))


def same(a: CompiledConfig, b: CompiledConfig, types: bool = False) -> None:
    assert (a.state_dir, a.ipvs, a.table) == (b.state_dir, b.ipvs, b.table)
    for key, want in a.table.items():
        got = b.table[key]
        assert list(got.dests) == list(want.dests)  # order kept: plans read the same
        for dkey, dest in want.dests.items():
            if types:  # the enum members desired_table puts in, not bare ints
                assert type(got.dests[dkey].fwd) is type(dest.fwd)
                assert type(got.dests[dkey].tun_type) is type(dest.tun_type)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_hit_gives_what_reading_the_file_gives(tmp_path: Path, path: Path) -> None:
    cache = ConfigCache(tmp_path / "c")
    data = path.read_bytes()
    assert cache.load(data) is None
    fresh = compiled_from(path)
    cache.store(data, fresh)
    hit = cache.load(data)
    assert hit is not None
    same(fresh, hit, types=True)


@settings(max_examples=200, deadline=None)
@given(table=desired_tables())
def test_any_table_round_trips(
    tmp_path_factory: pytest.TempPathFactory, table: DesiredTable
) -> None:
    cache = ConfigCache(tmp_path_factory.mktemp("c"))
    compiled = CompiledConfig("/var/lib/x", load_config(str(FILES[0])).ipvs, table)
    cache.store(b"x", compiled)
    hit = cache.load(b"x")
    assert hit is not None
    same(compiled, hit)


def test_another_byte_or_other_code_is_a_miss(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = FILES[0].read_bytes()
    ConfigCache(tmp_path).store(data, compiled_from(FILES[0]))
    assert ConfigCache(tmp_path).load(data) is not None
    assert ConfigCache(tmp_path).load(data + b"\n") is None
    monkeypatch.setattr(configcache, "_code_fingerprint", lambda: b"changed code\0")
    assert ConfigCache(tmp_path).load(data) is None


def test_fingerprint_follows_module_content_not_size_or_time(tmp_path: Path) -> None:
    package = tmp_path / "agent"
    (package / "config").mkdir(parents=True)
    module = package / "config" / "rules.py"
    module.write_text("PORT_MAX = 65535\n")
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "rules.cpython-311.pyc").write_bytes(b"ignored")
    before = configcache._sources_digest("p", [package])
    st = module.stat()
    module.write_text("PORT_MAX = 65534\n")  # same size ...
    os.utime(module, ns=(st.st_atime_ns, st.st_mtime_ns))  # ... and the same mtime
    assert module.stat().st_size == st.st_size and module.stat().st_mtime_ns == st.st_mtime_ns
    assert configcache._sources_digest("p", [package]) != before
    module.write_text("PORT_MAX = 65535\n")
    assert configcache._sources_digest("p", [package]) == before
    (package / "config" / "rules2.py").write_text("")  # a new module, even empty
    assert configcache._sources_digest("p", [package]) != before


def test_fingerprint_covers_the_agent_and_the_yaml_library(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import yaml

    seen: list[list[Path]] = []
    monkeypatch.setattr(
        configcache, "_sources_digest", lambda prefix, roots: seen.append(roots) or b""
    )
    configcache._code_fingerprint()
    (roots,) = seen
    assert Path(configcache.__file__).resolve().parents[1] in roots
    assert Path(yaml.__file__).resolve().parent in [r.resolve() for r in roots]
    files = [p.name for r in roots for p in configcache._module_files(r)]
    assert "loader.py" in files
    if yaml.__with_libyaml__:  # the extension that holds libyaml
        assert any(f.startswith("_yaml.") for f in files)


def test_damaged_entries_are_misses_and_get_replaced(tmp_path: Path) -> None:
    cache = ConfigCache(tmp_path)
    data = FILES[1].read_bytes()
    fresh = compiled_from(FILES[1])
    cache.store(data, fresh)
    (entry,) = tmp_path.glob("*.ipvs")
    whole = entry.read_bytes()
    flipped = bytearray(whole)
    flipped[len(whole) // 2] ^= 1
    last = whole[:-1] + bytes([whole[-1] ^ 1])
    for damaged in (b"", whole[: len(whole) // 2], b"not marshal data", bytes(flipped), last):
        entry.write_bytes(damaged)
        assert cache.load(data) is None
    import marshal
    from hashlib import blake2b

    for record in ((99, "/x", (None, None, None, 300.0, {}), ()), 12345, ("a", "b")):
        payload = marshal.dumps(record)  # intact, but another format
        entry.write_bytes(blake2b(payload, digest_size=32).digest() + payload)
        assert cache.load(data) is None
    assert cache.load(data) is None
    cache.store(data, fresh)
    hit = cache.load(data)
    assert hit is not None
    same(fresh, hit)


def test_nothing_is_trusted_that_others_can_write(tmp_path: Path) -> None:
    directory = tmp_path / "c"
    cache = ConfigCache(directory)
    data = FILES[0].read_bytes()
    cache.store(data, compiled_from(FILES[0]))
    assert directory.stat().st_mode & 0o777 == 0o700
    (entry,) = directory.glob("*.ipvs")
    assert entry.stat().st_mode & 0o777 == 0o600

    entry.chmod(0o620)
    assert cache.load(data) is None
    entry.chmod(0o600)
    directory.chmod(0o777)
    assert cache.load(data) is None
    cache.store(b"other", compiled_from(FILES[0]))  # not written into such a directory
    assert len(list(directory.glob("*.ipvs"))) == 1
    directory.chmod(0o700)
    assert cache.load(data) is not None
    if os.geteuid() == 0:
        os.chown(entry, 65534, 65534)
        assert cache.load(data) is None


def test_keeps_the_most_recently_used(tmp_path: Path) -> None:
    cache = ConfigCache(tmp_path)
    compiled = compiled_from(FILES[0])
    for i in range(KEEP + 3):
        cache.store(b"file %d" % i, compiled)
        for e in tmp_path.glob("*.ipvs"):  # distinct, increasing use times
            st = e.stat()
            os.utime(e, ns=(st.st_atime_ns, st.st_mtime_ns - 10**9))
    assert len(list(tmp_path.glob("*.ipvs"))) == KEEP
    assert cache.load(b"file %d" % (KEEP + 2)) is not None
    assert cache.load(b"file 0") is None


def test_off_when_no_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LVS_AGENT_CACHE_DIR", "")
    cache = ConfigCache.default()
    cache.store(b"x", compiled_from(FILES[0]))
    assert cache.load(b"x") is None
    monkeypatch.setenv("LVS_AGENT_CACHE_DIR", str(tmp_path / "d"))
    assert ConfigCache.default().directory == tmp_path / "d"
