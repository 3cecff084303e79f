"""Definitions the serving tests register: one entity, one source, views named per test."""

from __future__ import annotations

import time
from typing import Any

ENTITY: dict[str, Any] = {"kind": "entity", "name": "user", "join_keys": ["user_id"]}
SOURCE: dict[str, Any] = {
    "kind": "source", "name": "clicks", "topic": "clicks", "timestamp_field": "ts",
    "schema": [
        {"name": "user_id", "type": "string", "required": True},
        {"name": "amount", "type": "double"},
        {"name": "quantity", "type": "long"},
        {"name": "page", "type": "string"},
        {"name": "premium", "type": "boolean"},
        {"name": "ts", "type": "long", "required": True},
    ],
}


def feature_view(name: str, ttl: str | None = "2h", extra: list[dict[str, Any]] | None = None
                 ) -> dict[str, Any]:
    view: dict[str, Any] = {
        "kind": "feature_view", "name": name, "entities": ["user"], "source": "clicks",
        "features": [
            {"name": "clicks_1h", "aggregation": "count", "window": "1h"},
            {"name": "amount_1h", "aggregation": "sum", "column": "amount", "window": "1h"},
            {"name": "quantity_1h", "aggregation": "sum", "column": "quantity", "window": "1h"},
            {"name": "amount_avg_1d", "aggregation": "avg", "column": "amount", "window": "1d"},
            {"name": "last_page", "aggregation": "last", "column": "page"},
            {"name": "premium", "aggregation": "last", "column": "premium"},
            *(extra or []),
        ],
    }
    if ttl:
        view["ttl"] = ttl
    return view


def on_demand_view(name: str, input_view: str) -> dict[str, Any]:
    return {
        "kind": "on_demand_feature_view", "name": name, "inputs": [input_view],
        "request_schema": [{"name": "cart_value", "type": "double", "required": True}],
        "features": [
            {"name": "amount_per_click", "type": "double",
             "expression": "amount_1h / clicks_1h if clicks_1h else 0.0"},
            {"name": "cart_vs_avg", "type": "double",
             "expression": "cart_value / amount_avg_1d if amount_avg_1d else None"},
            {"name": "log_amount", "type": "double", "expression": "log(amount_1h)"},
        ],
    }


def now_millis() -> int:
    return time.time_ns() // 1_000_000
