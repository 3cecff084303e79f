"""Where an alert goes besides the registry's log: a webhook receiving each as JSON."""

from __future__ import annotations

import logging
from typing import Any, Protocol

import httpx

logger = logging.getLogger(__name__)

ATTEMPTS = 3


class AlertSink(Protocol):
    def send(self, alert: dict[str, Any]) -> None: ...


class WebhookAlerts:
    """POSTs each alert to ``url``; a receiver that keeps failing is logged, never retried
    later: the registry's log, not the webhook, is the record of alerts."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url
        self._http = httpx.Client(timeout=timeout)

    def send(self, alert: dict[str, Any]) -> None:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                response = self._http.post(self.url, json=alert)
                if response.is_success:
                    return
                failure = f"answered {response.status_code}"
            except httpx.HTTPError as error:
                failure = str(error)
            logger.warning("drift webhook %s, attempt %d of %d: %s", self.url, attempt,
                           ATTEMPTS, failure)
