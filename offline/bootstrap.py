"""The offline store's composition root: the archiver, and the stores that `fp dataset` and
`fp archiver maintain` read — the registry and the Iceberg catalog, both in the registry's
database."""

from __future__ import annotations

from dataclasses import dataclass

from pyiceberg.catalog import Catalog

from core.settings import Settings
from offline.archiver import Archiver, ArchiverOptions
from offline.iceberg import open_catalog
from registry.store.postgres import PostgresRegistryStore, create_registry_engine


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
