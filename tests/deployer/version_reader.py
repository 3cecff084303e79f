"""A separate process reading features through the version map, as a server would.

    python -m tests.deployer.version_reader REDIS_URL VIEW STOP_FILE OUT_JSON FEATURES_JSON

FEATURES_JSON maps a version number to the feature names its definition has.  Every read
resolves the active version and its namespace from ``fp:versions:{view}`` once, then reads
entities from that namespace; a read is *mixed* when it returns a feature the resolved
version does not define.  Writes {"reads", "errors", "mixed", "versions_seen"} on exit.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import redis


def main(redis_url: str, view: str, stop_file: str, out: str, features_json: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    features = {int(v): set(names) for v, names in json.loads(features_json).items()}
    reads = errors = mixed = 0
    seen: set[int] = set()
    while not Path(stop_file).exists():
        try:
            version_map: dict[str, str] = client.hgetall(f"fp:versions:{view}")  # type: ignore[assignment]
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
    Path(out).write_text(json.dumps({"reads": reads, "errors": errors, "mixed": mixed,
                                     "versions_seen": sorted(seen)}))


if __name__ == "__main__":
    main(*sys.argv[1:6])
