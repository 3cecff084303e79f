"""A separate writer process for the consistency test: flips a view's version map between
versions 1 and 2 as fast as it can, the way the deployer switches (one HSET, then PUBLISH).

Usage: python -m tests.serving.version_flipper REDIS_URL VIEW SECONDS
"""

from __future__ import annotations

import sys
import time

import redis

from core.domain.layout import ACTIVE_FIELD, VERSIONS_CHANNEL, namespace_of, versions_key


def flip(redis_url: str, view: str, seconds: float) -> int:
    client = redis.Redis.from_url(redis_url)
    namespaces = {str(version): namespace_of(version) for version in (1, 2)}
    deadline = time.monotonic() + seconds
    flips = 0
    while time.monotonic() < deadline:
        active = 2 if flips % 2 == 0 else 1
        client.hset(versions_key(view), mapping={ACTIVE_FIELD: active, **namespaces})
        client.publish(VERSIONS_CHANNEL, view)
        flips += 1
        time.sleep(0.002)
    client.close()
    return flips


if __name__ == "__main__":
    print(flip(sys.argv[1], sys.argv[2], float(sys.argv[3])))
