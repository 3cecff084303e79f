"""The RegistryStore contract, one suite over every backend.

Each test runs against the in-memory store and against PostgreSQL, so a service test on the
fake proves what it would on the database.  What only a real database can show (concurrent
processes, lock ordering) stays in tests/integration/test_event_store.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from core.domain.definitions import Kind
from core.domain.events import (
    DefinitionRegistered,
    NewEvent,
    Provenance,
    RecordedEvent,
    RollbackRequested,
    StreamAppend,
    VersionActivated,
)
from core.errors import ConcurrencyConflictError
from registry.service import RegistryService
from registry.store.base import RegistryStore
from registry.store.memory import MemoryRegistryStore
from tests.reference_definitions import reference_definitions

CONTRACT_DEFINITIONS = reference_definitions()
VIEW = "user_clicks"


@pytest.fixture(params=["memory", "postgres"])
def registry_store(request: pytest.FixtureRequest) -> Iterator[RegistryStore]:
    if request.param == "memory":
        yield MemoryRegistryStore()
    else:
        yield request.getfixturevalue("store")


def _event(n: int = 0) -> NewEvent:
    """An event telling appends apart by ``n``, of a type the projections ignore."""
    return NewEvent(RollbackRequested(view="v", to_version=n), {"actor": "test"})


def _n(event: RecordedEvent) -> int:
    return int(event.data["to_version"])


def _registered(spec: dict[str, Any]) -> NewEvent:
    return NewEvent(DefinitionRegistered(kind="entity", name="e", version=1, from_version=None,
                                         spec=spec, spec_hash="h", change_class=None),
                    {"actor": "test"})


def _activated(view: str, version: int) -> NewEvent:
    return NewEvent(VersionActivated(view=view, deployment=version, version=version,
                                     namespace=f"n{version}"), {"actor": "deployer"})


def _apply(store: RegistryStore, description: str | None = None) -> None:
    definitions = [dict(d) for d in CONTRACT_DEFINITIONS]
    if description is not None:
        definitions[2] = {**definitions[2], "description": description}
    RegistryService(store).apply(definitions, Provenance(actor="alice", message="test"))


# --------------------------------------------------------------------------- the log

def test_an_empty_store_has_no_events(registry_store: RegistryStore) -> None:
    assert registry_store.last_position() == 0
    assert registry_store.read_events() == []
    assert registry_store.read_stream("s") == []


def test_append_assigns_contiguous_stream_versions(registry_store: RegistryStore) -> None:
    first = registry_store.append([StreamAppend("s", 0, (_event(1), _event(2)))])
    second = registry_store.append([StreamAppend("s", 2, (_event(3),))])
    assert [e.version for e in first + second] == [1, 2, 3]
    assert [_n(e) for e in registry_store.read_stream("s")] == [1, 2, 3]
    assert registry_store.last_position() == second[-1].position


def test_an_event_reads_back_as_it_was_appended(registry_store: RegistryStore) -> None:
    event = _registered({"nested": {"list": [1, "two", None]}})
    [appended] = registry_store.append([StreamAppend("entity:e", 0, (event,))])
    [read] = registry_store.read_stream("entity:e")
    assert read == appended
    assert (read.stream, read.version, read.type) == ("entity:e", 1, "DefinitionRegistered")
    assert read.payload == event.payload
    assert read.metadata == {"actor": "test"}
    assert read.recorded_at.tzinfo is not None


def test_changing_a_read_event_does_not_change_the_store(registry_store: RegistryStore) -> None:
    registry_store.append([StreamAppend("entity:e", 0, (_registered({"a": 1}),))])
    registry_store.read_stream("entity:e")[0].data["spec"]["a"] = 99
    assert registry_store.read_stream("entity:e")[0].data["spec"] == {"a": 1}
    assert registry_store.versions("entity", "e")[0].spec == {"a": 1}


def test_conflicting_append_writes_nothing_in_any_stream(registry_store: RegistryStore) -> None:
    registry_store.append([StreamAppend("b", 0, (_event(),))])
    before = registry_store.last_position()
    with pytest.raises(ConcurrencyConflictError, match="b is at version 1, expected 0"):
        registry_store.append([StreamAppend("a", 0, (_event(),)),
                               StreamAppend("b", 0, (_event(),))])
    assert registry_store.last_position() == before
    assert registry_store.read_stream("a") == []


def test_an_append_ahead_of_the_stream_conflicts(registry_store: RegistryStore) -> None:
    with pytest.raises(ConcurrencyConflictError, match="s is at version 0, expected 3"):
        registry_store.append([StreamAppend("s", 3, (_event(),))])
    assert registry_store.last_position() == 0


def test_precondition_on_a_read_stream_is_checked(registry_store: RegistryStore) -> None:
    registry_store.append([StreamAppend("source", 0, (_event(),))])
    with pytest.raises(ConcurrencyConflictError, match="source is at version 1, expected 2"):
        registry_store.append([StreamAppend("view", 0, (_event(),))],
                              preconditions={"source": 2})
    assert registry_store.read_stream("view") == []


def test_a_met_precondition_lets_the_append_through(registry_store: RegistryStore) -> None:
    registry_store.append([StreamAppend("source", 0, (_event(),))])
    registry_store.append([StreamAppend("view", 0, (_event(),))], preconditions={"source": 1})
    assert len(registry_store.read_stream("view")) == 1
    assert len(registry_store.read_stream("source")) == 1, "a precondition writes nothing"


def test_positions_grow_across_streams_in_commit_order(registry_store: RegistryStore) -> None:
    a = registry_store.append([StreamAppend("a", 0, (_event(1),)),
                               StreamAppend("b", 0, (_event(2), _event(3)))])
    b = registry_store.append([StreamAppend("a", 1, (_event(4),))])
    positions = [e.position for e in a + b]
    assert positions == sorted(positions) and len(set(positions)) == 4
    assert [_n(e) for e in registry_store.read_events()] == [1, 2, 3, 4]


def test_read_events_pages_by_position(registry_store: RegistryStore) -> None:
    for n in range(7):
        registry_store.append([StreamAppend(f"s{n}", 0, (_event(n),))])
    pages, after = [], 0
    while page := registry_store.read_events(after, limit=3):
        pages.append([_n(e) for e in page])
        after = page[-1].position
    assert pages == [[0, 1, 2], [3, 4, 5], [6]]
    assert registry_store.read_events(registry_store.last_position()) == []


# --------------------------------------------------------------------------- projections

def test_registering_projects_definitions_and_versions(registry_store: RegistryStore) -> None:
    _apply(registry_store)
    assert [(d.kind, d.name) for d in registry_store.definitions()] == sorted(
        (d["kind"], d["name"]) for d in CONTRACT_DEFINITIONS)
    [source] = registry_store.definitions(Kind.SOURCE.value)
    assert (source.name, source.latest_version, source.active_version) == ("clicks", 1, 1)
    [version] = registry_store.versions(Kind.SOURCE.value, "clicks")
    assert version.spec == source.spec and version.spec_hash == source.spec_hash
    assert version.provenance == {"actor": "alice", "message": "test"}
    assert version.position == registry_store.read_stream("source:clicks")[0].position
    assert registry_store.version(Kind.SOURCE.value, "clicks", 1) == version
    assert registry_store.version(Kind.SOURCE.value, "clicks", 2) is None
    assert registry_store.definition(Kind.SOURCE.value, "nope") is None
    assert registry_store.versions(Kind.SOURCE.value, "nope") == []


def test_a_feature_view_becomes_active_only_when_activated(registry_store: RegistryStore,
                                                           ) -> None:
    _apply(registry_store)
    view = registry_store.definition(Kind.FEATURE_VIEW.value, VIEW)
    assert view is not None and (view.latest_version, view.active_version) == (1, None)

    registry_store.append([StreamAppend(f"deployment:{VIEW}", 0, (_activated(VIEW, 1),))])
    _apply(registry_store, description="edited")
    view = registry_store.definition(Kind.FEATURE_VIEW.value, VIEW)
    assert view is not None and (view.latest_version, view.active_version) == (2, 1)
    assert view.spec["description"] == "edited"
    assert [v.version for v in registry_store.versions(Kind.FEATURE_VIEW.value, VIEW)] == [1, 2]

    registry_store.append([StreamAppend(f"deployment:{VIEW}", 1, (_activated(VIEW, 2),))])
    view = registry_store.definition(Kind.FEATURE_VIEW.value, VIEW)
    assert view is not None and view.active_version == 2


def test_activating_an_unregistered_view_projects_nothing(registry_store: RegistryStore,
                                                          ) -> None:
    registry_store.append([StreamAppend("deployment:ghost", 0, (_activated("ghost", 1),))])
    assert registry_store.definitions() == []
