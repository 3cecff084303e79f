"""Chunked, resumable, idempotent: `fp backfill run` killed with SIGKILL while a chunk's job
runs and again between chunks, then started again, leaves exactly the table an uninterrupted
run makes; a finished range runs nothing again, unless asked to."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog

from core.domain.backfills import Reprocess
from core.domain.events import Provenance
from fp.local.flink import LocalFlink
from offline import iceberg
from offline.training_sets import TrainingSetBuilder
from registry.service import RegistryService
from registry.store.postgres import PostgresRegistryStore
from sinks.flink import FlinkClient
from tests.backfill.support import DAY_MS, fresh_catalog, service
from tests.offline.support import (
    BASE_MS,
    apply,
    archive_directly,
    definitions,
    payloads,
    same,
    source_spec,
    with_offsets,
)
from tests.payments import FEATURES

pytestmark = pytest.mark.flink

FIRST_DAY = BASE_MS - BASE_MS % DAY_MS
RANGE = ("--start", "2026-09-21", "--end", "2026-09-24")
RANGE_MS = (FIRST_DAY, FIRST_DAY + 3 * DAY_MS)


def test_the_range_is_the_one_the_events_fill() -> None:
    assert iso_day(FIRST_DAY) == RANGE[1] and iso_day(RANGE_MS[1]) == RANGE[3]


def iso_day(epoch_ms: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(epoch_ms / 1000))


@pytest.fixture
def archived(store: PostgresRegistryStore, database_url: str, tmp_path: Path) -> Catalog:
    """Three days of payments, and two views computing the same features."""
    specs = definitions("payments_resume", view="stats_reference")
    specs.append({**specs[2], "name": "stats_killed"})
    apply(store, specs)
    catalog = fresh_catalog(database_url, tmp_path / "warehouse")
    events = payloads(random.Random(5), 700, first_ms=FIRST_DAY + 600_000, spacing_ms=360_000)
    archive_directly(catalog, source_spec("payments_resume"), 1, with_offsets(events))
    return catalog


def rows_of(catalog: Catalog, view: str) -> list[dict[str, Any]]:
    table = catalog.load_table(iceberg.feature_table_name(view, 1)).scan().to_arrow()
    return sorted(table.to_pylist(), key=repr)


def run_fp(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "fp.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def kill_when(process: subprocess.Popen[bytes], condition: Callable[[], bool], what: str,
              timeout: float = 400) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the run ended before {what}: " \
            f"{process.stdout.read().decode() if process.stdout else ''}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


def coverage(catalog: Catalog, view: str) -> list[tuple[int, int]]:
    table = iceberg.load_feature_table(catalog, iceberg.feature_table_name(view, 1))
    return iceberg.feature_coverage(table.metadata) if table is not None else []


def test_a_run_killed_during_a_chunk_and_between_chunks_ends_as_an_uninterrupted_one(
        archived: Catalog, store: PostgresRegistryStore, flink: FlinkClient,
        flink_cluster: LocalFlink, database_url: str, tmp_path: Path) -> None:
    reference = service(store, archived, flink, tmp_path / "staging")
    summary = reference.run(reference.plan("stats_reference", None, *RANGE_MS),
                            Provenance(actor="test"))
    assert summary.error is None and len(summary.results) == 3

    env = {**os.environ, "FP_DATABASE_URL": database_url, "FP_FLINK_URL": flink_cluster.url,
           "FP_WAREHOUSE": str(tmp_path / "warehouse"),
           "FP_BACKFILL_STAGING": str(tmp_path / "staging"), "NO_COLOR": "1"}
    # Killed while the first chunk's Flink job runs: nothing of that chunk is committed.
    first = run_fp(env, "backfill", "run", "stats_killed", *RANGE)
    kill_when(first, lambda: any("stats_killed" in job.name and not job.terminal
                                 for job in flink.jobs()),
              "the first chunk's job to be submitted")
    assert coverage(archived, "stats_killed") == []

    # Killed right after a chunk was committed, before or while the next one starts.
    second = run_fp(env, "backfill", "run", "stats_killed", *RANGE)
    kill_when(second, lambda: len(coverage(archived, "stats_killed")) >= 1,
              "a chunk to be committed")
    done_before = coverage(archived, "stats_killed")
    assert done_before and done_before[0][1] - done_before[0][0] < RANGE_MS[1] - RANGE_MS[0]

    third = run_fp(env, "backfill", "run", "stats_killed", *RANGE)
    output, _ = third.communicate(timeout=600)
    assert third.returncode == 0, output.decode()
    assert "already in the table" not in output.decode(), "committed chunks are not run again"

    killed, uninterrupted = rows_of(archived, "stats_killed"), rows_of(archived,
                                                                      "stats_reference")
    assert killed == uninterrupted
    keys = ("account_id", "region", "window_start", "window_end", "event_time")
    assert len({tuple(r[k] for k in keys) for r in killed}) == len(killed), "no duplicates"
    assert coverage(archived, "stats_killed") == [RANGE_MS]
    history = RegistryService(store).backfills("stats_killed")
    assert history["coverage"]["1"]["covered"][0]["start_ms"] == RANGE_MS[0]
    assert history["coverage"]["1"]["covered"][0]["end_ms"] == RANGE_MS[1]
    assert history["backfills"][0]["state"] == "completed"


def test_a_finished_range_runs_nothing_again_unless_reprocessed(
        archived: Catalog, store: PostgresRegistryStore, flink: FlinkClient,
        tmp_path: Path) -> None:
    backfills = service(store, archived, flink, tmp_path / "staging")
    one_day = (RANGE_MS[0] + DAY_MS, RANGE_MS[0] + 2 * DAY_MS)
    first = backfills.run(backfills.plan("stats_killed", None, *one_day),
                          Provenance(actor="test"))
    table = archived.load_table(iceberg.feature_table_name("stats_killed", 1))
    snapshots = len(table.metadata.snapshots)

    again = backfills.plan("stats_killed", None, *one_day)
    assert [c.state.value for c in again.chunks] == ["done"] and not again.to_run
    backfills.run(again, Provenance(actor="test"))
    table.refresh()
    assert len(table.metadata.snapshots) == snapshots, "nothing was committed"

    redone = backfills.run(backfills.plan("stats_killed", None, *one_day,
                                          reprocess=Reprocess.ALL), Provenance(actor="test"))
    table.refresh()
    assert redone.results[0].ran and redone.results[0].rows == first.results[0].rows
    assert table.scan().to_arrow().num_rows == first.results[0].rows, "replaced, not added"


def test_a_training_set_reads_the_feature_table_when_it_covers_the_rows(
        archived: Catalog, store: PostgresRegistryStore, flink: FlinkClient,
        tmp_path: Path) -> None:
    """The same label rows from the feature table and from the archive: the same values;
    the metadata says which was used.  Rows the table does not cover go to the archive."""
    backfills = service(store, archived, flink, tmp_path / "staging")
    assert backfills.run(backfills.plan("stats_reference", None, *RANGE_MS),
                         Provenance(actor="test")).error is None
    rng = random.Random(3)
    accounts = [("a1", "eu"), ("a1", "us"), ("b|2", "eu"), ("c\\3", "us"), ("d4", "eu")]
    picked = [rng.choice(accounts) for _ in range(400)]
    times = sorted(rng.randrange(RANGE_MS[0], RANGE_MS[1]) for _ in picked)
    rows = pa.table({"account_id": [a for a, _ in picked], "region": [r for _, r in picked],
                     "event_timestamp": pa.array(times, pa.timestamp("ms", tz="UTC"))})
    references = [f"stats_reference:{f['name']}" for f in FEATURES]
    builder = TrainingSetBuilder(store, archived)

    from_table = builder.build(rows, references)
    archived.drop_table(iceberg.feature_table_name("stats_reference", 1))
    from_archive = builder.build(rows, references)

    assert from_table.metadata["computed_from"] == {
        "stats_reference@1": "features.stats_reference__v1"}
    assert from_archive.metadata["computed_from"] == {}
    for reference in references:
        expected = from_archive.table[reference].to_pylist()
        actual = from_table.table[reference].to_pylist()
        assert [same(a, b) for a, b in zip(expected, actual, strict=True)] == \
            [True] * len(expected), reference
    assert from_table.table.column("stats_reference:payments_1m").null_count < len(picked)
