"""Registry use cases: apply a batch of definitions, read them, diff versions.

Everything here is orchestration between the pure domain and a :class:`RegistryStore`;
the HTTP API, the CLI and the git webhook all go through :meth:`RegistryService.apply`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from core.domain.backfills import backfill_history, coverage_by_version
from core.domain.changes import (
    Action,
    Change,
    ChangeClass,
    DiffEntry,
    RegisteredVersion,
    classify,
    diff_specs,
    plan_changes,
)
from core.domain.definitions import (
    Definition,
    Kind,
    definition_key,
    parse_definition,
    parse_definitions,
)
from core.domain.deployments import deployment_history
from core.domain.events import (
    BackfillEvent,
    DefinitionRegistered,
    NewEvent,
    Provenance,
    RecordedEvent,
    RollbackRequested,
    StreamAppend,
    backfill_stream,
    deployment_stream,
)
from core.domain.limits import check_batch_size
from core.domain.validation import dependants, references, validate_batch
from core.errors import (
    ConcurrencyConflictError,
    InvalidDefinitionError,
    NotFoundError,
    Problem,
)
from registry.store.base import DefinitionRecord, RegistryStore, VersionRecord


@dataclass(frozen=True)
class VersionDiff:
    kind: str
    name: str
    from_version: int
    to_version: int
    change_class: ChangeClass | None
    diff: tuple[DiffEntry, ...]

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "from_version": self.from_version,
                "to_version": self.to_version,
                "change_class": self.change_class.value if self.change_class else None,
                "diff": [entry.to_json() for entry in self.diff]}


ROLLBACK_APPEND_ATTEMPTS = 5
BACKFILL_APPEND_ATTEMPTS = 20


class RegistryService:
    def __init__(self, store: RegistryStore) -> None:
        self.store = store

    def apply(self, raw_definitions: Sequence[object], provenance: Provenance,
              dry_run: bool = False) -> list[Change]:
        """Validate every definition, then register every changed one in one transaction.

        Raises LimitExceededError for a batch over ``limits.MAX_DEFINITIONS_PER_BATCH``,
        InvalidDefinitionError (nothing written) or ConcurrencyConflictError when a
        definition this batch changes or depends on was changed since it was read.
        """
        check_batch_size(len(raw_definitions))
        batch = parse_definitions(list(raw_definitions))
        records = {f"{r.kind}:{r.name}": r for r in self.store.definitions()}
        catalog = validate_batch(_registered_catalog(records, batch), batch)
        changes = plan_changes(batch, {key: RegisteredVersion(r.latest_version, r.spec,
                                                              r.spec_hash)
                                       for key, r in records.items()})
        changed = [c for c in changes if c.action is not Action.UNCHANGED]
        if dry_run or not changed:
            return changes
        self.store.append(
            [StreamAppend(c.key, c.from_version or 0, (_registered_event(c, provenance),))
             for c in changed],
            preconditions=_read_set(catalog, changed, records),
        )
        return changes

    def definitions(self, kind: Kind) -> list[DefinitionRecord]:
        return self.store.definitions(kind.value)

    def definition(self, kind: Kind, name: str) -> DefinitionRecord:
        record = self.store.definition(kind.value, name)
        if record is None:
            raise NotFoundError(f"{kind.value.replace('_', ' ')} {name!r} is not registered")
        return record

    def versions(self, kind: Kind, name: str) -> list[VersionRecord]:
        self.definition(kind, name)
        return self.store.versions(kind.value, name)

    def version(self, kind: Kind, name: str, version: int) -> VersionRecord:
        record = self.store.version(kind.value, name, version)
        if record is None:
            latest = self.definition(kind, name).latest_version
            raise NotFoundError(f"{kind.value.replace('_', ' ')} {name!r} has no version "
                                f"{version} (versions 1..{latest})")
        return record

    def request_rollback(self, view: str, to_version: int, provenance: Provenance) -> int:
        """Record that ``view`` should serve ``to_version`` again; the deployer acts on it.
        Returns the event's position."""
        self.version(Kind.FEATURE_VIEW, view, to_version)
        stream = deployment_stream(view)
        for _ in range(ROLLBACK_APPEND_ATTEMPTS):
            current = len(self.store.read_stream(stream))
            event = NewEvent(RollbackRequested(view=view, to_version=to_version),
                             provenance.to_metadata())
            try:
                return self.store.append([StreamAppend(stream, current, (event,))])[0].position
            except ConcurrencyConflictError:
                continue  # the deployer appended meanwhile; the request is still valid
        raise ConcurrencyConflictError(f"{stream} kept changing; retry the rollback")

    def deployments(self, view: str) -> list[dict[str, Any]]:
        """The view's deployments, newest first, as the registry API serves them."""
        self.definition(Kind.FEATURE_VIEW, view)
        return [deployment.to_json() for deployment in
                deployment_history(self.store.read_stream(deployment_stream(view)))]

    def backfills(self, view: str) -> dict[str, Any]:
        """The view's backfills, newest first, and what each version's feature table holds,
        as the registry API serves them."""
        self.definition(Kind.FEATURE_VIEW, view)
        events = self.store.read_stream(backfill_stream(view))
        return {"name": view,
                "coverage": {str(version): coverage.to_json() for version, coverage
                             in sorted(coverage_by_version(events).items())},
                "backfills": [backfill.to_json() for backfill in backfill_history(events)]}

    def append_backfill_event(self, view: str,
                              build: Callable[[list[RecordedEvent]], BackfillEvent],
                              provenance: Provenance) -> RecordedEvent:
        """Append the event ``build`` makes of the view's backfill history so far (runners of
        one backfill's chunks append side by side: on a conflict it is built again)."""
        stream = backfill_stream(view)
        for _ in range(BACKFILL_APPEND_ATTEMPTS):
            history = self.store.read_stream(stream)
            event = NewEvent(build(history), provenance.to_metadata())
            try:
                return self.store.append([StreamAppend(stream, len(history), (event,))])[0]
            except ConcurrencyConflictError:
                continue
        raise ConcurrencyConflictError(f"{stream} kept changing; retry")

    def diff(self, kind: Kind, name: str, from_version: int, to_version: int) -> VersionDiff:
        old = self.version(kind, name, from_version)
        new = self.version(kind, name, to_version)
        entries = diff_specs(old.spec, new.spec)
        return VersionDiff(kind.value, name, from_version, to_version,
                           classify(kind, entries) if entries else None, tuple(entries))


def _registered_catalog(records: dict[str, DefinitionRecord],
                        batch: list[Definition]) -> dict[str, Definition]:
    """The registered definitions a batch is validated against.

    A definition registered before a rule it breaks existed is left out, so that it blocks
    only the batches that replace it or rely on it (which are told why), never every apply.
    """
    replaced = {definition_key(d) for d in batch}
    catalog: dict[str, Definition] = {}
    outdated: dict[str, InvalidDefinitionError] = {}
    for key, record in records.items():
        if key in replaced:
            continue
        try:
            catalog[key] = parse_definition(dict(record.spec))
        except InvalidDefinitionError as error:
            outdated[key] = error
    relied_on = {ref for d in batch for ref in references(d)} & outdated.keys()
    if relied_on:
        raise InvalidDefinitionError([
            Problem(p.path, f"{p.message} (registered before this rule existed: apply a "
                            "corrected version of it in the same batch)", key)
            for key in sorted(relied_on) for p in outdated[key].problems])
    return catalog


def _registered_event(change: Change, provenance: Provenance) -> NewEvent:
    assert change.to_version is not None, "only a changed definition gets a new version"
    return NewEvent(DefinitionRegistered(
        kind=change.kind.value, name=change.name, version=change.to_version,
        from_version=change.from_version, spec=dict(change.spec), spec_hash=change.spec_hash,
        change_class=change.change_class.value if change.change_class else None,
    ), provenance.to_metadata())


def _read_set(catalog: dict[str, Definition], changed: list[Change],
              records: dict[str, DefinitionRecord]) -> dict[str, int]:
    """Versions of the registered definitions validation relied on (references of the changed
    definitions and of their dependants), which must still hold when the append commits."""
    affected = dependants(catalog, [c.key for c in changed])
    relied_on = affected | {ref for key in affected for ref in references(catalog[key])}
    return {key: records[key].latest_version for key in relied_on if key in records}
