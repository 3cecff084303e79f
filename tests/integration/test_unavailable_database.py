"""An unreachable database is reported with a generic text; its driver's message — which
names the host and the user — goes to the server log only."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import create_engine

from core.domain.events import NewEvent, RollbackRequested, StreamAppend
from core.errors import InfrastructureError
from deployer.coordination import PostgresCheckpointStore
from registry.store.postgres import PostgresRegistryStore
from registry.webhooks.inbox import DeliveryStatus, NewDelivery, PostgresDeliveryInbox

# Nothing listens on port 9: connecting fails at once, and psycopg's message names both.
UNREACHABLE = "postgresql+psycopg://leaky_user:pw@127.0.0.1:9/fp"


@pytest.mark.parametrize(("attempt", "public"), [
    (lambda engine: PostgresRegistryStore(engine).append(
        [StreamAppend("rollback", 0, (NewEvent(RollbackRequested(view="v", to_version=1)),))]),
     "registry database unavailable"),
    (lambda engine: PostgresDeliveryInbox(engine).receive(NewDelivery(
        provider="github", delivery_id="d1", event="push", payload=b"{}",
        status=DeliveryStatus.QUEUED)), "webhook inbox unavailable"),
    (lambda engine: PostgresCheckpointStore(engine).load(), "deployer checkpoint unavailable"),
], ids=["registry store", "webhook inbox", "deployer checkpoint"])
def test_the_error_is_generic_and_the_detail_logged(
        attempt: Callable[[Any], object], public: str,
        caplog: pytest.LogCaptureFixture) -> None:
    engine = create_engine(UNREACHABLE, connect_args={"connect_timeout": 3})
    caplog.set_level(logging.WARNING)

    with pytest.raises(InfrastructureError) as failure:
        attempt(engine)

    assert str(failure.value) == public
    assert failure.value.status == 503
    assert "127.0.0.1" in caplog.text
