"""The README's examples run as written (against servers on test ports), so it cannot rot."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from fp.local.base import answers_ok, free_port, wait_until
from sinks.online_store import RedisOnlineStore
from tests.conftest import RunningRegistry
from tests.services import PlatformProcess

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"<!-- readme-test: ([\w-]+) -->\n```bash\n(.*?)```", re.S)


def blocks() -> dict[str, str]:
    return dict(BLOCK.findall((ROOT / "README.md").read_text()))


def run_block(name: str, env: dict[str, str], urls: dict[str, str]) -> str:
    script = blocks()[name].replace("curl -s ", "curl -sf ")
    env = {**env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"}
    for default, actual in urls.items():
        script = script.replace(default, actual)
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"README block {name!r} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture
def serving_url(registry_server: RunningRegistry, stream_redis_url: str, tmp_path: Path,
                ) -> Iterator[str]:
    port = free_port()
    server = PlatformProcess(["serving", "serve", "--port", str(port)], {
        "FP_REGISTRY_URL": registry_server.url, "FP_REDIS_URL": stream_redis_url},
        tmp_path / "serving.log")
    server.start()
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: answers_ok(f"{url}/healthz"), 30, "the serving API")
    yield url
    server.stop()


@pytest.fixture
def ingest_url(registry_server: RunningRegistry, stream_redis_url: str, kafka_bootstrap: str,
               tmp_path: Path) -> Iterator[str]:
    port = free_port()
    server = PlatformProcess(["ingest", "serve", "--port", str(port)], {
        "FP_REGISTRY_URL": registry_server.url, "FP_REDIS_URL": stream_redis_url,
        "FP_KAFKA_BOOTSTRAP": kafka_bootstrap}, tmp_path / "ingest.log")
    server.start()
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: answers_ok(f"{url}/healthz"), 30, "the ingest API")
    yield url
    server.stop()


def test_every_tagged_block_exists() -> None:
    assert set(blocks()) == {"cli", "registry-api", "ingest-api", "serving-api", "ui"}


def test_readme_examples_run(registry_server: RunningRegistry, serving_url: str,
                             ingest_url: str, stream_redis_url: str) -> None:
    env = registry_server.env
    urls = {"http://127.0.0.1:8000": registry_server.url, "http://127.0.0.1:8001": serving_url,
            "http://127.0.0.1:8002": ingest_url}
    status = run_block("cli", env, urls)
    assert "user_transactions" in status

    def ingested() -> dict[str, Any]:
        [answer] = json_values(run_block("ingest-api", env, urls))
        return answer

    # The ingest API reads the registry once a second: the source is there within that.
    wait_until(lambda: _answers(ingested), 30, "the ingest API to know the source")
    first, again = ingested(), ingested()
    assert first == again, "the same Idempotency-Key gives the same answer"
    assert first["accepted"] == 1
    assert first["rejected"] == [{"index": 1, "field": "amount", "reason": "below_min",
                                  "message": "amount: -3 is below the minimum 0"}]

    registry_output = run_block("registry-api", env, urls)
    assert '"latest_version":1' in registry_output.replace(" ", "")
    assert run_block("ui", env, urls).split() == ["/ui/feature-views/merchant_transactions",
                                                  "/ui/feature-views/user_transactions"]

    # What the deployer does once v1 runs: make it the active version.
    client = redis.Redis.from_url(stream_redis_url)
    RedisOnlineStore(stream_redis_url).switch("user_transactions", 1, {1: "v1"})
    client.hset("fp:user_transactions:v1:u1", mapping={
        "amount_1m": "42.5", "txn_count_1m": "3", "amount_avg_5m": "17.0",
        "__ts": "9999999999999"})
    # Serving learns of the switch from Redis a moment later: until then, a 404.
    wait_until(lambda: _answers(lambda: '"found":true' in run_block(
        "serving-api", env, urls).replace(" ", "")), 30, "serving to see the switch")
    single, batch = json_values(run_block("serving-api", env, urls))
    assert single["features"]["amount_1m"] == 42.5
    assert batch["versions"] == {"user_transactions": 1, "user_transactions@1": 1,
                                 "user_ratios": 1}
    assert batch["results"][0]["user_transactions:amount_1m"] == 42.5


def _answers(request: Callable[[], object]) -> bool:
    """Whether ``request`` answered (and what it returned was true)."""
    try:
        return bool(request())
    except AssertionError:  # curl -f: a 404 while the server has not caught up
        return False


def json_values(text: str) -> list[dict[str, Any]]:
    """The JSON documents curl printed one after another."""
    decoder, values, index = json.JSONDecoder(), [], 0
    while index < len(text.rstrip()):
        value, index = decoder.raw_decode(text, index)
        values.append(value)
        while index < len(text) and text[index].isspace():
            index += 1
    return values
