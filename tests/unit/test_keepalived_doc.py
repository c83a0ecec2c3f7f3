"""docs/keepalived.md agrees with ``lvs-agent import-keepalived``.

Every row of the document's tables names a keepalived line and what the importer
does with it. Each line is put into a small keepalived.conf, in the block its
section's heading names, and imported; the importer's report for that line must
match the row's status: ``translated`` leaves nothing out, ``not supported`` and
``no equivalent`` leave it out for that reason, ``differs`` either translates it
(with keepalived's meaning written explicitly) or leaves it out as differing.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agent.importer import import_keepalived

DOC = Path(__file__).resolve().parents[2] / "docs" / "keepalived.md"
STATUSES = ("translated", "differs", "not supported", "no equivalent")

INSTANCE = """vrrp_instance VI_1 {
  interface eth0
  virtual_router_id 51
  virtual_ipaddress {
    192.0.2.1/24
  }
@@
}
"""
CHECKED = """virtual_server 192.0.2.10 80 {
  protocol TCP
  real_server 10.0.0.1 80 {
    TCP_CHECK {
      connect_port 80
    }
@@
  }
}
"""
# The keepalived file around a row's line (``@@``), by the section heading.
CONTEXTS = {
    "`global_defs`": "global_defs {\n@@\n}\n" + INSTANCE.replace("@@\n", ""),
    "`vrrp_script`": "vrrp_script chk {\n  script /bin/true\n@@\n}\n"
    + INSTANCE.replace("@@", "  track_script {\n    chk\n  }"),
    "`vrrp_instance`": "vrrp_script chk {\n  script /bin/true\n}\n" + INSTANCE,
    "`vrrp_sync_group`": INSTANCE.replace("@@\n", "") + "vrrp_sync_group G {\n@@\n}\n",
    "Other top-level blocks": "@@\nvirtual_server group web {\n  lb_algo rr\n}\n",
    "`virtual_server`": "virtual_server 192.0.2.10 80 {\n@@\n"
    "  real_server 10.0.0.1 80 {\n    TCP_CHECK {\n      connect_port 80\n    }\n  }\n}\n",
    "`real_server`": CHECKED,
    "Checkers: keywords of every checker": CHECKED.replace("@@", "TCP_CHECK {\n@@\n}"),
    "`HTTP_GET` and `SSL_GET`": CHECKED.replace("@@", "HTTP_GET {\nurl {\npath /\n}\n@@\n}"),
    "`SSL_GET`": CHECKED.replace("@@", "SSL_GET {\nvirtualhost a.example\nurl {\npath /\n}\n@@\n}"),
    "`url`": CHECKED.replace("@@", "HTTP_GET {\nurl {\n@@\n}\n}"),
    "`DNS_CHECK`": CHECKED.replace("@@", "DNS_CHECK {\n@@\n}"),
    "`UDP_CHECK`": CHECKED.replace("@@", "UDP_CHECK {\n@@\n}"),
    "`MISC_CHECK`": CHECKED.replace("@@", "MISC_CHECK {\nmisc_path /bin/true\n@@\n}"),
}
# Translated keywords whose value is written on entries made from other lines (the
# YAML names the line of the entry): what the output must contain instead ("!": not).
WRITTEN_ELSEWHERE = {
    "vrrp_version 3": "version: 3",
    "sync_group_tracking_weight": None,  # no trackers here: nothing to keep
    "protocol TCP": 'protocol: "tcp"',
    "delay_loop 10": 'interval: "10s"',
    "virtualhost www.example.org": 'host: "www.example.org"',
    "enable_sni": "!no SNI",
    "inhibit_on_failure": 'on_failure: "drain"',
}
ROW = re.compile(r"^\| `([^`]+)` \|([^|]*)\| *([a-z ]+?) *\|([^|]*)\|$")


def rows() -> list[tuple[str, str, str]]:
    """(heading, keepalived line, status) of every table row."""
    found: list[tuple[str, str, str]] = []
    heading = ""
    for line in DOC.read_text().splitlines():
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
            continue
        match = ROW.match(line)
        if match:
            found.append((heading, match.group(1), match.group(3)))
    return found


def test_the_tables_cover_every_block_and_use_known_statuses() -> None:
    found = rows()
    assert {heading for heading, _, _ in found} == set(CONTEXTS)
    assert {status for _, _, status in found} <= set(STATUSES)
    assert len(found) > 100


@pytest.mark.parametrize(
    ("heading", "keyword", "status"), rows(), ids=lambda v: v if len(v) < 40 else v[:40]
)
def test_the_importer_does_what_the_row_says(
    heading: str, keyword: str, status: str, tmp_path: Path
) -> None:
    text = CONTEXTS[heading]
    line = text.splitlines().index("@@") + 1
    conf = tmp_path / "keepalived.conf"
    conf.write_text(text.replace("@@", keyword))
    imported = import_keepalived(str(conf), "test")
    why = sorted({s.why for s in imported.skipped if s.line == line})
    report = "\n".join(str(s) for s in imported.skipped)
    if status == "translated":
        assert why == [], report
        expected = WRITTEN_ELSEWHERE.get(keyword, f"keepalived.conf:{line}")
        if expected is not None and expected.startswith("!"):
            assert expected[1:] not in imported.yaml, imported.yaml
        elif expected is not None:
            assert expected in imported.yaml, imported.yaml
    elif status == "differs":
        assert why in ([], ["differs"]), report
    else:
        assert why == [status], report
