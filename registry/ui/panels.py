"""The feature-view page's panels that other capabilities fill: backfill coverage (issue 16)
and drift status (issue 17).

The page asks a :class:`BackfillCoverage` and a :class:`DriftStatus` for what to show and lays
out what they answer; it knows nothing of where the answer comes from.  Until those
capabilities are merged, :class:`BackfillsNotAvailable` and :class:`DriftNotAvailable` answer
with :class:`NotAvailable`, saying what is missing.  Plugging one in is passing an object with
the same method to :class:`registry.ui.RegistryUI` (``backfills=``, ``drift=``) in
``registry/bootstrap.py``; docs/ui.md says what each field is shown as.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class NotAvailable:
    """The panel cannot be filled: ``reason`` says why, for people."""

    reason: str


# --------------------------------------------------------------------------- backfills

@dataclass(frozen=True)
class BackfillChunk:
    start: datetime
    end: datetime
    state: str
    """``completed``, ``running``, ``pending`` or ``failed``."""
    detail: str = ""
    """Rows written, the error of a failed chunk, …"""


@dataclass(frozen=True)
class Backfill:
    """One backfill of the view (``BackfillRequested`` … ``Completed``/``Failed``)."""

    backfill_id: str
    version: int
    start: datetime
    end: datetime
    state: str
    """``requested``, ``running``, ``completed`` or ``failed``."""
    requested_by: str | None
    requested_at: datetime
    chunks: list[BackfillChunk] = field(default_factory=list)
    error: str | None = None


@dataclass(frozen=True)
class Coverage:
    """The view's backfills, newest first, and the event-time ranges its offline feature
    table holds."""

    backfills: list[Backfill]
    covered: list[tuple[datetime, datetime]]


class BackfillCoverage(Protocol):
    def coverage(self, view: str) -> Coverage | NotAvailable:
        """What the view's backfills covered, or why that cannot be said."""


class BackfillsNotAvailable:
    """The answer until backfills (issue 16) are merged."""

    def coverage(self, view: str) -> Coverage | NotAvailable:
        return NotAvailable(
            "not available yet: backfills are not part of this registry — this panel needs "
            "the BackfillRequested / BackfillChunkCompleted / BackfillCompleted / "
            "BackfillFailed events (or GET /v1/feature-views/{name}/backfills) and the "
            "Iceberg feature tables of issue 16")


# --------------------------------------------------------------------------- drift

@dataclass(frozen=True)
class HistogramBin:
    label: str
    """The bin's range or category, e.g. ``[10, 100)`` or ``"paid"``."""
    baseline: float
    """The baseline's fraction of values in this bin (0..1)."""
    live: float
    """The live window's fraction (0..1)."""


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    state: str
    """``ok``, ``warning``, ``drifting`` or ``no baseline``."""
    metrics: dict[str, str]
    """Each metric's reading for people: ``{"psi": "0.31 (critical 0.12)"}``."""
    bins: list[HistogramBin]
    window: str = ""
    """The live window compared: ``2025-06-01 10:00 to 11:00 UTC, 12,400 values``."""


@dataclass(frozen=True)
class DriftAlert:
    feature: str
    opened_at: datetime
    severity: str
    message: str


@dataclass(frozen=True)
class DriftReport:
    baseline: str
    """Which baseline (``BaselineRegistered``) the features are compared with."""
    features: list[FeatureDrift]
    open_alerts: list[DriftAlert]
    """``DriftDetected`` without a later ``DriftResolved``."""


class DriftStatus(Protocol):
    def drift(self, view: str) -> DriftReport | NotAvailable:
        """The view's drift against its baseline, or why that cannot be said."""


class DriftNotAvailable:
    """The answer until drift detection (issue 17) is merged."""

    def drift(self, view: str) -> DriftReport | NotAvailable:
        return NotAvailable(
            "not available yet: drift detection is not part of this registry — this panel "
            "needs the BaselineRegistered / DriftDetected / DriftResolved events (or GET "
            "/v1/feature-views/{name}/drift) with each feature's baseline and live "
            "histograms from issue 17")
