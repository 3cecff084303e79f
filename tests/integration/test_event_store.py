"""The event store on real PostgreSQL: concurrent writers and commit ordering.

What every backend must do (expected versions, preconditions, paging, projections) is the
contract suite in tests/contracts/test_registry_store.py."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

import pytest

import registry.store.postgres as postgres_module
from core.domain.events import NewEvent, Provenance, RecordedEvent, RollbackRequested, StreamAppend
from core.errors import ConcurrencyConflictError
from registry.service import RegistryService
from registry.store.postgres import PostgresRegistryStore, create_registry_engine
from tests.reference_definitions import reference_definitions

CONTRACT_DEFINITIONS = reference_definitions()


def _event(n: int = 0) -> NewEvent:
    return NewEvent(RollbackRequested(view="v", to_version=n), {"actor": "test"})


def _apply_description(database_url: str, writer: int, start_at: float) -> str:
    """One writer (own engine, own connections) changing the view's description."""
    service = RegistryService(PostgresRegistryStore(create_registry_engine(database_url)))
    definitions = [dict(d) for d in CONTRACT_DEFINITIONS]
    definitions[2] = {**definitions[2], "description": f"written by writer {writer}"}
    time.sleep(max(0.0, start_at - time.time()))
    try:
        changes = service.apply(definitions, Provenance(actor=f"writer-{writer}"))
        return f"ok:{changes[2].to_version}"
    except ConcurrencyConflictError:
        return "conflict"
    finally:
        service.store.engine.dispose()  # type: ignore[attr-defined]


def _writer_process(database_url: str, writers: list[int], start_at: float) -> list[str]:
    with ThreadPoolExecutor(len(writers)) as pool:
        return list(pool.map(lambda w: _apply_description(database_url, w, start_at), writers))


def _page_all(store: PostgresRegistryStore, seen: list[RecordedEvent], stop: threading.Event,
              ) -> None:
    after = 0
    while True:
        page = store.read_events(after, limit=7)
        seen.extend(page)
        after = page[-1].position if page else after
        if not page and stop.is_set():
            return


def test_fifty_concurrent_writers_get_contiguous_versions_and_reader_sees_each_event_once(
        store: PostgresRegistryStore, database_url: str) -> None:
    RegistryService(store).apply(CONTRACT_DEFINITIONS, Provenance(actor="setup"))
    seen: list[RecordedEvent] = []
    stop = threading.Event()
    reader = threading.Thread(target=_page_all, args=(store, seen, stop))
    reader.start()
    start_at = time.time() + 3.0  # after every process has imported and connected
    groups = [list(range(i, 50, 5)) for i in range(5)]
    with ProcessPoolExecutor(5) as pool:
        outcomes = [o for group in pool.map(_writer_process, [database_url] * 5, groups,
                                            [start_at] * 5) for o in group]
    stop.set()
    reader.join(timeout=30)

    won = sorted(int(o.split(":")[1]) for o in outcomes if o.startswith("ok:"))
    assert len(outcomes) == 50
    assert outcomes.count("conflict") == 50 - len(won)
    assert outcomes.count("conflict") > 0, "writers never raced: the test proved nothing"
    assert won == list(range(2, 2 + len(won))), "each version exactly once, no gap"
    versions = [e.version for e in store.read_stream("feature_view:user_clicks")]
    assert versions == list(range(1, 2 + len(won)))

    everything = store.read_events(0, limit=10_000)
    assert [e.position for e in seen] == [e.position for e in everything]
    assert [e.position for e in seen] == sorted({e.position for e in seen})


def test_reader_never_skips_an_event_whose_transaction_commits_late(
        store: PostgresRegistryStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Writer A draws its position and stalls before commit; writer B starts meanwhile.

    B must not be able to commit a later position while A is in flight (if it could, a
    reader would see B, move its cursor past A's position and never see A)."""
    a_holds_position = threading.Event()
    release_a = threading.Event()
    project = postgres_module._project

    def stalling_project(conn: Any, event: RecordedEvent) -> None:
        project(conn, event)
        if event.stream == "slow":
            a_holds_position.set()
            release_a.wait(timeout=30)

    monkeypatch.setattr(postgres_module, "_project", stalling_project)
    results: dict[str, list[RecordedEvent]] = {}
    writer_a = threading.Thread(target=lambda: results.update(
        a=store.append([StreamAppend("slow", 0, (_event(),))])))
    writer_a.start()
    assert a_holds_position.wait(timeout=30)
    writer_b = threading.Thread(target=lambda: results.update(
        b=store.append([StreamAppend("fast", 0, (_event(),))])))
    writer_b.start()

    time.sleep(1.0)
    assert "b" not in results, "B committed while A was still in flight"
    assert store.read_events(0) == [], "nothing is visible before A commits"
    release_a.set()
    writer_a.join(timeout=30)
    writer_b.join(timeout=30)

    a_position, b_position = results["a"][0].position, results["b"][0].position
    assert a_position < b_position
    assert [e.position for e in store.read_events(0)] == [a_position, b_position]
