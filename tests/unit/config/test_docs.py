"""docs/configuration.md documents every key the loader accepts.

The keys come from the loader's own "unknown key ...; allowed here: ..." messages,
found as tests/unit/config/test_key_coverage.py finds them, so a key added to the
loader fails this test until the reference has a row for it. The reference has one
heading per section, naming the section's path in backquotes (`ipvs.timeouts`,
`virtual_servers[].real_servers[]`; "Top level" for the file's own keys), followed
by a table whose rows start with the key in backquotes.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.unit.config.test_key_coverage import SECTIONS, _allowed

DOC = Path(__file__).resolve().parents[3] / "docs" / "configuration.md"
# Sections documented as taking another section's keys.
SAME_AS = {
    "witness.clusters[]": "lock",
    "virtual_servers[].real_servers[].health_checks[]": "virtual_servers[].health_checks[]",
}


def documented() -> dict[str, set[str]]:
    """section path -> the keys in its table."""
    found: dict[str, set[str]] = {}
    section: str | None = None
    for line in DOC.read_text().splitlines():
        heading = re.match(r"^#{2,4} (.*)$", line)
        if heading:
            title = heading.group(1)
            path = re.match(r"`([a-z_.\[\]]+)`", title)
            section = path.group(1) if path else ("" if title == "Top level" else None)
            continue
        row = re.match(r"^\| `([a-z_0-9]+)` \|", line)
        if row and section is not None:
            found.setdefault(section, set()).add(row.group(1))
    return found


def test_every_key_the_loader_accepts_is_documented() -> None:
    doc = documented()
    missing = [
        f"{mode} file: {section or '(top level)'}: {key}"
        for mode, sections in SECTIONS.items()
        for section in sections
        for key in _allowed(mode, section)
        if key not in doc.get(SAME_AS.get(section, section), set())
    ]
    assert not missing, (
        "keys the loader accepts that docs/configuration.md does not list (add a row "
        "to the section's table: type, default, meaning):\n  " + "\n  ".join(missing)
    )


def test_no_documented_key_is_unknown_to_the_loader() -> None:
    accepted: dict[str, set[str]] = {}
    for mode, sections in SECTIONS.items():
        for section in sections:
            accepted.setdefault(section, set()).update(_allowed(mode, section))
    extra = [
        f"{section or '(top level)'}: {key}"
        for section, keys in documented().items()
        for key in sorted(keys - accepted.get(section, set()))
    ]
    assert not extra, "docs/configuration.md lists keys the loader refuses:\n  " + "\n  ".join(
        extra
    )


def test_the_same_as_sections_say_so() -> None:
    text = DOC.read_text()
    for section, same in SAME_AS.items():
        _parent, _, key = section.removesuffix("[]").rpartition(".")
        assert f"| `{key}` |" in text and f"the keys of [`{same}`]" in text, section


def test_the_examples_are_yaml() -> None:
    import yaml

    blocks = re.findall(r"^```yaml\n(.*?)^```", DOC.read_text(), re.M | re.S)
    assert len(blocks) >= 10
    for block in blocks:
        assert isinstance(yaml.safe_load(block), dict), block
