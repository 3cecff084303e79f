"""The UI's reads beyond the registry: one interface each, and the adapters of the two HTTP APIs.

* namespace progress (Redis): :class:`ProgressReader`, ``sinks.online_store.RedisOnlineStore``;
* live values (the serving API): :class:`LiveReader`, :class:`ServingApi`;
* dead letters (Kafka): :class:`TopicTail`, ``sinks.kafka_admin.KafkaAdmin``;
* accepted and rejected at the door (the ingest API's metrics): :class:`IngestCounts`,
  :class:`IngestMetrics`.

Each is optional: a registry started without ``FP_REDIS_URL``, ``FP_SERVING_URL`` or
``FP_KAFKA_BOOTSTRAP`` shows on the page which setting the panel needs instead.
Live values come from the serving API, not from Redis, so that the page shows exactly what a
model gets: the same version resolution, TTL and statuses.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import quote

import httpx
from prometheus_client.parser import text_string_to_metric_families

from core.errors import InfrastructureError
from registry.client import error_from_response
from sinks.online_store import NamespaceProgress

TIMEOUT_S = 2.0
"""A page waits this long at most for another API: it shows the error rather than hang."""


class ProgressReader(Protocol):
    def progress(self, view: str, namespace: str) -> NamespaceProgress:
        """What the writer has recorded of the namespace."""


class LiveReader(Protocol):
    def features(self, view: str, entity_key: str, version: int | None) -> Mapping[str, Any]:
        """The serving API's answer for one entity (``version`` None: the active one);
        raises what the API answered as the platform's error."""


class TopicTail(Protocol):
    def tail(self, topic: str, limit: int) -> list[tuple[int, bytes]]:
        """At most the last ``limit`` messages of ``topic``: (timestamp ms, value)."""


class IngestCounts(Protocol):
    def counts(self, source: str) -> dict[str, dict[str, int]]:
        """Since the ingest API started: ``{"outcome": {"accepted": n, "rejected": m},
        "reason": {code: n, …}}`` for ``source``."""


class ServingApi:
    def __init__(self, url: str) -> None:
        self.url = url
        self._client = httpx.Client(base_url=url, timeout=TIMEOUT_S)

    def features(self, view: str, entity_key: str, version: int | None) -> Mapping[str, Any]:
        params = {} if version is None else {"version": str(version)}
        try:
            response = self._client.get(f"/v1/features/{quote(view, safe='')}/"
                                        f"{quote(entity_key, safe='')}", params=params)
        except httpx.HTTPError as error:
            raise InfrastructureError(f"the serving API at {self.url} did not answer: "
                                      f"{error}") from error
        if not response.is_success:
            raise error_from_response(response, "the serving API")
        answer: dict[str, Any] = response.json()
        return answer

    def close(self) -> None:
        self._client.close()


class IngestMetrics:
    """The ingest API's Prometheus counters (``GET /metrics``): one process's counts since
    it started.  Behind a load balancer each request reaches one instance, so the counts are
    that instance's; docs/ui.md says so."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._client = httpx.Client(base_url=url, timeout=TIMEOUT_S)

    def counts(self, source: str) -> dict[str, dict[str, int]]:
        try:
            response = self._client.get("/metrics")
        except httpx.HTTPError as error:
            raise InfrastructureError(f"the ingest API at {self.url} did not answer: "
                                      f"{error}") from error
        if not response.is_success:
            raise error_from_response(response, "the ingest API")
        counts: dict[str, dict[str, int]] = {"outcome": {}, "reason": {}}
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                if sample.labels.get("source") != source or not sample.name.endswith("_total"):
                    continue
                if sample.name == "fp_ingest_events_total":
                    counts["outcome"][sample.labels["outcome"]] = int(sample.value)
                elif sample.name == "fp_ingest_rejected_events_total":
                    counts["reason"][sample.labels["reason"]] = int(sample.value)
        return counts

    def close(self) -> None:
        self._client.close()
