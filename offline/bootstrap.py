"""The offline store's composition root: the archiver, the backfills, and the stores that
`fp dataset` and `fp archiver maintain` read — the registry and the Iceberg catalog, both in
the registry's database."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from pyiceberg.catalog import Catalog

from core.settings import Settings
from offline.archiver import Archiver, ArchiverOptions
from offline.backfill import Backfills
from offline.iceberg import open_catalog
from registry.service import RegistryService
from registry.store.postgres import PostgresRegistryStore, create_registry_engine
from sinks.flink import FlinkClient


@dataclass(frozen=True)
class OfflineStores:
    registry: PostgresRegistryStore
    catalog: Catalog


def open_stores(settings: Settings, *, creating_tables: bool = False) -> OfflineStores:
    """The warehouse is required only to create tables: an existing table's location is in
    the catalog."""
    database_url = settings.require_database_url()
    warehouse = settings.require_warehouse() if creating_tables else settings.warehouse
    return OfflineStores(PostgresRegistryStore(create_registry_engine(database_url)),
                         open_catalog(database_url, warehouse))


def build(settings: Settings, options: ArchiverOptions) -> Archiver:
    """The archiver of every registered source's raw events."""
    stores = open_stores(settings, creating_tables=True)
    return Archiver(stores.registry, stores.catalog, settings.require_kafka_bootstrap(), options)


SUBMIT_TIMEOUT_S = 600.0


def staging_folder(settings: Settings) -> Path:
    return settings.backfill.staging or Path(tempfile.gettempdir()) / "fp-backfill"


def backfills(settings: Settings, *, running: bool = True) -> Backfills:
    """Backfills over the registry, the archive and the Flink session cluster (a batch job
    ships no connector jars).  Only running one needs the warehouse (the feature table may
    have to be created) and Flink; a plan reads the registry and the catalog."""
    stores = open_stores(settings, creating_tables=running)
    # A submission starts PyFlink's client JVM and plans the job: minutes on a busy machine,
    # and a backfill has no reader waiting on it, so it waits longer than the deployer does.
    flink = FlinkClient(settings.require_flink_url(), submit_timeout=SUBMIT_TIMEOUT_S) \
        if running else None
    return Backfills(RegistryService(stores.registry), stores.catalog, flink,
                     staging_folder(settings))
