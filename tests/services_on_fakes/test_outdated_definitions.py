"""A definition registered before a rule it breaks existed blocks only the applies that
replace it or rely on it, and those are told how to fix it."""

from __future__ import annotations

from typing import Any

import pytest

from core.domain.events import DefinitionRegistered, NewEvent, Provenance, StreamAppend
from core.errors import InvalidDefinitionError
from registry.service import RegistryService
from registry.store.memory import MemoryRegistryStore
from tests.reference_definitions import reference_definitions


def by_kind(kind: str) -> dict[str, Any]:
    return next(d for d in reference_definitions() if d["kind"] == kind)


@pytest.fixture
def service() -> RegistryService:
    """The reference definitions, then a version of source `clicks` with a field named like
    one of the streaming job's own columns, written as a release before that rule would."""
    service = RegistryService(MemoryRegistryStore())
    service.apply(reference_definitions(), Provenance(actor="setup"))
    outdated = by_kind("source")
    outdated["schema"].append({"name": "event_time", "type": "long", "required": False})
    service.store.append([StreamAppend("source:clicks", 1, (NewEvent(DefinitionRegistered(
        kind="source", name="clicks", version=2, from_version=1, spec=outdated,
        spec_hash="outdated", change_class="additive")),))])
    return service


def test_an_unrelated_apply_is_not_blocked(service: RegistryService) -> None:
    [change] = service.apply([{"kind": "entity", "name": "store", "join_keys": ["store_id"]}],
                             Provenance(actor="test"))
    assert change.to_version == 1


def test_an_apply_relying_on_it_is_told_to_correct_it(service: RegistryService) -> None:
    view = by_kind("feature_view")
    view["description"] = "changed"
    with pytest.raises(InvalidDefinitionError) as refused:
        service.apply([view], Provenance(actor="test"))
    [problem] = refused.value.problems
    assert problem.definition == "source:clicks"
    assert "registered before this rule existed" in problem.message


def test_a_corrected_version_in_the_same_batch_is_applied(service: RegistryService) -> None:
    view = by_kind("feature_view")
    view["description"] = "changed"
    changes = service.apply([by_kind("source"), view], Provenance(actor="test"))
    assert {(c.name, c.to_version) for c in changes} == {("clicks", 3), ("user_clicks", 2)}
