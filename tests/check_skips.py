"""What a skipped test means here, and the check that CI runs none it should not.

A test that cannot run for want of a tool or a privilege skips on a developer's
machine, but fails where the test command runs it (``scripts/test`` sets
LVS_AGENT_NO_SKIP=1; CI=true does the same): the bootstrap installs every tool,
so a missing one is a broken setup, not a reason to pass. ``skip_or_fail`` is
that rule.

Some skips are right wherever they happen (a test of the message printed on a
kernel without IPVS means nothing on a kernel with it). Those are listed, each
with its reason, in ``tests/skips-allowed.txt``; after the netns and kernel
tiers, ``python -m tests.check_skips REPORT.xml...`` reads their junit reports
and fails on any skipped test the list does not allow, naming each with its
skip reason. A report that is missing or holds no test fails too: a tier that
did not run did not pass.

Allow-list lines are ``PATTERN | WHY``; ``#`` starts a comment. PATTERN is a
test node id (``tests/netns/test_x.py::test_y``; without its ``[parameters]``
it covers every parametrization) or ``reason: TEXT``, which matches the skip
reason. In both, ``*`` matches any run of characters. An entry without its WHY
makes the list invalid.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import sys
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

ROOT = Path(__file__).resolve().parents[1]
ALLOW_LIST = ROOT / "tests" / "skips-allowed.txt"


def strict() -> bool:
    """True where every test must run: under ``scripts/test`` or in CI."""
    return os.environ.get("LVS_AGENT_NO_SKIP") == "1" or os.environ.get("CI") == "true"


def skip_or_fail(reason: str) -> NoReturn:
    """Skip with ``reason``; fail instead where every test must run (``strict``)."""
    if strict():
        pytest.fail(f"{reason} (scripts/bootstrap provides it; the test command runs every test)")
    pytest.skip(reason)


@dataclass(frozen=True)
class Skip:
    node: str  # pytest node id, e.g. tests/netns/test_x.py::test_y[a]
    reason: str


@dataclass(frozen=True)
class Entry:
    pattern: str
    on_reason: bool  # "reason: ..." entries match the skip reason, the others the node id
    why: str
    line: int

    def matches(self, skip: Skip) -> bool:
        if self.on_reason:
            return _glob(self.pattern).fullmatch(skip.reason) is not None
        rx = _glob(self.pattern)
        return bool(rx.fullmatch(skip.node) or rx.fullmatch(skip.node.split("[", 1)[0]))


class AllowListError(ValueError):
    pass


def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


def parse_allow_list(text: str, name: str = "skips-allowed.txt") -> list[Entry]:
    entries: list[Entry] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pattern, sep, why = (p.strip() for p in line.partition(" | "))
        if not sep or not why or not pattern:
            raise AllowListError(f"{name}:{number}: an entry is 'PATTERN | WHY', got {line!r}")
        on_reason = pattern.startswith("reason:")
        if on_reason:
            pattern = pattern.removeprefix("reason:").strip()
        entries.append(Entry(pattern, on_reason, why, number))
    return entries


def _node_id(classname: str, name: str, root: Path) -> str:
    """The node id of a junit test case (classname is dotted: package.module[.Class])."""
    if not classname:  # a whole module skipped at collection: name is its dotted path
        return name.replace(".", "/") + ".py"
    parts = classname.split(".")
    modules = (i for i in range(len(parts), 0, -1) if _is_module(root, parts[:i]))
    cut = next(modules, None)
    if cut is None:  # not under root: the module is the last part named test_*
        cut = max((i + 1 for i, p in enumerate(parts) if p.startswith("test")), default=len(parts))
    return "::".join(["/".join(parts[:cut]) + ".py", *parts[cut:], name])


def _is_module(root: Path, parts: Sequence[str]) -> bool:
    return (root / "/".join(parts)).with_suffix(".py").is_file()


def _reason(skipped: ET.Element) -> str:
    message = skipped.get("message", "")
    if message != "collection skipped":
        return message
    # A collection skip carries its reason in the text: (path, line, 'Skipped: reason').
    text = skipped.text or ""
    try:
        where = ast.literal_eval(text)
        return str(where[2]).removeprefix("Skipped: ")
    except (ValueError, SyntaxError, IndexError, TypeError):
        return text


def read_report(path: Path, root: Path = ROOT) -> tuple[int, list[Skip]]:
    """(number of test cases, the skipped ones) of a pytest junit XML file."""
    tree = ET.parse(path)
    cases = tree.getroot().iter("testcase")
    total = 0
    skips: list[Skip] = []
    for case in cases:
        total += 1
        skipped = case.find("skipped")
        if skipped is not None:
            node = _node_id(case.get("classname", ""), case.get("name", ""), root)
            skips.append(Skip(node, _reason(skipped)))
    return total, skips


def check(reports: Sequence[Path], entries: Sequence[Entry], root: Path = ROOT) -> list[str]:
    """Print what each report skipped; return the problems (empty: the run is honest)."""
    problems: list[str] = []
    for report in reports:
        if not report.is_file():
            problems.append(f"{report}: no report (the tier did not run)")
            continue
        try:
            total, skips = read_report(report, root)
        except ET.ParseError as exc:
            problems.append(f"{report}: not a junit report ({exc})")
            continue
        print(f"check-skips: {report}: {total} tests, {len(skips)} skipped")
        if total == 0:
            problems.append(f"{report}: no test ran")
        for skip in skips:
            entry = next((e for e in entries if e.matches(skip)), None)
            if entry is None:
                problems.append(f"{skip.node}: skipped: {skip.reason}")
            else:
                print(f"  allowed: {skip.node}: {skip.reason} (line {entry.line}: {entry.why})")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.check_skips",
        description="Fail on skipped tests that tests/skips-allowed.txt does not allow.",
    )
    parser.add_argument("reports", nargs="+", type=Path, help="pytest junit XML files")
    parser.add_argument("--allow", type=Path, default=ALLOW_LIST, help="the allow-list")
    args = parser.parse_args(argv)
    try:
        entries = parse_allow_list(args.allow.read_text(), str(args.allow))
    except (OSError, AllowListError) as exc:
        print(f"check-skips: {exc}", file=sys.stderr)
        return 1
    problems = check(args.reports, entries)
    if problems:
        print(
            f"check-skips: FAILED: {len(problems)} problem(s); a skip that is right "
            f"everywhere belongs in {args.allow} with its reason:",
            file=sys.stderr,
        )
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
