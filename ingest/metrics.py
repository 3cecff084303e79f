"""The ingest API's Prometheus metrics (``GET /metrics``; docs/ingest.md lists them)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter("fp_ingest_events_total",
                 "Events judged at the door, by source and outcome (accepted, rejected)",
                 ["source", "outcome"])
REJECTIONS = Counter("fp_ingest_rejected_events_total",
                     "Events refused by their source's contract, by source and reason code",
                     ["source", "reason"])
REQUESTS = Histogram("fp_ingest_request_seconds",
                     "Ingest requests by status, from the body read to the answer (the "
                     "broker's acknowledgement included)", ["status"],
                     buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5,
                              1.0, 2.5, 5.0, 10.0, 30.0))
REPLAYS = Counter("fp_ingest_replayed_requests_total",
                  "Requests answered from their Idempotency-Key's first answer")
NOT_ACKNOWLEDGED = Counter("fp_ingest_not_acknowledged_requests_total",
                           "Requests answered 503 because the broker did not acknowledge them")
PRODUCER_QUEUE = Gauge("fp_ingest_producer_queue_messages",
                       "Messages handed to the producer and not yet acknowledged or failed")
REGISTRY_ERRORS = Counter("fp_ingest_registry_errors_total",
                          "Failed reads of the registry's event log")
