"""Every configuration the unit tests read also checks the readers' fast paths.

``agent.config.composer`` must read each document as ``yaml.safe_load`` does,
and ``agent.config.quick`` must build the general reader's virtual server
whenever it does not decline. Wrapping both for every test holds them to that
on the hundreds of documents the tests use.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.unit.config.twins import checked_compose, checked_quick


@pytest.fixture(autouse=True)
def _fast_readers_agree(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from agent.config import composer, quick

    monkeypatch.setattr(composer, "compose", checked_compose(composer.compose))
    monkeypatch.setattr(quick, "virtual_server", checked_quick(quick.virtual_server))
    yield
