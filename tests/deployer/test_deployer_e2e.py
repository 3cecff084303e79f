"""Blue/green rollouts on real Postgres, Kafka (Tansu), Flink and Redis, driven by the
registry, performed by `fp deployer run` as a separate process that the tests kill."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.domain.events import Provenance
from deployer.faults import CRASH_EXIT_CODE
from tests.platform import Platform, definitions
from tests.services import create_topics, wait_for

pytestmark = pytest.mark.flink


def test_versions_roll_out_blue_green_with_metadata_flips_and_rollback(
        platform: Platform, tmp_path: Path) -> None:
    p = platform
    assert p.apply("v1") == 1
    p.wait_active(1)
    assert len(p.running_jobs()) == 1
    v1_job = p.running_jobs()[0]

    stop_file, stats = tmp_path / "stop-reader", tmp_path / "reader.json"
    features = {1: [f["name"] for f in definitions(p.suffix, "v1")[3]["features"]],
                2: [f["name"] for f in definitions(p.suffix, "breaking")[3]["features"]]}
    reader = subprocess.Popen([sys.executable, "-m", "tests.deployer.version_reader",
                               p.redis_url, p.serving_url, p.view, str(stop_file), str(stats),
                               json.dumps(features)])
    assert p.apply("breaking") == 2
    p.wait_active(2)
    time.sleep(2)
    stop_file.touch()
    reader.wait(timeout=30)
    reads = json.loads(stats.read_text())
    assert reads["errors"] == 0 and reads["mixed"] == 0, reads
    assert reads["versions_seen"] == [1, 2] and reads["reads"] > 100, reads
    assert reads["batch_errors"] == 0 and reads["batch_reads"] > 50, reads
    assert reads["batch_versions_seen"] == [1, 2], reads

    jobs = p.running_jobs()
    assert len(jobs) == 1 and v1_job not in jobs, "green runs, blue was stopped"
    history = p.service.deployments(p.view)
    assert history[0]["state"] == "completed" and history[0]["savepoint"], history[0]

    watermark = p.producer.finish()
    p.assert_matches_oracle(2, watermark)

    assert p.apply("metadata") == 3
    p.wait_active(3, timeout=30)
    assert p.version_map()["3"] == p.version_map()["2"] == "v2"
    assert p.running_jobs() == jobs, "a metadata change starts no job"

    p.service.request_rollback(p.view, 1, Provenance("test"))
    p.wait_active(1)
    assert len(p.running_jobs()) == 1
    assert p.active_in_registry() == 1
    p.assert_matches_oracle(1, watermark)


def test_a_deployer_killed_at_any_step_of_a_swap_finishes_the_rollout_after_restart(
        platform: Platform) -> None:
    """After the green job is submitted, after it is ready, after the version map switched
    (before VersionActivated is recorded), and after activation (before blue is stopped)."""
    p = platform
    p.apply("v1")
    p.wait_active(1)
    revisions = ["breaking", "v1", "breaking", "v1"]
    for crash_at, revision in zip(["submitted", "DeploymentReady", "switched",
                                   "VersionActivated"], revisions, strict=True):
        p.deployer.stop()
        p.deployer.start(FP_DEPLOYER_CRASH_AT=crash_at)
        version = p.apply(revision)
        assert p.deployer.wait(timeout=180) == CRASH_EXIT_CODE, f"no crash at {crash_at}"
        p.deployer.start()
        p.wait_active(version)
        assert len(p.running_jobs()) == 1, f"after a crash at {crash_at}: orphaned jobs"
        assert p.version_map()["active"] == str(version)


def test_a_version_whose_source_topic_is_missing_waits_for_it_while_blue_serves(
        platform: Platform, kafka_bootstrap: str) -> None:
    p = platform
    p.apply("v1")
    p.wait_active(1)
    blue = p.running_jobs()
    assert p.apply("other_source") == 2
    wait_for(lambda: p.service.deployments(p.view)[0]["state"] == "waiting",
             "the deployment to wait for its source topic", timeout=60)
    waiting = p.service.deployments(p.view)[0]
    assert waiting["waiting_reason"] == f"source topic 'missing_{p.suffix}' does not exist yet"
    assert p.version_map()["active"] == "1"
    assert p.running_jobs() == blue
    assert p.active_in_registry() == 1

    create_topics(kafka_bootstrap, {f"missing_{p.suffix}": 2})
    p.wait_active(2)
    assert p.active_in_registry() == 2
    assert p.running_jobs() != blue
