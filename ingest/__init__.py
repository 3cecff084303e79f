"""The ingest API: events checked against their source's contract at the door, then written
to the source's topic, acknowledged only once the broker has them (docs/ingest.md).

Pure logic (reading a body into events, judging them, the answer, the dead letters, the
idempotency records) never does I/O: :mod:`ingest.batches`, :mod:`ingest.contracts`.  The
outside systems each sit behind one interface with one adapter and an in-memory twin: the
broker (:mod:`ingest.event_log`), the idempotency records in Redis
(:mod:`ingest.idempotency`) and the registry's definitions (:mod:`registry.feed`).
:mod:`ingest.service` is the use case, :mod:`ingest.app` the Litestar app,
:mod:`ingest.bootstrap` the composition root of `fp ingest serve`, and :mod:`ingest.push`
the client of `fp ingest push`.
"""
