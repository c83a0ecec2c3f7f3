"""``include:``: virtual servers spread over files, checked as one configuration, and
re-read per file (agent.config.include)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.config import ConfigError, load_config, parse_config
from agent.config.host import check_host
from agent.config.include import Parts, included_files, total_size
from agent.ipvs.desired import desired_table


def vs_text(names: range, weight: int = 1, base: int = 0) -> str:
    out = ["virtual_servers:"]
    for i in names:
        out.append(
            f"  - name: vs{i + base}\n"
            f"    address: 10.9.{(i + base) // 250}.{(i + base) % 250 + 1}\n"
            f"    port: 80\n    real_servers:\n"
            f"      - {{address: 172.16.0.{i % 250 + 1}, port: 8080, weight: {weight}}}"
        )
    return "\n".join(out) + "\n"


def split(tmp_path: Path, files: int = 4, per: int = 3, main_extra: str = "") -> Path:
    """A main file including ``conf.d/*.yaml`` (relative) and ``files`` files."""
    conf = tmp_path / "conf.d"
    conf.mkdir()
    # written out of order: the glob's matches are read sorted
    for k in reversed(range(files)):
        (conf / f"{k:02d}-part.yaml").write_text(vs_text(range(k * per, k * per + per)))
    main = tmp_path / "config.yaml"
    main.write_text(f"state_dir: {tmp_path}/state\ninclude: [conf.d/*.yaml]\n{main_extra}")
    return main


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    return [str(p) for p in caught.value.problems]


def test_the_included_files_are_read_sorted_relative_to_the_main_file(tmp_path: Path) -> None:
    main = split(tmp_path, main_extra=vs_text(range(1), base=100))
    cwd = os.getcwd()
    os.chdir("/")  # the pattern is resolved against the main file, not the working dir
    try:
        config = load_config(str(main))
    finally:
        os.chdir(cwd)
    names = [vs.name for vs in config.virtual_servers]
    assert names == ["vs100", *(f"vs{i}" for i in range(12))]
    (included,) = config.includes
    assert included.pattern == "conf.d/*.yaml" and included.line == 2
    assert [Path(f).name for f in included.files] == [f"{k:02d}-part.yaml" for k in range(4)]
    # the same configuration as one file with everything in it
    whole = vs_text(range(1), base=100) + vs_text(range(12)).removeprefix("virtual_servers:\n")
    one = parse_config(f"state_dir: {tmp_path}/state\n{whole}", str(tmp_path / "one.yaml"))
    assert desired_table(config.virtual_servers) == desired_table(one.virtual_servers)


def test_patterns_in_order_each_file_once_and_absolute_paths(tmp_path: Path) -> None:
    main = split(tmp_path)
    conf = tmp_path / "conf.d"
    main.write_text(
        f"include:\n  - {conf}/03-part.yaml\n  - conf.d/0[0-9]-*.yaml\n  - conf.d/none-*.yaml\n"
    )
    config = load_config(str(main))
    assert [vs.name for vs in config.virtual_servers][:3] == ["vs9", "vs10", "vs11"]
    assert len(config.virtual_servers) == 12  # 03-part.yaml once
    assert [len(i.files) for i in config.includes] == [1, 4, 0]
    # a pattern that matches nothing is allowed, and check-config says so
    (warning,) = check_host(config)[-1:]
    assert warning.warning and warning.line == 4 and "matches no file" in warning.message
    assert warning.path == "include[2]"


def test_a_missing_literal_path_is_an_error_naming_the_main_file(tmp_path: Path) -> None:
    main = tmp_path / "config.yaml"
    main.write_text(f"state_dir: {tmp_path}\ninclude:\n  - absent.yaml\n")
    (found,) = problems(main)
    assert found == f"{main}:3: include[0]: {tmp_path}/absent.yaml: no such file"


def test_the_main_file_cannot_include_itself(tmp_path: Path) -> None:
    main = tmp_path / "config.yaml"
    main.write_text("include: ['*.yaml']\n")
    (found,) = problems(main)
    assert found.startswith(f"{main}:1: include[0]: '*.yaml' matches the main file itself")


def test_errors_in_an_included_file_name_that_file_and_line(tmp_path: Path) -> None:
    main = split(tmp_path)
    bad = tmp_path / "conf.d" / "02-part.yaml"
    bad.write_text(bad.read_text().replace("port: 8080, weight: 1}", "port: 70000}", 1))
    (found,) = problems(main)
    assert found.startswith(f"{bad}:6: virtual_servers[0].real_servers[0].port: must be 1..65535")


def test_an_included_file_holds_virtual_servers_only(tmp_path: Path) -> None:
    main = split(tmp_path, files=1)
    part = tmp_path / "conf.d" / "00-part.yaml"
    first = part.read_text().count("\n") + 1
    part.write_text(
        part.read_text()
        + "include: [x.yaml]\nvrrp_instances: []\nvrrp_sync_groups: []\nstate_dir: /tmp\n"
    )
    found = problems(main)
    assert found[0].startswith(f"{part}:{first}: include: an included file cannot include")
    assert found[1].startswith(f"{part}:{first + 1}: vrrp_instances: VRRP instances belong")
    assert found[2].startswith(f"{part}:{first + 2}: vrrp_sync_groups: sync groups belong")
    assert found[3].startswith(f"{part}:{first + 3}: state_dir: unknown key")
    assert len(found) == 4


def test_an_empty_included_file_adds_nothing(tmp_path: Path) -> None:
    main = split(tmp_path, files=2)
    (tmp_path / "conf.d" / "05-empty.yaml").write_text("# nothing here yet\n")
    assert len(load_config(str(main)).virtual_servers) == 6


def test_duplicates_across_files_name_both_places(tmp_path: Path) -> None:
    main = split(tmp_path, files=3, main_extra=vs_text(range(1), base=200))
    conf = tmp_path / "conf.d"
    # same name as a server of 00-part.yaml, in 02-part.yaml
    (conf / "02-part.yaml").write_text(vs_text(range(1), base=1))
    same_name = conf / "02-part.yaml"
    # same kernel service as the main file's vs200, under another name
    (conf / "03-more.yaml").write_text(vs_text(range(1), base=200).replace("vs200", "other"))
    found = problems(main)
    part0 = conf / "00-part.yaml"
    assert found == [
        f"{same_name}:2: virtual_servers[0]: duplicate virtual server: tcp 10.9.0.2 port 80 "
        f"is already defined at {part0}:7",
        f"{same_name}:2: virtual_servers[0].name: duplicate virtual server name 'vs1' "
        f"(first at {part0}:7)",
        f"{conf / '03-more.yaml'}:2: virtual_servers[0]: duplicate virtual server: "
        f"tcp 10.9.0.201 port 80 is already defined at {main}:4",
    ]


def test_a_witness_file_takes_no_include(tmp_path: Path) -> None:
    from agent.config.loader import load_witness_config

    path = tmp_path / "witness.yaml"
    key = tmp_path / "c1.key"
    path.write_text(
        "include: [x.yaml]\nlock:\n  cluster: c1\n  listen: 127.0.0.1:6741\n"
        f"  peers: {{a: 127.0.0.1:6741, b: 127.0.0.2:6741, c: 127.0.0.3:6741}}\n"
        f"  key_file: {key}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_witness_config(str(path))
    assert any(p.path == "include" and "unknown key" in p.message for p in caught.value.problems)


def test_only_changed_files_are_parsed_again_and_the_result_is_a_fresh_parse(
    tmp_path: Path,
) -> None:
    main = split(tmp_path, files=10, per=5)
    parts = Parts()

    def load():  # type: ignore[no-untyped-def]
        return _load_with(main, parts)

    first = load()
    assert parts.parsed == 10
    again = load()
    assert parts.parsed == 10 and again == first
    changed = tmp_path / "conf.d" / "07-part.yaml"
    changed.write_text(vs_text(range(35, 40), weight=9))
    third = load()
    assert parts.parsed == 11
    fresh = _load_with(main, Parts())
    assert third == fresh and third.virtual_servers == fresh.virtual_servers
    assert [vs.real_servers[0].weight for vs in third.virtual_servers[35:40]] == [9] * 5
    # unchanged files gave back the very same objects
    assert third.virtual_servers[0] is first.virtual_servers[0]
    assert desired_table(third.virtual_servers) == desired_table(fresh.virtual_servers)
    # a file gone from the set is dropped from the cache; an invalid one is not kept valid
    changed.write_text("virtual_servers: [{name: bad}]\n")
    with pytest.raises(ConfigError):
        _load_with(main, parts)
    changed.write_text(vs_text(range(35, 40), weight=9))
    assert _load_with(main, parts) == fresh


def _load_with(main: Path, parts: Parts):  # type: ignore[no-untyped-def]
    from agent.config import include

    saved = include.PARTS
    include.PARTS = parts
    try:
        return load_config(str(main))
    finally:
        include.PARTS = saved


def test_total_size_and_included_files(tmp_path: Path) -> None:
    main = split(tmp_path, files=3)
    files = included_files(str(main), main.read_bytes())
    assert files is not None and [Path(f).name for f in files] == [
        "00-part.yaml",
        "01-part.yaml",
        "02-part.yaml",
    ]
    assert total_size(str(main)) == main.stat().st_size + sum(Path(f).stat().st_size for f in files)
    plain = tmp_path / "plain.yaml"
    plain.write_text(vs_text(range(2)))
    assert included_files(str(plain), plain.read_bytes()) == []
    assert total_size(str(plain)) == plain.stat().st_size
    # at or past the limit the main file alone answers (its includes are not looked for)
    assert total_size(str(main), limit=10) == main.stat().st_size


def test_the_configuration_cache_key_covers_the_included_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent import cli

    monkeypatch.setenv("LVS_AGENT_CACHE_DIR", str(tmp_path / "cache"))
    main = split(tmp_path, files=2)
    first = cli._compile(str(main))
    assert first is not None
    part = tmp_path / "conf.d" / "01-part.yaml"
    part.write_text(vs_text(range(3, 6), weight=4))
    second = cli._compile(str(main))
    assert second is not None and second != first
    weights = {d.weight for s in second.table.values() for d in s.dests.values()}
    assert weights == {1, 4}
    assert cli._compile(str(main)) == second  # now from the cache


def test_check_config_names_the_included_files_it_checked(tmp_path: Path) -> None:
    import subprocess
    import sys

    main = split(tmp_path, files=3)
    (tmp_path / "state").mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "check-config", "-c", str(main)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "LVS_AGENT_CACHE_DIR": ""},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{main}: valid (9 virtual servers, 9 real servers, 3 included files)\n"
    bad = tmp_path / "conf.d" / "01-part.yaml"
    bad.write_text(bad.read_text().replace("name: vs4", "name: vs0"))
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "check-config", "-c", str(main)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith(
        f"{bad}:7: virtual_servers[1].name: duplicate virtual server name"
    )


def test_the_daemon_logs_a_pattern_that_matches_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from agent.daemon import warn_unmatched

    main = split(tmp_path, files=1)
    main.write_text(f"include:\n  - conf.d/*.yaml\n  - none.d/*.yaml\nstate_dir: {tmp_path}\n")
    with caplog.at_level("WARNING"):
        warn_unmatched(load_config(str(main)))
    assert [r.getMessage() for r in caplog.records] == [
        f"{main}:3: include pattern 'none.d/*.yaml' matches no file"
    ]
