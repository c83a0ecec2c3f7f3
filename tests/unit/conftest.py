"""Every configuration the unit tests read also checks the readers' fast paths.

``agent.config.composer`` must read each document as ``yaml.safe_load`` does,
and ``agent.config.quick`` must build the general reader's virtual server
whenever it does not decline. Wrapping both for every test holds them to that
on the hundreds of documents the tests use.

Property tests (hypothesis) draw the same examples on every run of the test
command (``CI`` or ``LVS_AGENT_NO_SKIP`` set): a red run there means the code
changed, not the dice. Run pytest on its own to explore new examples.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

from tests.unit.config.twins import checked_compose, checked_quick

settings.register_profile("repeatable", derandomize=True, print_blob=True)
if os.environ.get("CI") or os.environ.get("LVS_AGENT_NO_SKIP"):
    settings.load_profile("repeatable")


@pytest.fixture(autouse=True)
def _fast_readers_agree(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from agent.config import composer, quick

    monkeypatch.setattr(composer, "compose", checked_compose(composer.compose))
    monkeypatch.setattr(quick, "virtual_server", checked_quick(quick.virtual_server))
    yield
