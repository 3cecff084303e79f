"""The test domain the streaming and offline suites share: accounts paying in regions, the
``payments`` source's contract, the ``account_stats`` features, and event generators."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

ACCOUNTS = [("a1", "eu"), ("a1", "us"), ("b|2", "eu"), ("c\\3", "us"), ("d4", "eu")]

SCHEMA: list[dict[str, Any]] = [
    {"name": "account_id", "type": "string", "required": True},
    {"name": "region", "type": "string", "required": True},
    {"name": "amount", "type": "double", "min": 0},
    {"name": "kind", "type": "string", "allowed": ["a", "b", "c"]},
    {"name": "ts", "type": "long", "required": True},
]

FEATURES: list[dict[str, Any]] = [
    {"name": "payments_1m", "aggregation": "count", "window": "1m"},
    {"name": "amount_1m", "aggregation": "sum", "column": "amount", "window": "1m"},
    {"name": "amount_min_1m", "aggregation": "min", "column": "amount", "window": "1m"},
    {"name": "amount_max_1m", "aggregation": "max", "column": "amount", "window": "1m"},
    {"name": "amount_avg_2m", "aggregation": "avg", "column": "amount", "window": "2m",
     "slide": "1m"},
    {"name": "amount_stddev_2m", "aggregation": "stddev", "column": "amount", "window": "2m",
     "slide": "1m"},
    {"name": "last_kind", "aggregation": "last", "column": "kind"},
]


def event(account: tuple[str, str], ts: int, rng: random.Random) -> dict[str, Any]:
    payload: dict[str, Any] = {"account_id": account[0], "region": account[1], "ts": ts}
    if rng.random() < 0.9:
        payload["amount"] = round(rng.uniform(0, 500), 2)
    if rng.random() < 0.8:
        payload["kind"] = rng.choice("abc")
    return payload


INVALID_EVENTS: list[Callable[[int], bytes]] = [
    lambda ts: json.dumps({"region": "eu", "ts": ts}).encode(),
    lambda ts: json.dumps({"account_id": "a1", "region": "eu", "amount": "12", "ts": ts}).encode(),
    lambda ts: json.dumps({"account_id": "a1", "region": "eu", "amount": -5, "ts": ts}).encode(),
    lambda ts: json.dumps({"account_id": "a1", "region": "eu", "kind": "z", "ts": ts}).encode(),
    lambda ts: json.dumps({"account_id": "a1", "region": 5, "ts": ts}).encode(),
    lambda ts: json.dumps({"account_id": "a1", "region": "eu", "ts": str(ts)}).encode(),
    lambda ts: b"{not json",
    lambda ts: b"[1, 2]",
]
