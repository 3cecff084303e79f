"""`fp up --demo`: register the example features and send realistic payments, live, through
the ingest API — a few of them broken, so that the contract is seen at work.  Then drift:
after a few minutes of payments the demo registers their features as the baseline of the
view's version, makes the amounts four times larger for a while, so that a drift alert
opens, and returns them to normal, so that it resolves."""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec

from core.errors import FeaturePlatformError, NotFoundError
from core.settings import Settings
from ingest.push import IngestClient
from monitor.baselines import baseline_of_windows
from registry.client import RegistryClient
from registry.repo_loader import load_repository
from registry.store.drift import PostgresDriftStore
from registry.store.postgres import create_registry_engine

logger = logging.getLogger(__name__)

DEMO_SOURCE = "transactions"
USERS = [f"u{n}" for n in range(1, 51)]
MERCHANTS = [f"m{n}" for n in range(1, 11)]
PER_SECOND = 20
BATCHES_PER_SECOND = 2

# What a broken producer sends, about 1 payment in 50: each breaks another rule.
BREAKAGES: list[Callable[[dict[str, object]], object]] = [
    lambda event: event.update(amount=-1),
    lambda event: event.update(currency="XBT"),
    lambda event: event.pop("user_id"),
    lambda event: event.update(amount="12.50"),
]


DRIFT_VIEW = "user_transactions"
DRIFT_ENV = {"FP_DRIFT_WINDOW": "30s", "FP_DRIFT_HORIZON": "2m"}
"""The demo's drift cadence (unless the environment sets one): windows of 30 s judged over
2 minutes, so that an alert opens and resolves within minutes rather than hours."""
BASELINE_AFTER_S = 240
SHIFT_FOR_S = 240
SHIFTED_AMOUNTS = 4.0


@dataclass
class Amounts:
    """What the payments' amounts are multiplied by (the drift the demo shows)."""

    factor: float = 1.0


def payment(rng: random.Random, now_ms: int, factor: float = 1.0) -> dict[str, object]:
    """A plausible payment; about 1 in 50 breaks the contract, to show the dead letters."""
    event: dict[str, object] = {
        "user_id": rng.choice(USERS), "merchant_id": rng.choice(MERCHANTS),
        "amount": round(factor * rng.lognormvariate(3, 1), 2),
        "currency": rng.choice(["EUR", "USD", "GBP"]),
        "channel": rng.choice(["web", "app", "pos"]), "ts": now_ms,
    }
    if rng.random() < 0.02:
        rng.choice(BREAKAGES)(event)
    return event


def send_payments(client: IngestClient, stop: threading.Event,
                  amounts: Amounts | None = None) -> None:
    """Batches of payments through the ingest API until ``stop``; each batch under its own
    Idempotency-Key, as a careful producer sends them."""
    rng = random.Random()
    encode = msgspec.json.Encoder().encode
    amounts = amounts or Amounts()
    taken_once = False
    while not stop.is_set():
        now_ms = int(time.time() * 1000)
        batch = [payment(rng, now_ms, amounts.factor)
                 for _ in range(PER_SECOND // BATCHES_PER_SECOND)]
        try:
            client.send(DEMO_SOURCE, b"\n".join(encode(event) for event in batch),
                        key=uuid.uuid4().hex)
            taken_once = True
        except FeaturePlatformError as error:
            if taken_once or not isinstance(error, NotFoundError):
                logger.warning("demo payments not taken: %s", error)
            else:  # the ingest API reads the applied definitions within a second or so
                logger.debug("demo payments not taken yet: %s", error)
        stop.wait(1 / BATCHES_PER_SECOND)
    client.close()


def start_demo(settings: Settings, examples: Path, stop: threading.Event,
               say: Callable[[str], None]) -> threading.Thread:
    """Apply the example repo, and send payments through the ingest API in the background
    (the ingest API creates their topic with the first of them)."""
    client = RegistryClient(settings.registry.url, token=settings.registry.client_token)
    result = client.apply(load_repository(examples), message="demo")
    changed = [c for c in result["changes"] if c["action"] != "unchanged"]
    say(f"applied {len(changed)} example definitions from {examples}")
    ingest = IngestClient(settings.ingest.url, token=settings.registry.client_token)
    amounts = Amounts()
    thread = threading.Thread(target=send_payments, args=(ingest, stop, amounts), daemon=True)
    thread.start()
    say(f"sending demo payments to source {DEMO_SOURCE!r} through the ingest API "
        f"({PER_SECOND}/s, about 1 in 50 breaking its contract)")
    threading.Thread(target=show_drift, args=(settings, client, amounts, stop, say),
                     daemon=True).start()
    return thread


def show_drift(settings: Settings, client: RegistryClient, amounts: Amounts,
               stop: threading.Event, say: Callable[[str], None]) -> None:
    """Register the baseline of the first minutes' features, shift the amounts until the
    monitor alerts, then put them back until it resolves."""
    if stop.wait(BASELINE_AFTER_S):
        return
    try:
        version, namespace = _active(client)
        started_ms = int(time.time() * 1000) - BASELINE_AFTER_S * 1000
        windows = PostgresDriftStore(create_registry_engine(settings.require_database_url())
                                     ).windows(DRIFT_VIEW, namespace, started_ms,
                                               int(time.time() * 1000))
        answer = client.post(f"/v1/feature-views/{DRIFT_VIEW}/baselines", {
            "version": version, "features": baseline_of_windows(windows),
            "origin": {"kind": "windows", "namespace": namespace, "from_ms": started_ms}})
    except FeaturePlatformError as error:
        say(f"demo drift: no baseline registered ({error})")
        return
    say(f"demo drift: the last {BASELINE_AFTER_S // 60} minutes' features are the baseline "
        f"of {DRIFT_VIEW}@{version} (event {answer['position']}); amounts "
        f"{SHIFTED_AMOUNTS:g} times larger for {SHIFT_FOR_S // 60} minutes from now — watch "
        f"`fp drift status {DRIFT_VIEW}`")
    amounts.factor = SHIFTED_AMOUNTS
    if stop.wait(SHIFT_FOR_S):
        return
    amounts.factor = 1.0
    say("demo drift: amounts back to normal; the alerts resolve once the horizon is clean")


def _active(client: RegistryClient) -> tuple[int, str]:
    """The version the view serves, and the namespace its job fills."""
    completed = [d for d in client.get(f"/v1/feature-views/{DRIFT_VIEW}/deployments")
                 ["deployments"] if d["state"] == "completed"]
    if not completed:
        raise FeaturePlatformError(f"{DRIFT_VIEW} is not deployed yet")
    return int(completed[0]["version"]), str(completed[0]["namespace"])
