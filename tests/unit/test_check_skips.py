"""tests/check_skips.py: a skipped netns or kernel test fails the run unless allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.check_skips import (
    ALLOW_LIST,
    AllowListError,
    Skip,
    check,
    main,
    parse_allow_list,
    read_report,
    skip_or_fail,
)

# What pytest --junitxml writes: a passed test, a skip from a session fixture, a
# parametrized skipif, a skip in a class, and a module skipped at collection.
REPORT = """\
<?xml version="1.0" encoding="utf-8"?>
<testsuites name="pytest tests"><testsuite name="pytest" errors="0" failures="0"
 skipped="4" tests="6">
<testcase classname="" name="tests.netns.test_gone" time="0.000"><skipped
 message="collection skipped">('/repo/tests/netns/test_gone.py', 2, "Skipped: could not import \
'nosuch': No module named 'nosuch'")</skipped></testcase>
<testcase classname="tests.netns.test_host_kernel" name="test_message[plan]" time="0.000">
<skipped type="pytest.skip" message="this kernel has IPVS">/repo/x.py:6: this kernel has IPVS\
</skipped></testcase>
<testcase classname="tests.netns.test_host_kernel" name="test_message[apply]" time="0.000">
<skipped type="pytest.skip" message="this kernel has IPVS">/repo/x.py:6: this kernel has IPVS\
</skipped></testcase>
<testcase classname="tests.netns.test_metrics_lint" name="test_promtool" time="0.001">
<skipped type="pytest.skip" message="promtool not installed">x</skipped></testcase>
<testcase classname="tests.netns.lock.test_quorum.TestSplit" name="test_it" time="0.001">
<skipped type="pytest.skip" message="needs ip, nft">x</skipped></testcase>
<testcase classname="tests.netns.test_metrics_lint" name="test_http" time="0.2" />
</testsuite></testsuites>
"""


@pytest.fixture
def report(tmp_path: Path) -> Path:
    path = tmp_path / "netns.xml"
    path.write_text(REPORT)
    return path


def test_report_gives_node_ids_and_reasons(report: Path, tmp_path: Path) -> None:
    total, skips = read_report(report, root=tmp_path)
    assert total == 6
    assert skips == [
        Skip("tests/netns/test_gone.py", "could not import 'nosuch': No module named 'nosuch'"),
        Skip("tests/netns/test_host_kernel.py::test_message[plan]", "this kernel has IPVS"),
        Skip("tests/netns/test_host_kernel.py::test_message[apply]", "this kernel has IPVS"),
        Skip("tests/netns/test_metrics_lint.py::test_promtool", "promtool not installed"),
        Skip("tests/netns/lock/test_quorum.py::TestSplit::test_it", "needs ip, nft"),
    ]


def test_node_id_follows_the_files_under_root(tmp_path: Path) -> None:
    # A module not named test_* is found by the file that exists under the root.
    (tmp_path / "tests/netns").mkdir(parents=True)
    (tmp_path / "tests/netns/checks.py").write_text("")
    path = tmp_path / "r.xml"
    path.write_text(
        '<testsuites><testsuite><testcase classname="tests.netns.checks.TestIt" name="test_a">'
        '<skipped message="why"/></testcase></testsuite></testsuites>'
    )
    assert read_report(path, root=tmp_path) == (
        1,
        [Skip("tests/netns/checks.py::TestIt::test_a", "why")],
    )


def test_unlisted_skips_are_problems_with_their_reasons(
    report: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    entries = parse_allow_list(
        "# comment\n"
        "tests/netns/test_host_kernel.py::test_message | no error to check where IPVS is\n"
        "reason: could not import * | an optional module\n"
    )
    problems = check([report], entries, root=tmp_path)
    assert problems == [
        "tests/netns/test_metrics_lint.py::test_promtool: skipped: promtool not installed",
        "tests/netns/lock/test_quorum.py::TestSplit::test_it: skipped: needs ip, nft",
    ]
    out = capsys.readouterr().out
    assert "6 tests, 5 skipped" in out
    assert "allowed: tests/netns/test_host_kernel.py::test_message[apply]" in out
    assert "(line 2: no error to check where IPVS is)" in out


def test_a_node_id_entry_matches_exactly_or_by_star(report: Path, tmp_path: Path) -> None:
    _total, skips = read_report(report, root=tmp_path)
    [entry] = parse_allow_list("tests/netns/test_host_kernel.py::test_message[ap*] | why\n")
    assert [s.node for s in skips if entry.matches(s)] == [
        "tests/netns/test_host_kernel.py::test_message[apply]"
    ]
    # Brackets are literal, not a character class.
    [entry] = parse_allow_list("tests/netns/test_host_kernel.py::test_messag[e] | why\n")
    assert not any(entry.matches(s) for s in skips)


def test_missing_empty_or_broken_reports_fail(tmp_path: Path) -> None:
    empty = tmp_path / "empty.xml"
    empty.write_text('<testsuites><testsuite name="pytest" tests="0"/></testsuites>')
    broken = tmp_path / "broken.xml"
    broken.write_text("<testsuites>")
    problems = check([tmp_path / "kernel.xml", empty, broken], [], root=tmp_path)
    assert problems[0] == f"{tmp_path / 'kernel.xml'}: no report (the tier did not run)"
    assert problems[1] == f"{empty}: no test ran"
    assert problems[2].startswith(f"{broken}: not a junit report")


def test_every_entry_needs_its_reason() -> None:
    for bad in ("tests/x.py::test_y\n", "tests/x.py::test_y | \n", " | why\n"):
        with pytest.raises(AllowListError, match=r"skips-allowed\.txt:1: an entry is"):
            parse_allow_list(bad)


def test_main_exit_status(report: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    allow = tmp_path / "allow.txt"
    allow.write_text("reason: * | everything\n")
    assert main([str(report), "--allow", str(allow)]) == 0
    allow.write_text("reason: this kernel has IPVS | no error to check\n")
    assert main([str(report), "--allow", str(allow)]) == 1
    err = capsys.readouterr().err
    assert "promtool not installed" in err and "needs ip, nft" in err
    allow.write_text("no reason given\n")
    assert main([str(report), "--allow", str(allow)]) == 1


def test_the_repository_allow_list_parses_and_names_real_tests() -> None:
    entries = parse_allow_list(ALLOW_LIST.read_text())
    assert entries
    root = ALLOW_LIST.parents[1]
    for e in entries:
        if not e.on_reason:
            assert (root / e.pattern.split("::")[0]).is_file(), e


def test_skip_or_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("LVS_AGENT_NO_SKIP", raising=False)
    with pytest.raises(pytest.skip.Exception, match="needs tshark"):
        skip_or_fail("needs tshark")
    for var, value in (("CI", "true"), ("LVS_AGENT_NO_SKIP", "1")):
        with monkeypatch.context() as m:
            m.setenv(var, value)
            with pytest.raises(pytest.fail.Exception, match="needs tshark"):
                skip_or_fail("needs tshark")
