"""``fp_registry_webhook_deliveries{status=…}`` on ``/metrics``: the inbox counted by status.

Counted in the database at scrape time rather than in this process, so the figure is the same
whichever registry process is scraped and survives restarts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from registry.webhooks.inbox import DeliveryInbox

logger = logging.getLogger(__name__)

METRIC_NAME = "fp_registry_webhook_deliveries"
_HELP = "Git webhook deliveries in the inbox, by status"


class DeliveryCountCollector(Collector):
    def __init__(self, inbox: DeliveryInbox) -> None:
        self.inbox = inbox

    def describe(self) -> Iterable[Metric]:
        # Lets the registry learn the metric's name without a database query.
        return [GaugeMetricFamily(METRIC_NAME, _HELP, labels=["status"])]

    def collect(self) -> Iterable[Metric]:
        try:
            counts = self.inbox.counts_by_status()
        except Exception:
            # A scrape must not fail because the database is away; the gauge is left out.
            logger.warning("could not count webhook deliveries for /metrics", exc_info=True)
            return []
        gauge = GaugeMetricFamily(METRIC_NAME, _HELP, labels=["status"])
        for status, count in counts.items():
            gauge.add_metric([status.value], count)
        return [gauge]
