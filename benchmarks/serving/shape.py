"""The data both servers hold: N entities, 5 feature views of 10 double features each."""

from __future__ import annotations

from dataclasses import dataclass

VIEWS = [f"bench_view_{index}" for index in range(5)]
FEATURES_PER_VIEW = 10


@dataclass(frozen=True)
class Shape:
    entities: int
    event_millis: int
    """Event time of every value: recent, so nothing is expired (both servers check TTL)."""

    @staticmethod
    def value(entity: int, view: int, feature: int) -> float:
        return (entity * 10 + feature + view) / 7.0


def feature_references() -> list[str]:
    return [f"{view}:f{j}" for view in VIEWS for j in range(FEATURES_PER_VIEW)]
