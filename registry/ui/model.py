"""What each page of the UI shows, computed from registry records without any I/O.

The page handlers (:mod:`registry.ui.pages`) read the registry, Redis, the serving API and
Kafka, hand the results to these functions, and give what they return to the templates, which
only lay values out.  Everything a person could get wrong by reading raw records — which
deployment is in flight, how long a step took, what a diff means for the features, how far a
namespace lags — is decided here, where it is tested without services
(tests/unit/test_ui_model.py).
"""

from __future__ import annotations

import difflib
import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core.domain.changes import DiffEntry
from core.domain.deployments import Deployment, DeploymentState, at_epoch_ms, epoch_ms
from core.domain.events import RecordedEvent
from registry.ui.panels import HistogramBin

KIND_LABELS = {"entity": "entity", "source": "source", "feature_view": "feature view",
               "on_demand_feature_view": "on-demand view"}
KIND_PATHS = {"entity": "entities", "source": "sources", "feature_view": "feature-views",
              "on_demand_feature_view": "on-demand-feature-views"}
"""The UI's path segment of each kind (the registry API's)."""
OVERVIEW_ROWS = 200
"""Rows the overview lists at most; a search narrows the rest down."""


def page_path(kind: str, name: str) -> str:
    return f"/ui/{KIND_PATHS[kind]}/{name}"


def duration_text(ms: int | None) -> str:
    """``ms`` for people: ``850 ms``, ``12.4 s``, ``3 min 5 s``, ``2 h 10 min``, ``3 d 4 h``."""
    if ms is None:
        return "—"
    if ms < 0:
        return f"-{duration_text(-ms)}"
    if ms < 1000:
        return f"{ms} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    seconds = ms // 1000
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    if seconds < 86_400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86_400} d {seconds % 86_400 // 3600} h"


def moment_text(at: datetime | None) -> str:
    return "—" if at is None else at.strftime("%Y-%m-%d %H:%M:%S UTC")


def ms_text(epoch: int | None) -> str:
    """An epoch-ms moment as :func:`moment_text` shows it."""
    return "—" if epoch is None else moment_text(at_epoch_ms(epoch))


# --------------------------------------------------------------------------- overview

@dataclass(frozen=True)
class DefinitionRow:
    kind: str
    name: str
    owner: str
    tags: tuple[str, ...]
    description: str
    latest_version: int
    active_version: int | None
    deployment: str | None
    """The newest deployment's state (feature views only): ``completed``, ``started``, …"""

    @property
    def kind_label(self) -> str:
        return KIND_LABELS[self.kind]

    @property
    def href(self) -> str:
        return page_path(self.kind, self.name)


@dataclass(frozen=True)
class Search:
    """The overview's filters; empty ones match everything."""

    text: str = ""
    """Part of the name or description, any case."""
    owner: str = ""
    tag: str = ""
    """``key=value``, or a key alone: any value."""
    kind: str = ""

    def matches(self, row: DefinitionRow) -> bool:
        needle = self.text.strip().lower()
        return ((not needle or needle in row.name.lower() or needle in row.description.lower())
                and (not self.owner or row.owner == self.owner)
                and (not self.tag or any(self.tag in (tag, tag.partition("=")[0])
                                         for tag in row.tags))
                and (not self.kind or row.kind == self.kind))


@dataclass(frozen=True)
class Overview:
    rows: list[DefinitionRow]
    """The matching rows shown, at most :data:`OVERVIEW_ROWS`."""
    matching: int
    total: int
    owners: list[str]
    tags: list[str]
    counts: dict[str, int]
    """Definitions of each kind (all, not only the matching)."""
    search: Search


def definition_row(kind: str, name: str, spec: Mapping[str, Any], *, latest: int,
                   active: int | None, deployment: Deployment | None) -> DefinitionRow:
    return DefinitionRow(kind=kind, name=name, owner=str(spec.get("owner") or ""),
                         tags=tuple(f"{key}={value}" for key, value
                                    in sorted((spec.get("tags") or {}).items())),
                         description=str(spec.get("description") or ""),
                         latest_version=latest, active_version=active,
                         deployment=deployment.state.value if deployment else None)


def overview(rows: Sequence[DefinitionRow], search: Search) -> Overview:
    kind_order = list(KIND_LABELS)
    ordered = sorted(rows, key=lambda r: (kind_order.index(r.kind), r.name))
    matching = [row for row in ordered if search.matches(row)]
    return Overview(rows=matching[:OVERVIEW_ROWS], matching=len(matching), total=len(rows),
                    owners=sorted({r.owner for r in rows if r.owner}),
                    tags=sorted({tag for r in rows for tag in r.tags}),
                    counts=dict(Counter(r.kind for r in rows)), search=search)


# --------------------------------------------------------------------------- versions

@dataclass(frozen=True)
class VersionRow:
    version: int
    change_class: str | None
    registered_at: datetime
    actor: str
    message: str | None
    provenance: dict[str, str]
    """Where the version came from besides its actor: commit, repository, delivery, …"""
    active: bool


PROVENANCE_SHOWN = ("provider", "repository", "ref", "commit", "delivery_id", "pusher")


def version_rows(versions: Iterable[tuple[int, str | None, Mapping[str, Any], datetime]],
                 active: int | None) -> list[VersionRow]:
    """Newest first, from (version, change class, provenance, registered at)."""
    rows = [VersionRow(version=v, change_class=change, registered_at=at,
                       actor=str(provenance.get("actor", "")),
                       message=provenance.get("message"),
                       provenance={k: str(provenance[k]) for k in PROVENANCE_SHOWN
                                   if provenance.get(k)},
                       active=v == active)
            for v, change, provenance, at in versions]
    return sorted(rows, key=lambda r: r.version, reverse=True)


# --------------------------------------------------------------------------- diffs

@dataclass(frozen=True)
class FeatureChange:
    feature: str
    op: str
    """``added``, ``removed`` or ``changed``."""
    details: list[str]
    """For a changed feature, each changed property: ``window: 5s → 10s``."""


@dataclass(frozen=True)
class SqlLine:
    """One row of the side-by-side SQL: a line of each version (None: no line there)."""

    old_number: int | None
    old: str | None
    new_number: int | None
    new: str | None
    tag: str
    """``equal``, ``replace``, ``delete`` or ``insert``."""


@dataclass(frozen=True)
class DiffView:
    from_version: int
    to_version: int
    change_class: str | None
    features: list[FeatureChange]
    other: list[str]
    """Every change outside the features, for people: ``ttl: 1h → 2h``."""
    sql: list[SqlLine] | None
    """The generated Flink SQL of both versions side by side; None when not compiled."""
    sql_problem: str | None = None
    """Why there is no SQL (a version the compiler refuses, not a feature view)."""


def _value_text(value: Any) -> str:
    return "—" if value is None else json.dumps(value, sort_keys=True, ensure_ascii=False)


def _entry_text(entry: DiffEntry, path: str) -> str:
    if entry.op == "added":
        return f"{path}: added {_value_text(entry.new)}"
    if entry.op == "removed":
        return f"{path}: removed (was {_value_text(entry.old)})"
    return f"{path}: {_value_text(entry.old)} → {_value_text(entry.new)}"


def diff_view(from_version: int, to_version: int, change_class: str | None,
              entries: Sequence[DiffEntry], *, old_sql: Sequence[str] | None,
              new_sql: Sequence[str] | None, sql_problem: str | None = None) -> DiffView:
    """The diff of two versions: feature by feature, then the rest, then the SQL."""
    features: dict[str, FeatureChange] = {}
    other: list[str] = []
    for entry in entries:
        parts = entry.path.split(".", 2)
        if parts[0] != "features" or len(parts) == 1:
            other.append(_entry_text(entry, entry.path))
        elif len(parts) == 2:
            features[parts[1]] = FeatureChange(parts[1], entry.op, [])
        else:
            change = features.setdefault(parts[1], FeatureChange(parts[1], "changed", []))
            change.details.append(_entry_text(entry, parts[2]))
    sql = side_by_side("\n\n".join(old_sql).splitlines(), "\n\n".join(new_sql).splitlines()) \
        if old_sql is not None and new_sql is not None else None
    return DiffView(from_version, to_version, change_class, list(features.values()), other,
                    sql, sql_problem)


def side_by_side(old: Sequence[str], new: Sequence[str]) -> list[SqlLine]:
    """Both texts aligned line by line on their longest common runs (difflib)."""
    lines: list[SqlLine] = []
    matcher = difflib.SequenceMatcher(a=old, b=new, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        for k in range(max(i2 - i1, j2 - j1)):
            i, j = i1 + k, j1 + k
            lines.append(SqlLine(i + 1 if i < i2 else None, old[i] if i < i2 else None,
                                 j + 1 if j < j2 else None, new[j] if j < j2 else None, tag))
    return lines


# --------------------------------------------------------------------------- deployments

@dataclass(frozen=True)
class Step:
    label: str
    at: datetime
    after_ms: int
    """Since the deployment started."""
    detail: str = ""


@dataclass(frozen=True)
class TimelineEntry:
    """One deployment, or a rollback request (``deployment`` None), on the timeline."""

    title: str
    state: str
    at: datetime
    steps: list[Step] = field(default_factory=list)
    took_ms: int | None = None
    """From start to the last step, once it is over."""
    job_id: str | None = None
    blue_job_id: str | None = None
    error: str | None = None
    actor: str | None = None
    in_flight: bool = False


def _steps(d: Deployment) -> list[Step]:
    start = d.started_at
    found: list[tuple[str, datetime | None, str]] = [
        ("started", start, f"{d.kind.value}, namespace {d.namespace}"
                           + (f", job {d.job_id}" if d.job_id else "")),
        ("waiting", d.waiting_since, d.waiting_reason or ""),
        ("resumed", d.resumed_at, ""),
        ("ready", d.ready_at, _readiness_text(d.readiness)),
        ("activated", d.activated_at, f"v{d.version} serves"),
        ("retired", d.retired_at,
         f"v{d.blue_version} stopped" + (f", job {d.blue_job_id}" if d.blue_job_id else "")
         + ("" if d.savepoint else ", no savepoint")),
        ("failed", d.failed_at, d.error or ""),
    ]
    steps = [Step(label, at, epoch_ms(at) - epoch_ms(start), detail)
             for label, at, detail in found if at is not None]
    return sorted(steps, key=lambda s: s.at)


def _readiness_text(readiness: Mapping[str, Any]) -> str:
    watermark = readiness.get("green_watermark")
    return "" if watermark is None else f"green watermark {ms_text(watermark)}"


def timeline(deployments: Sequence[Deployment], rollbacks: Sequence[RecordedEvent]
             ) -> list[TimelineEntry]:
    """Every deployment and rollback request of a view, newest first."""
    entries: list[TimelineEntry] = []
    for d in deployments:
        steps = _steps(d)
        over = not d.in_flight
        rollout = "flip" if d.kind.value == "flip" else f"v{d.blue_version} → v{d.version}" \
            if d.blue_version else f"v{d.version}"
        entries.append(TimelineEntry(
            title=f"Deployment {d.number}: {rollout}", state=d.state.value, at=d.started_at,
            steps=steps, took_ms=steps[-1].after_ms if over else None, job_id=d.job_id,
            blue_job_id=d.blue_job_id, error=d.error, actor=d.requested_by,
            in_flight=d.in_flight))
    for event in rollbacks:
        entries.append(TimelineEntry(
            title=f"Rollback to v{event.data.get('to_version')} requested", state="requested",
            at=event.recorded_at, actor=event.metadata.get("actor")))
    return sorted(entries, key=lambda e: e.at, reverse=True)


# --------------------------------------------------------------------------- materialisation

@dataclass(frozen=True)
class NamespaceRow:
    namespace: str
    versions: list[int]
    """The versions served from this namespace."""
    active: bool
    watermark: int | None
    rows: int
    updated_at_ms: int | None
    lag_ms: int | None
    """How far the results trail the wall clock: now - watermark."""


def namespace_rows(deployments: Sequence[Deployment], purged: Iterable[str], active: int | None,
                   progress: Mapping[str, tuple[int | None, int, int | None]],
                   now_ms: int) -> list[NamespaceRow]:
    """The namespaces a view's deployments built and that are not purged yet, newest first,
    with each one's (watermark, rows, updated at) as the writer recorded it."""
    gone = set(purged)
    versions: dict[str, set[int]] = {}
    for d in deployments:
        if d.state is not DeploymentState.FAILED or d.kind.value == "flip":
            versions.setdefault(d.namespace, set()).add(d.version)
    rows = []
    for namespace, served in versions.items():
        if namespace in gone or namespace not in progress:
            continue
        watermark, count, updated = progress[namespace]
        rows.append(NamespaceRow(namespace, sorted(served), active in served, watermark, count,
                                 updated, None if watermark is None else now_ms - watermark))
    return sorted(rows, key=lambda r: max(r.versions), reverse=True)


def live_namespaces(deployments: Sequence[Deployment], purged: Iterable[str]) -> list[str]:
    """The namespaces whose progress is worth reading: built, not failed, not purged."""
    gone = set(purged)
    return sorted({d.namespace for d in deployments
                   if d.namespace not in gone and d.state is not DeploymentState.FAILED})


# --------------------------------------------------------------------------- live values

@dataclass(frozen=True)
class LiveRow:
    feature: str
    value: str
    status: str
    age_ms: int | None


@dataclass(frozen=True)
class LiveValues:
    entity_key: str
    version: int | None
    """The version that answered."""
    rows: list[LiveRow]
    event_time: int | None
    problem: str | None = None
    """Why there are no values (an unknown entity is not a problem: its rows say NOT_FOUND)."""


def live_values(answer: Mapping[str, Any], now_ms: int) -> LiveValues:
    """The serving API's answer to ``GET /v1/features/{view}/{key}`` for people."""
    event_time = answer.get("event_time")
    statuses: Mapping[str, str] = answer.get("statuses") or {}
    rows = [LiveRow(name, _value_text(value), statuses.get(name, ""),
                    None if event_time is None or statuses.get(name) != "PRESENT"
                    else now_ms - int(event_time))
            for name, value in (answer.get("features") or {}).items()]
    return LiveValues(str(answer.get("entity_key", "")), answer.get("version"), rows,
                      event_time)


# --------------------------------------------------------------------------- event log

@dataclass(frozen=True)
class EventRow:
    position: int
    type: str
    stream: str
    subject: str
    """The definition or view the event is about."""
    summary: str
    actor: str
    provenance: dict[str, str]
    recorded_at: datetime


def event_row(event: RecordedEvent) -> EventRow:
    data = event.data
    subject = event.stream.split(":", 1)[-1]
    metadata = {k: str(v) for k, v in event.metadata.items() if k not in ("actor", "message")}
    if event.metadata.get("message"):
        metadata = {"message": str(event.metadata["message"]), **metadata}
    return EventRow(event.position, event.type, event.stream, subject, _summary(event.type, data),
                    str(event.metadata.get("actor", "")), metadata, event.recorded_at)


def _summary(event_type: str, data: Mapping[str, Any]) -> str:
    version = data.get("version")
    match event_type:
        case "DefinitionRegistered":
            change = data.get("change_class")
            return f"v{version} registered" + (f" ({change})" if change else "")
        case "DeploymentStarted":
            job = f", job {data['job_id']}" if data.get("job_id") else ""
            return f"deployment {data.get('deployment')} of v{version} started " \
                   f"({data.get('kind')}{job})"
        case "DeploymentWaiting":
            return f"deployment {data.get('deployment')} waits: {data.get('reason')}"
        case "DeploymentFailed":
            return f"deployment {data.get('deployment')} of v{version} failed: " \
                   f"{data.get('reason')}"
        case "VersionRetired":
            return f"v{data.get('retired_version')} retired"
        case "RollbackRequested":
            return f"rollback to v{data.get('to_version')} requested"
        case "NamespacePurged":
            return f"namespace {data.get('namespace')} purged " \
                   f"({data.get('keys_deleted')} keys)"
        case _ if version is not None:
            return f"v{version}: {event_type}"
        case _:
            return event_type


@dataclass(frozen=True)
class EventSearch:
    type: str = ""
    subject: str = ""
    """Part of the stream's name (a definition or view), any case."""
    actor: str = ""

    def matches(self, row: EventRow) -> bool:
        # Stream names are lowercase already (kinds, ``deployment:`` and definition names,
        # which start with a lowercase letter): only the needle is lowered.
        return ((not self.type or row.type == self.type)
                and (not self.subject or self.subject.lower() in row.stream)
                and (not self.actor or row.actor == self.actor))


# --------------------------------------------------------------------------- data quality

@dataclass(frozen=True)
class DeadLetter:
    at_ms: int
    """When the letter was written (the Kafka message's timestamp)."""
    reason_code: str
    reason: str
    field: str | None
    origin: str
    """``stream`` (a job judged it) or ``ingest`` (refused at the door)."""
    where: str
    """Which job or request: ``user_transactions v2, partition 0 offset 17``."""
    payload: str
    identity: tuple[Any, ...]
    """What makes two letters the same rejected event: every job of a source writes its
    own letter for the same message (blue and green during a rollout)."""


def dead_letter(value: bytes, at_ms: int) -> DeadLetter:
    """A ``{topic}.dlq`` message (docs/reference.md, "Dead letter"); unreadable ones are
    kept as such, their bytes as the payload."""
    try:
        letter = json.loads(value)
        if not isinstance(letter, dict):
            raise ValueError("not an object")
    except (ValueError, UnicodeDecodeError):
        text = value.decode("utf-8", "replace")
        return DeadLetter(at_ms, "unreadable_letter", "the dead letter is not a JSON object",
                          None, "unknown", "", text, ("raw", text))
    origin = str(letter.get("origin", "unknown"))
    if origin == "ingest":
        where = f"request {letter.get('request_id')} #{letter.get('index')}, contract " \
                f"v{letter.get('contract_version')}"
        identity: tuple[Any, ...] = ("ingest", letter.get("request_id"), letter.get("index"))
    else:
        where = f"{letter.get('view')} {letter.get('namespace')}, partition " \
                f"{letter.get('partition')} offset {letter.get('offset')}"
        identity = ("stream", letter.get("topic"), letter.get("partition"),
                    letter.get("offset"))
    return DeadLetter(at_ms, str(letter.get("reason_code", "unknown")),
                      str(letter.get("reason", "")), letter.get("field"), origin, where,
                      str(letter.get("payload", "")), identity)


@dataclass(frozen=True)
class Bar:
    """One stacked segment of a bar chart: its place in a viewBox of 0..100 by 0..40."""

    x: float
    y: float
    width: float
    height: float
    series: int
    """Which series (colour class) the segment belongs to."""
    title: str


@dataclass(frozen=True)
class Rejections:
    letters: int
    """Distinct rejected events in the sample."""
    duplicates: int
    """Letters of the same event written by several jobs, left out."""
    by_reason: list[tuple[str, int]]
    by_origin: dict[str, int]
    since_ms: int | None
    until_ms: int | None
    bucket_ms: int
    reasons: list[str]
    """The series of the chart, in colour order."""
    bars: list[Bar]
    recent: list[DeadLetter]


_BUCKETS = (60_000, 300_000, 900_000, 3_600_000, 21_600_000, 86_400_000)
CHART_WIDTH, CHART_HEIGHT = 100.0, 40.0
RECENT_LETTERS = 20


def rejections(letters: Sequence[DeadLetter], buckets: int = 30) -> Rejections:
    """Distinct rejected events by reason, by origin and over time (about ``buckets``
    bars of a whole-minute, -hour or -day width), and the most recent ones."""
    seen: set[tuple[Any, ...]] = set()
    distinct: list[DeadLetter] = []
    for letter in sorted(letters, key=lambda item: item.at_ms):
        if letter.identity not in seen:
            seen.add(letter.identity)
            distinct.append(letter)
    by_reason = Counter(letter.reason_code for letter in distinct).most_common()
    reasons = [reason for reason, _ in by_reason]
    if not distinct:
        return Rejections(0, len(letters), [], {}, None, None, _BUCKETS[0], [], [], [])
    since, until = distinct[0].at_ms, distinct[-1].at_ms
    width = next((b for b in _BUCKETS if (until - since) / b <= buckets), _BUCKETS[-1])
    first = since - since % width
    count = (until - first) // width + 1
    per_bucket = [Counter[str]() for _ in range(count)]
    for letter in distinct:
        per_bucket[(letter.at_ms - first) // width][letter.reason_code] += 1
    tallest = max(sum(c.values()) for c in per_bucket)
    bar_width = CHART_WIDTH / count
    bars = []
    for index, counts in enumerate(per_bucket):
        y = CHART_HEIGHT
        for series, reason in enumerate(reasons):
            if counts[reason]:
                height = CHART_HEIGHT * counts[reason] / tallest
                y -= height
                bars.append(Bar(round(index * bar_width, 3), round(y, 3),
                                round(bar_width * 0.9, 3), round(height, 3), series,
                                f"{ms_text(first + index * width)}: {counts[reason]} {reason}"))
    return Rejections(len(distinct), len(letters) - len(distinct), by_reason,
                      dict(Counter(letter.origin for letter in distinct)), since, until, width,
                      reasons, bars, list(reversed(distinct[-RECENT_LETTERS:])))


# --------------------------------------------------------------------------- histograms

HISTOGRAM_WIDTH, HISTOGRAM_HEIGHT = 360.0, 210.0
"""A drift histogram's viewBox: drawn at its own aspect ratio, so that its text is not
stretched (the rejections' bars, which carry no text, stretch to any width)."""
_PLOT_LEFT, _PLOT_TOP, _PLOT_RIGHT, _PLOT_BOTTOM = 44.0, 10.0, 352.0, 136.0


@dataclass(frozen=True)
class HistogramBar:
    x: float
    y: float
    width: float
    height: float
    series: str
    """``baseline`` or ``live``."""
    title: str


@dataclass(frozen=True)
class AxisLabel:
    x: float
    y: float
    text: str


@dataclass(frozen=True)
class HistogramChart:
    """Baseline and live bars side by side per bin, in a viewBox of :data:`HISTOGRAM_WIDTH` by
    :data:`HISTOGRAM_HEIGHT`, over a plot area from (left, top) to (right, bottom)."""

    label: str
    """What the chart shows, for people who do not see it (``aria-label``)."""
    bars: list[HistogramBar]
    bin_labels: list[AxisLabel]
    """Under each bin, written slanted (the template rotates them about their point)."""
    share_ticks: list[AxisLabel]
    """Left of the plot: 0, half the top and the top of the scale, as percentages."""
    x_title: str
    width: float = HISTOGRAM_WIDTH
    height: float = HISTOGRAM_HEIGHT
    left: float = _PLOT_LEFT
    top: float = _PLOT_TOP
    right: float = _PLOT_RIGHT
    bottom: float = _PLOT_BOTTOM


BIN_LABEL_CHARS = 14
"""A bin's label under the axis is cut to this; its bars' titles carry it whole."""


def histogram_chart(label: str, bins: Sequence[HistogramBin], x_title: str) -> HistogramChart:
    """Each bin's baseline and live shares as a pair of bars side by side (a bin without
    live values has its baseline bar alone), heights proportional to the shares on a scale
    whose top is the tallest share rounded up to a multiple of 5 %."""
    tallest = max((max(b.baseline, b.live or 0.0) for b in bins), default=0.0)
    scale = max(math.ceil(round(tallest * 20, 9)) / 20, 0.05)
    plot_height = _PLOT_BOTTOM - _PLOT_TOP
    slot = (_PLOT_RIGHT - _PLOT_LEFT) / max(len(bins), 1)
    bars, labels = [], []
    for index, histogram_bin in enumerate(bins):
        left = _PLOT_LEFT + index * slot
        for offset, series, share in ((0.1, "baseline", histogram_bin.baseline),
                                      (0.5, "live", histogram_bin.live)):
            if share is None:
                continue
            height = plot_height * share / scale
            bars.append(HistogramBar(round(left + offset * slot, 3),
                                     round(_PLOT_BOTTOM - height, 3), round(slot * 0.4, 3),
                                     round(height, 3), series,
                                     f"{histogram_bin.label}: {series} {share:.1%}"))
        text = histogram_bin.label
        if len(text) > BIN_LABEL_CHARS:
            text = text[:BIN_LABEL_CHARS - 1] + "…"
        labels.append(AxisLabel(round(left + slot / 2, 3), _PLOT_BOTTOM + 10, text))
    ticks = [AxisLabel(_PLOT_LEFT - 4, round(_PLOT_BOTTOM - plot_height * part, 3),
                       f"{scale * part * 100:g}%") for part in (0.0, 0.5, 1.0)]
    return HistogramChart(label, bars, labels, ticks, x_title)
