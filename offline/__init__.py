"""The offline store: the Iceberg raw-event archive and point-in-time training sets."""
