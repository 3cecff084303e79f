"""Offline-store fixtures: the Iceberg catalog in the session's registry database, a fresh
warehouse folder per test, and `fp archiver run` as a real process."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pyiceberg.catalog import Catalog

from offline import iceberg
from tests.services import PlatformProcess

# Tansu assigns partitions to a subscribing consumer after ≈ session.timeout.ms / 2.
FAST_ARCHIVER = ["--batch-seconds", "0.3", "--registry-poll", "0.5", "--maintain-every", "0",
                 "--kafka-property", "session.timeout.ms=6000",
                 "--kafka-property", "heartbeat.interval.ms=500"]


@pytest.fixture
def warehouse(tmp_path: Path) -> Path:
    return tmp_path / "warehouse"


@pytest.fixture
def catalog(database_url: str, warehouse: Path) -> Iterator[Catalog]:
    """The `fp` catalog with no archive table left from an earlier test."""
    opened = iceberg.open_catalog(database_url, str(warehouse))
    for identifier in opened.list_tables(iceberg.RAW_NAMESPACE):
        opened.drop_table(identifier)
    yield opened


ArchiverFactory = Callable[..., PlatformProcess]


@pytest.fixture
def archiver(database_url: str, kafka_bootstrap: str, warehouse: Path, tmp_path: Path,
             catalog: Catalog) -> Iterator[ArchiverFactory]:
    """Makes `fp archiver run` processes (started by the test); stops them afterwards."""
    made: list[PlatformProcess] = []

    def make(*extra: str) -> PlatformProcess:
        process = PlatformProcess(["archiver", "run", *FAST_ARCHIVER, *extra],
                                  {"FP_DATABASE_URL": database_url,
                                   "FP_KAFKA_BOOTSTRAP": kafka_bootstrap,
                                   "FP_WAREHOUSE": str(warehouse)},
                                  tmp_path / "archiver.log")
        made.append(process)
        return process

    yield make
    for process in made:
        process.stop()
