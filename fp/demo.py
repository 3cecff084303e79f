"""`fp up --demo`: register the example features and send realistic payments, live, through
the ingest API — a few of them broken, so that the contract is seen at work."""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import msgspec

from core.errors import FeaturePlatformError
from core.settings import Settings
from ingest.push import IngestClient
from registry.client import RegistryClient
from registry.repo_loader import load_repository

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


def payment(rng: random.Random, now_ms: int) -> dict[str, object]:
    """A plausible payment; about 1 in 50 breaks the contract, to show the dead letters."""
    event: dict[str, object] = {
        "user_id": rng.choice(USERS), "merchant_id": rng.choice(MERCHANTS),
        "amount": round(rng.lognormvariate(3, 1), 2), "currency": rng.choice(["EUR", "USD", "GBP"]),
        "channel": rng.choice(["web", "app", "pos"]), "ts": now_ms,
    }
    if rng.random() < 0.02:
        rng.choice(BREAKAGES)(event)
    return event


def send_payments(client: IngestClient, stop: threading.Event) -> None:
    """Batches of payments through the ingest API until ``stop``; each batch under its own
    Idempotency-Key, as a careful producer sends them."""
    rng = random.Random()
    encode = msgspec.json.Encoder().encode
    while not stop.is_set():
        now_ms = int(time.time() * 1000)
        batch = [payment(rng, now_ms) for _ in range(PER_SECOND // BATCHES_PER_SECOND)]
        try:
            client.send(DEMO_SOURCE, b"\n".join(encode(event) for event in batch),
                        key=uuid.uuid4().hex)
        except FeaturePlatformError as error:
            logger.warning("demo payments not taken: %s", error)
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
    thread = threading.Thread(target=send_payments, args=(ingest, stop), daemon=True)
    thread.start()
    say(f"sending demo payments to source {DEMO_SOURCE!r} through the ingest API "
        f"({PER_SECOND}/s, about 1 in 50 breaking its contract)")
    return thread
