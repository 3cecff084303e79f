"""Structured diffs between two versions of a definition, and what kind of change each is.

Change classes decide how a new version rolls out:

* ``metadata``: nothing the stream job computes changed (descriptions, owner, tags, ttl —
  ttl is applied when serving —, the offline flag and the drift thresholds, which the
  monitor applies); the new version shares the running job's data.
* ``additive``: only new features / new optional fields were added (plus metadata).
* ``breaking``: anything else that changes what is computed or how it is keyed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from core.domain.definitions import Definition, Kind, canonical_spec, definition_key, spec_hash


class ChangeClass(StrEnum):
    METADATA = "metadata"
    ADDITIVE = "additive"
    BREAKING = "breaking"


class Action(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class DiffEntry:
    """One difference: ``op`` is added / removed / changed at ``path`` (e.g.
    ``features.clicks_1h.window``; list items that have a name are addressed by it)."""

    path: str
    op: str
    old: Any = None
    new: Any = None

    def to_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"path": self.path, "op": self.op}
        if self.op != "added":
            entry["from"] = self.old
        if self.op != "removed":
            entry["to"] = self.new
        return entry


_NAMED_LISTS = {"features", "schema", "request_schema"}


def diff_specs(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[DiffEntry]:
    """Every difference between two canonical specs, in a stable order."""
    entries: list[DiffEntry] = []
    for key in sorted(set(old) | set(new), key=lambda k: (k not in old, k)):
        path = f"{prefix}{key}"
        if key not in new:
            entries.append(DiffEntry(path, "removed", old[key], None))
        elif key not in old:
            entries.append(DiffEntry(path, "added", None, new[key]))
        elif old[key] != new[key]:
            if key in _NAMED_LISTS and not prefix:
                entries.extend(_diff_named(old[key], new[key], f"{path}."))
            elif isinstance(old[key], dict) and isinstance(new[key], dict):
                entries.extend(diff_specs(old[key], new[key], f"{path}."))
            else:
                entries.append(DiffEntry(path, "changed", old[key], new[key]))
    return entries


def _diff_named(old: list[dict[str, Any]], new: list[dict[str, Any]],
                prefix: str) -> list[DiffEntry]:
    old_by_name = {item["name"]: item for item in old}
    new_by_name = {item["name"]: item for item in new}
    entries = diff_specs(old_by_name, new_by_name, prefix)
    if not entries:  # same items, other order: presentational, still a recorded change
        entries.append(DiffEntry(prefix.rstrip("."), "reordered",
                                 [i["name"] for i in old], [i["name"] for i in new]))
    return entries


_METADATA_KEYS = {"description", "owner", "tags"}
_METADATA_KEYS_BY_KIND = {
    # Drift thresholds are read by the monitor, never by the job.
    Kind.FEATURE_VIEW: {"ttl", "offline", "drift"},
}


def classify(kind: Kind, diff: list[DiffEntry]) -> ChangeClass:
    """The change class of ``diff`` (never empty) between two versions of one definition."""
    metadata_keys = _METADATA_KEYS | _METADATA_KEYS_BY_KIND.get(kind, set())
    additive = False
    for entry in diff:
        parts = entry.path.split(".")
        item_description = len(parts) == 3 and parts[2] == "description"
        if parts[0] in metadata_keys or item_description or entry.op == "reordered":
            continue
        if entry.op == "added" and len(parts) == 2 and _is_additive(parts[0], entry.new):
            additive = True
            continue
        return ChangeClass.BREAKING
    return ChangeClass.ADDITIVE if additive else ChangeClass.METADATA


def _is_additive(list_name: str, item: Mapping[str, Any]) -> bool:
    """A new feature adds output; a new *optional* field rejects no event that passed before."""
    if list_name == "features":
        return True
    return list_name in {"schema", "request_schema"} and not item.get("required", False)


@dataclass(frozen=True)
class RegisteredVersion:
    """The latest registered version of a definition, as the planner needs it."""

    version: int
    spec: Mapping[str, Any]
    spec_hash: str


@dataclass(frozen=True)
class Change:
    kind: Kind
    name: str
    action: Action
    from_version: int | None
    to_version: int | None
    change_class: ChangeClass | None
    diff: tuple[DiffEntry, ...]
    spec: Mapping[str, Any]
    spec_hash: str

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.name}"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value, "name": self.name, "action": self.action.value,
            "from_version": self.from_version, "to_version": self.to_version,
            "change_class": self.change_class.value if self.change_class else None,
            "diff": [entry.to_json() for entry in self.diff],
        }


def plan_change(definition: Definition, current: RegisteredVersion | None) -> Change:
    """What registering ``definition`` would do, given the latest registered version."""
    spec = canonical_spec(definition)
    digest = spec_hash(definition)
    kind, name = definition.kind, definition.name
    if current is None:
        return Change(kind, name, Action.CREATE, None, 1, None,
                      tuple(DiffEntry(k, "added", None, v) for k, v in spec.items()), spec, digest)
    if current.spec_hash == digest:
        return Change(kind, name, Action.UNCHANGED, current.version, current.version, None, (),
                      spec, digest)
    diff = diff_specs(current.spec, spec)
    return Change(kind, name, Action.UPDATE, current.version, current.version + 1,
                  classify(kind, diff), tuple(diff), spec, digest)


def plan_changes(batch: list[Definition],
                 registered: Mapping[str, RegisteredVersion]) -> list[Change]:
    return [plan_change(d, registered.get(definition_key(d))) for d in batch]
