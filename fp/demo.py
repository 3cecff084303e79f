"""`fp up --demo`: register the example features and stream realistic payments, live."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Producer

from core.settings import Settings
from registry.client import RegistryClient
from registry.repo_loader import load_repository
from sinks.kafka_admin import KafkaAdmin

DEMO_TOPIC = "transactions"
USERS = [f"u{n}" for n in range(1, 51)]
MERCHANTS = [f"m{n}" for n in range(1, 11)]


def payment(rng: random.Random, now_ms: int) -> dict[str, object]:
    """A plausible payment; about 1 in 50 breaks the contract, to show the dead letters."""
    event: dict[str, object] = {
        "user_id": rng.choice(USERS), "merchant_id": rng.choice(MERCHANTS),
        "amount": round(rng.lognormvariate(3, 1), 2), "currency": rng.choice(["EUR", "USD", "GBP"]),
        "channel": rng.choice(["web", "app", "pos"]), "ts": now_ms,
    }
    if rng.random() < 0.02:
        event["amount"] = -1
    return event


def stream_payments(bootstrap: str, stop: threading.Event, per_second: float = 20) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    rng = random.Random()
    while not stop.is_set():
        producer.produce(DEMO_TOPIC, json.dumps(payment(rng, int(time.time() * 1000))).encode())
        producer.poll(0)
        stop.wait(1 / per_second)
    producer.flush(5)


def start_demo(settings: Settings, examples: Path, stop: threading.Event,
               say: Callable[[str], None]) -> threading.Thread:
    """Create the topic, apply the example repo, and stream payments in the background."""
    bootstrap = settings.require_kafka_bootstrap()
    KafkaAdmin(bootstrap).ensure_topics([DEMO_TOPIC])
    client = RegistryClient(settings.registry.url, token=settings.registry.client_token)
    result = client.apply(
        load_repository(examples), message="demo")
    changed = [c for c in result["changes"] if c["action"] != "unchanged"]
    say(f"applied {len(changed)} example definitions from {examples}")
    thread = threading.Thread(target=stream_payments, args=(bootstrap, stop), daemon=True)
    thread.start()
    say(f"streaming demo payments to topic {DEMO_TOPIC!r} (20/s)")
    return thread
