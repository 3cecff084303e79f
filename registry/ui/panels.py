"""The feature-view page's backfill and drift panels: the interfaces the page asks, and the data
classes it lays out.

The page asks a :class:`BackfillCoverage` and a :class:`DriftStatus` and knows nothing of where
the answer comes from.  The registry's own implementations (:mod:`registry.ui.registry_panels`)
read its event log — the ``backfill:{view}`` and ``drift:{view}`` streams — and the drift
monitor's store; :mod:`registry.ui.model` turns what they read into these classes without I/O.
Another implementation is passed to :class:`registry.ui.RegistryUI` (``backfills=``,
``drift=``); docs/ui.md says what each field is shown as.  A panel that cannot be filled at
all answers :class:`NotAvailable`; a view without backfills, baselines or monitoring windows
is an answer like any other, said as such.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class NotAvailable:
    """The panel cannot be filled: ``reason`` says why, for people."""

    reason: str


Range = tuple[datetime, datetime]
"""Event times ``[start, end)``."""


# --------------------------------------------------------------------------- backfills

@dataclass(frozen=True)
class BackfillChunk:
    start: datetime
    end: datetime
    state: str
    """``completed``, ``failed``, ``pending`` (its backfill runs: running or waiting, the
    events do not tell apart) or ``not run`` (its backfill failed before reaching it)."""
    rows: int | None = None
    """Rows written and archived events read, once completed."""
    events_read: int | None = None


@dataclass(frozen=True)
class Backfill:
    """One backfill of the view (``BackfillRequested`` … ``Completed``/``Failed``)."""

    number: int
    version: int
    table: str
    start: datetime
    end: datetime
    state: str
    """``running``, ``completed`` or ``failed``."""
    reprocess: str
    requested_by: str | None
    requested_at: datetime
    provenance: dict[str, str]
    """Where the request came from besides its actor: message, commit, …"""
    chunks: list[BackfillChunk]
    rows: int
    events_read: int
    finished_at: datetime | None = None
    error: str | None = None


@dataclass(frozen=True)
class TableCoverage:
    """What one version's offline feature table holds, as the backfills recorded it."""

    version: int
    table: str
    covered: list[Range]
    failed: list[Range]
    """Chunks whose latest outcome is a failure."""


@dataclass(frozen=True)
class Coverage:
    tables: list[TableCoverage]
    """Newest version first."""
    backfills: list[Backfill]
    """Newest first."""


class BackfillCoverage(Protocol):
    def coverage(self, view: str) -> Coverage | NotAvailable:
        """What the view's backfills covered, or why that cannot be said."""


# --------------------------------------------------------------------------- drift

@dataclass(frozen=True)
class HistogramBin:
    label: str
    """The bin's values or category: ``1.26 to 2``, ``≥ 316``, ``web``."""
    baseline: float
    """The baseline's share of values in this bin (0..1)."""
    live: float | None
    """The live horizon's share; None without live values."""


@dataclass(frozen=True)
class MetricReading:
    """The monitor's latest reading of one metric of a feature."""

    metric: str
    value: float
    alert_at: float
    """The threshold, or the critical value of the sample sizes when higher."""
    severity: str
    """``ok``, ``warning`` or ``alert`` (an alert open)."""
    window_end: datetime


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    state: str
    """``ok``, ``warning``, ``drifting``, ``not judged`` (a baseline, no reading yet) or
    ``no baseline``."""
    readings: list[MetricReading]
    kind: str
    """``numeric`` or ``categorical`` (the baseline's); empty without a baseline."""
    bins: list[HistogramBin]
    baseline: str
    """The baseline's values for people: ``5,000 values, 10.0 % null``."""
    live: str
    """The live values compared, or why there are none."""


@dataclass(frozen=True)
class VersionDrift:
    version: int
    active: bool
    baseline: str | None
    """Which ``BaselineRegistered`` the features are compared with; None: none registered."""
    namespace: str | None
    """Whose job's statistics are live values; None: the version was never deployed."""
    features: list[FeatureDrift]


@dataclass(frozen=True)
class DriftAlert:
    version: int
    feature: str
    metric: str
    opened_at: datetime
    value: float
    alert_at: float
    window_end: datetime


@dataclass(frozen=True)
class DriftReport:
    versions: list[VersionDrift]
    """Each version with a baseline, and the active one, newest first."""
    open_alerts: list[DriftAlert]
    """``DriftDetected`` without a later ``DriftResolved``."""


class DriftStatus(Protocol):
    def drift(self, view: str) -> DriftReport | NotAvailable:
        """The view's drift against its baselines, or why that cannot be said."""
