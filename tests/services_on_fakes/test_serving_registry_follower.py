"""Serving follows the registry's event log also when the log needs a read token."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from core.domain.events import Provenance
from core.errors import InfrastructureError
from registry.api.app import Access, create_registry_app
from registry.feed import RegistryEvents
from registry.service import RegistryService
from registry.store.memory import MemoryRegistryStore
from serving.catalog import DefinitionHistory
from tests.reference_definitions import reference_definitions

READ_SECRET = "r3ad"


def follow(token: str | None) -> int:
    service = RegistryService(MemoryRegistryStore())
    service.apply(reference_definitions(), Provenance(actor="test"))
    app = create_registry_app(service, Access(api_tokens=["ci:wr1te"],
                                              read_tokens=[f"serving:{READ_SECRET}"]))

    async def catch_up() -> int:
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]
                                 base_url="http://registry")
        events = RegistryEvents("http://registry", DefinitionHistory(), http=http, token=token)
        try:
            return await events.catch_up()
        finally:
            await events.close()

    return asyncio.run(catch_up())


def test_serving_reads_a_guarded_event_log_with_its_token() -> None:
    assert follow(READ_SECRET) == len(reference_definitions())


def test_without_a_token_a_guarded_event_log_is_unreadable() -> None:
    with pytest.raises(InfrastructureError, match="401"):
        follow(None)
