"""`fp plan` / `fp apply` / `fp status` as a user runs them, against a real registry server."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import redis

from core.domain.layout import meta_key, versions_key
from tests.conftest import RunningRegistry


def fp(registry: RunningRegistry, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fp.cli", *args], env=registry.env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_plan_apply_and_status_with_exit_codes(registry_server: RunningRegistry,
                                               examples_path: Path, tmp_path: Path) -> None:
    repo = tmp_path / "features"
    shutil.copytree(examples_path, repo)

    planned = fp(registry_server, "plan", str(repo))
    assert planned.returncode == 2, planned.stderr
    assert "+ feature_view user_transactions  new, version 1" in planned.stdout
    assert fp(registry_server, "status").stdout.count("\n") == 1, "plan must write nothing"

    applied = fp(registry_server, "apply", str(repo), "-m", "first")
    assert applied.returncode == 0, applied.stderr
    assert "Applied: 6 registered, 0 unchanged." in applied.stdout

    assert fp(registry_server, "plan", str(repo)).returncode == 0

    views = repo / "views.yaml"
    views.write_text(views.read_text().replace("window: 1m", "window: 2m", 1))
    changed = fp(registry_server, "plan", str(repo))
    assert changed.returncode == 2
    assert "v1 → v2 (breaking)" in changed.stdout
    assert "~ features.txn_count_1m.window: '1m' → '2m'" in changed.stdout

    rows = [line.split() for line in fp(registry_server, "status").stdout.splitlines()]
    assert ["feature_view", "user_transactions", "1", "-", "none", "yet", "-", "-"] in rows
    assert ["entity", "user", "1", "1"] in rows


def test_invalid_repo_and_unreachable_registry_exit_1(registry_server: RunningRegistry,
                                                      tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("kind: entity\nname: User\njoin_keys: [id]\n")
    bad = fp(registry_server, "plan", str(tmp_path))
    assert bad.returncode == 1
    assert "definitions[0].name: 'User' is not a valid name" in bad.stderr

    gone = RunningRegistry("http://127.0.0.1:9", {**registry_server.env,
                                                  "FP_REGISTRY_URL": "http://127.0.0.1:9"})
    unreachable = fp(gone, "plan", str(tmp_path))
    assert unreachable.returncode == 1
    assert "registry not reachable at http://127.0.0.1:9" in unreachable.stderr


def test_db_upgrade_without_database_url_says_what_to_set(registry_server: RunningRegistry,
                                                          ) -> None:
    env = {k: v for k, v in registry_server.env.items() if k != "FP_DATABASE_URL"}
    result = subprocess.run([sys.executable, "-m", "fp.cli", "db", "upgrade"], env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert "FP_DATABASE_URL is not set" in result.stderr
    upgraded = fp(registry_server, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr


def test_client_commands_print_their_answer_and_no_log_lines(registry_server: RunningRegistry,
                                                             examples_path: Path) -> None:
    """httpx logs each request at INFO: libraries' lines appear only with `-v`."""
    for args in (["plan", str(examples_path)], ["apply", str(examples_path)], ["status"]):
        result = fp(registry_server, *args)
        assert result.returncode in (0, 2), result.stderr
        assert result.stderr == "", f"fp {args[0]} logged:\n{result.stderr}"
        assert "HTTP Request" not in result.stdout
    assert fp(registry_server, "status").stdout.startswith("KIND")

    verbose = fp(registry_server, "-v", "status")
    assert "HTTP Request: GET" in verbose.stderr


def test_a_usage_error_exits_1_never_the_plan_exit_for_changes() -> None:
    mistyped = subprocess.run([sys.executable, "-m", "fp.cli", "plan", "--dry"],
                              capture_output=True, text=True, timeout=60, check=False)
    assert mistyped.returncode == 1
    assert "unrecognized arguments: --dry" in mistyped.stderr


def test_online_migrate_moves_the_first_layouts_keys(stream_redis: redis.Redis,
                                                     stream_redis_url: str) -> None:
    stream_redis.hset("fp:versions:clicks", mapping={"active": "1", "1": "v1"})
    stream_redis.hset("fp:meta:clicks:v1", mapping={"watermark": "7000", "rows": "3"})
    env = {**os.environ, "FP_REDIS_URL": stream_redis_url}
    migrate = [sys.executable, "-m", "fp.cli", "online", "migrate"]
    first = subprocess.run(migrate, env=env, capture_output=True, text=True, timeout=60,
                           check=False)
    assert first.returncode == 0, first.stderr
    assert "2 keys moved" in first.stdout
    assert stream_redis.hgetall(versions_key("clicks")) == {"active": "1", "1": "v1"}
    assert stream_redis.hget(meta_key("clicks", "v1"), "rows") == "3"
    again = subprocess.run(migrate, env=env, capture_output=True, text=True, timeout=60,
                           check=False)
    assert "0 keys moved" in again.stdout

