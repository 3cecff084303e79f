"""The feature serving API: reads materialised features from the online store.

The API is described in docs/reference.md, "Serving API".

Pure logic (request parsing, references, catalog, planning, decoding, on-demand evaluation,
assembly) never does I/O; the adapters (the online store's reading side in
:mod:`sinks.online_store`, the registry's feed :mod:`registry.feed`) and the Litestar app in
``app`` wire it together.
"""
