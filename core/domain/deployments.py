"""The deployment history of a feature view, read from its ``deployment:{view}`` stream."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from core.domain.events import EventType, RecordedEvent

_STATE_AFTER = {
    EventType.DEPLOYMENT_STARTED: "started",
    EventType.DEPLOYMENT_READY: "ready",
    EventType.VERSION_ACTIVATED: "activated",
    EventType.VERSION_RETIRED: "completed",
    EventType.DEPLOYMENT_FAILED: "failed",
}
_TIMESTAMP_KEY = {
    EventType.DEPLOYMENT_STARTED: "started_at",
    EventType.DEPLOYMENT_READY: "ready_at",
    EventType.VERSION_ACTIVATED: "activated_at",
    EventType.VERSION_RETIRED: "retired_at",
    EventType.DEPLOYMENT_FAILED: "failed_at",
}


def deployment_history(events: Iterable[RecordedEvent]) -> list[dict[str, Any]]:
    """One record per deployment, newest first: state, jobs, timings, error."""
    deployments: dict[int, dict[str, Any]] = {}
    for event in events:
        if event.type not in _STATE_AFTER:
            continue
        data = event.data
        record = deployments.setdefault(data["deployment"], {"deployment": data["deployment"]})
        record["state"] = _STATE_AFTER[EventType(event.type)]
        record[_TIMESTAMP_KEY[EventType(event.type)]] = event.recorded_at.isoformat()
        if event.type == EventType.DEPLOYMENT_STARTED:
            record |= {k: data.get(k) for k in ("version", "kind", "namespace", "job_id",
                                                  "blue_version", "blue_namespace",
                                                  "blue_job_id")}
            record["requested_by"] = event.metadata.get("actor")
        elif event.type == EventType.DEPLOYMENT_READY:
            record["readiness"] = {k: v for k, v in data.items()
                                   if k.endswith(("watermark", "offsets"))}
        elif event.type == EventType.VERSION_RETIRED:
            record["savepoint"] = data.get("savepoint")
        elif event.type == EventType.DEPLOYMENT_FAILED:
            record["error"] = data.get("reason")
    for record in deployments.values():
        if record["state"] == "activated" and record.get("blue_job_id") is None:
            record["state"] = "completed"
    return sorted(deployments.values(), key=lambda r: r["deployment"], reverse=True)
