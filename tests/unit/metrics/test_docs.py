"""docs/metrics.md lists exactly the metrics the code exports, with their types.

The exposition is captured from the code itself: the agent's registry (agent,
IPVS, VRRP, lock and health collectors), as the daemon serves it. Every family is
announced (``# TYPE``) even without samples, so no traffic, VRRP instance, lock or
health check is needed to see its name.
"""

from __future__ import annotations

import re
from pathlib import Path

from agent.metrics import AgentMetrics

DOC = Path(__file__).resolve().parents[3] / "docs" / "metrics.md"
ROW = re.compile(r"^\| `(lvs_agent_[a-z0-9_]+)` \| (counter|gauge|histogram) \|", re.M)


def exported() -> dict[str, str]:
    """name -> type, from an exposition of every collector."""
    metrics = AgentMetrics()
    text = metrics.exposition().decode()
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    # The client library's "_created" companions of counters and histograms.
    companions = {
        f"{name.removesuffix('_total')}_created"
        for name, kind in types.items()
        if kind in ("counter", "histogram")
    }
    return {name: kind for name, kind in types.items() if name not in companions}


def documented() -> dict[str, str]:
    rows = ROW.findall(DOC.read_text())
    names = [name for name, _ in rows]
    assert len(names) == len(set(names)), "a metric documented twice"
    return dict(rows)


def test_the_document_lists_every_exported_metric_and_no_other() -> None:
    code, doc = exported(), documented()
    assert sorted(code.keys() - doc.keys()) == [], "exported but not in docs/metrics.md"
    assert sorted(doc.keys() - code.keys()) == [], "in docs/metrics.md but not exported"


def test_the_documented_types_are_the_exported_ones() -> None:
    code, doc = exported(), documented()
    wrong = {n: (doc[n], code[n]) for n in doc.keys() & code.keys() if doc[n] != code[n]}
    assert wrong == {}
