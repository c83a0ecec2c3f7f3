"""The repository is self-contained: no tracked file points at notes outside it.

Every tracked text file is read (``git ls-files``); a reference to the design notes
that lived beside the repository, or a ``docs/*.md`` path or link whose file does
not exist, fails the test with file:line. Also: no tracked file is git-ignored.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# Notes kept outside the repository, however they were cited. The directory names are
# joined here so that this file does not itself read as such a reference.
NOTES = "/".join(("shared", "notes"))
PARENT = "/".join(("..", "shared", ""))
OUTSIDE = re.compile(rf"{re.escape(NOTES)}|{re.escape(PARENT)}|(?<![\w/.-])notes/[\w-]+\.md")
# A path into docs/ (plain or as a Markdown link target, relative to the repository
# root or, inside docs/, to docs/ itself).
DOCS_PATH = re.compile(r"(?<![\w/.-])(?:\.\./)?docs/[\w./-]+\.md\b")
MARKDOWN_LINK = re.compile(r"\]\(([^)\s#]+\.md)(?:#[^)]*)?\)")


def tracked_files() -> list[Path]:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.fail("needs a git checkout of the repository (git ls-files)")
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout
    return [REPO / name for name in out.decode().split("\0") if name]


def text_lines(path: Path) -> list[str]:
    try:
        data = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return []  # deleted in the work tree, not yet in the index
    if b"\0" in data[:8192]:
        return []  # binary
    try:
        return data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        return []


def problems() -> list[str]:
    found = []
    for path in tracked_files():
        if path == Path(__file__).resolve():
            continue  # the patterns and their examples are here
        rel = path.relative_to(REPO)
        for lineno, line in enumerate(text_lines(path), 1):
            where = f"{rel}:{lineno}"
            if OUTSIDE.search(line):
                found.append(f"{where}: refers to notes outside the repository: {line.strip()}")
            for match in DOCS_PATH.finditer(line):
                target = match.group(0).removeprefix("../")
                if not (REPO / target).is_file():
                    found.append(f"{where}: {target} does not exist")
            if path.suffix == ".md":
                for match in MARKDOWN_LINK.finditer(line):
                    link = match.group(1)
                    if "://" in link:
                        continue
                    if not (path.parent / link).resolve().is_file():
                        found.append(f"{where}: link target {link} does not exist")
    return found


def test_no_reference_leaves_the_repository() -> None:
    assert problems() == []


def test_the_checks_catch_what_they_are_for() -> None:
    assert OUTSIDE.search(f"design: {NOTES}/paxos-lease.md")
    assert OUTSIDE.search(f"see {PARENT}notes/ipvs.md")
    assert OUTSIDE.search("leaves its VIP behind (notes/vrrp.md)")
    assert not OUTSIDE.search("see docs/vrrp.md")
    path = DOCS_PATH.search("(docs/missing.md)")
    assert path is not None and path.group(0) == "docs/missing.md"
    link = MARKDOWN_LINK.search("[lock](lock.md#timing)")
    assert link is not None and link.group(1) == "lock.md"


def test_design_documents_exist() -> None:
    for name in ("lock.md", "reconcile.md", "vrrp.md"):
        assert (REPO / "docs" / name).is_file(), name


def test_no_tracked_file_is_ignored() -> None:
    tracked_files()
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--ignored", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.split() == []
