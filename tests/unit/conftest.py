"""Every configuration the unit tests read also checks the two fast readers.

``agent.config.subset`` (the line reader) must build the libyaml composer's tree
whenever it does not decline, and ``agent.config.quick`` must build the general
reader's virtual server whenever it does not decline. Wrapping both for every
test holds them to that on the hundreds of documents the tests use.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.unit.config.twins import checked_quick, checked_subset


@pytest.fixture(autouse=True)
def _fast_readers_agree(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from agent.config import quick, subset

    monkeypatch.setattr(subset, "compose_subset", checked_subset(subset.compose_subset))
    monkeypatch.setattr(quick, "virtual_server", checked_quick(quick.virtual_server))
    yield
