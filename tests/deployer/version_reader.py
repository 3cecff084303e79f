"""A separate process reading features during a swap: from Redis through the version map,
as a server would, and through the serving API's batch endpoint.

    python -m tests.deployer.version_reader REDIS_URL SERVING_URL VIEW STOP_FILE OUT_JSON \
        FEATURES_JSON

FEATURES_JSON maps a version number to the feature names its definition has.  A Redis read
resolves the active version and its namespace from ``fp:_versions:{view}`` once, then reads
entities from that namespace; it is *mixed* when it returns a feature the resolved version
does not define.  A batch read asks for the features every version has, for 10 customers;
any non-200 answer or a version outside FEATURES_JSON is an error.  Writes {"reads",
"errors", "mixed", "versions_seen", "batch_reads", "batch_errors", "batch_versions_seen"}.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import httpx
import redis

from core.domain.layout import versions_key


def batch_read(serving: httpx.Client, view: str, features: dict[int, set[str]],
               seen: set[int]) -> bool:
    """One batch request; True when it answered with a known version for every row."""
    common = sorted(set.intersection(*features.values()))
    body = {"entities": [{"customer_id": f"c{n}"} for n in range(10)],
            "features": [f"{view}:{name}" for name in common]}
    response = serving.post("/v1/features/batch", json=body)
    if response.status_code != 200:
        return False
    answer = response.json()
    version = answer["versions"][view]
    seen.add(version)
    return version in features and len(answer["results"]) == 10


def main(redis_url: str, serving_url: str, view: str, stop_file: str, out: str,
         features_json: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    serving = httpx.Client(base_url=serving_url, timeout=5)
    features = {int(v): set(names) for v, names in json.loads(features_json).items()}
    reads = errors = mixed = batch_reads = batch_errors = 0
    seen: set[int] = set()
    batch_seen: set[int] = set()
    while not Path(stop_file).exists():
        try:
            batch_errors += not batch_read(serving, view, features, batch_seen)
        except (httpx.HTTPError, KeyError, ValueError):
            batch_errors += 1
        batch_reads += 1
        try:
            version_map: dict[str, str] = client.hgetall(versions_key(view))  # type: ignore[assignment]
            if not version_map:
                time.sleep(0.01)
                continue
            active = int(version_map["active"])
            namespace = version_map[str(active)]
            keys = list(client.scan_iter(f"fp:{view}:{namespace}:*", count=100))[:20]
            pipeline = client.pipeline(transaction=False)
            for key in keys:
                pipeline.hgetall(key)
            for stored in pipeline.execute():
                names = {k for k in stored if not k.startswith("__")}
                if not names <= features[active]:
                    mixed += 1
            seen.add(active)
            reads += 1
        except (redis.RedisError, KeyError, ValueError):
            errors += 1
        time.sleep(0.005)
    Path(out).write_text(json.dumps({
        "reads": reads, "errors": errors, "mixed": mixed, "versions_seen": sorted(seen),
        "batch_reads": batch_reads, "batch_errors": batch_errors,
        "batch_versions_seen": sorted(batch_seen)}))


if __name__ == "__main__":
    main(*sys.argv[1:7])
