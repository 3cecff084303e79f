"""A feature view's streaming job, turned into a bounded batch job over files (pure; no I/O).

A backfill runs **the statements :func:`sinks.compiler.compile_view` generates** — the same
parse, typing, contract checks, windows, aggregations and ``last`` projection — with two
things swapped:

- the source: instead of the Kafka topic, a folder of newline-delimited raw messages
  (filesystem connector, format ``raw``, exactly the bytes the Kafka source would hand the
  job), with the same event-time column;
- the sinks: each INSERT of a result row writes its own folder of JSON lines (one per window
  group, one for ``last``), so the reader knows which window every row belongs to; dead
  letters go nowhere (the archive already flags invalid events).

The job runs with ``execution.runtime-mode = batch``.  A bounded input has no watermark, so
no event is late: the statements are compiled with ``bounded=True``, which leaves out the
stream's lateness checks, and the drift statistics (history is not live traffic), and nothing
else.  The Kafka connector jars are not needed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from core.domain.definitions import Definition, FeatureView, Kind, Source
from sinks.compiler import (
    JobSpec,
    KafkaOptions,
    compile_view,
    event_time_columns,
    ident,
    sql_string,
    window_groups,
)

BACKFILL_NAMESPACE = "backfill"
RUNTIME_MODE = "execution.runtime-mode"
BATCH_CONFIGURATION = (
    (RUNTIME_MODE, "batch"),
    # As in the stream: the contract checks are planned once and shared by every branch.
    ("table.optimizer.reuse-optimize-block-with-digest-enabled", "true"),
    # A failing chunk fails its run after a retry, instead of restarting without end.
    ("restart-strategy.type", "fixed-delay"),
    ("restart-strategy.fixed-delay.attempts", "1"),
)
_SOURCE = "CREATE TEMPORARY TABLE `source_events`"
_RESULTS = "CREATE TEMPORARY TABLE `feature_rows`"
_DEAD_LETTERS = "CREATE TEMPORARY TABLE `dead_letters`"
_RESULT_INSERT = "INSERT INTO `feature_rows` "
_UNUSED_KAFKA = KafkaOptions("unused:9092")
"""compile_view's Kafka tables are replaced before anything runs: no broker is contacted."""


@dataclass(frozen=True)
class ResultSink:
    """One folder of result rows, written by one INSERT of the compiled job."""

    table: str
    uri: str
    window: tuple[int, int] | None
    """(size, slide) in ms of the window group whose rows these are; None: ``last`` rows."""


@dataclass(frozen=True)
class BackfillJob:
    spec: JobSpec
    sinks: tuple[ResultSink, ...]


def is_batch(spec: JobSpec) -> bool:
    return dict(spec.configuration).get(RUNTIME_MODE) == "batch"


def _files(uri: str, format_options: Mapping[str, str]) -> str:
    options = {"connector": "filesystem", "path": uri, **format_options}
    return "WITH (" + ", ".join(f"{sql_string(k)} = {sql_string(v)}"
                                for k, v in options.items()) + ")"


def compile_backfill(view: FeatureView, catalog: Mapping[str, Definition], version: int, *,
                     job_id: str, job_name: str, events_uri: str, results_uri: str,
                     parallelism: int = 1) -> BackfillJob:
    """The batch job computing ``view`` from the raw messages under ``events_uri``, writing
    each result folder under ``results_uri``; InvalidDefinitionError as compile_view.

    With ``parallelism`` n, each of the input's files is read whole by one of n subtasks, in
    order, and the ``last`` rows go straight on to that subtask's result file: so an entity's
    ``last`` rows keep their events' order when all its events are in one file."""
    streaming = compile_view(view, catalog, BACKFILL_NAMESPACE, version, kafka=_UNUSED_KAFKA,
                             bounded=True)
    source = catalog[f"{Kind.SOURCE}:{view.source}"]
    assert isinstance(source, Source), "compile_view checked the source"
    groups: list[tuple[int, int] | None] = [*window_groups(view)]
    inserts = [s for s in streaming.statements if s.startswith(_RESULT_INSERT)]
    if len(inserts) > len(groups):
        groups.append(None)  # the last insert follows the window groups' (compile_view)
    assert len(inserts) == len(groups), "one result insert per window group, then last"
    sinks = tuple(ResultSink(f"feature_rows_{index}", f"{results_uri.rstrip('/')}/{index}",
                             window) for index, window in enumerate(groups))
    statements: list[str] = []
    for statement in streaming.statements:
        if statement.startswith(_SOURCE):
            statements.append(
                f"{_SOURCE} (\n  `message` STRING,\n"
                # The Kafka position columns of the stream's source; only dead letters,
                # which a backfill does not write, carry them.
                "  `kafka_partition` AS CAST(NULL AS INT),\n"
                "  `kafka_offset` AS CAST(NULL AS BIGINT),\n"
                + event_time_columns(source)
                + ") " + _files(events_uri, {"format": "raw", "raw.charset": "UTF-8"}))
        elif statement.startswith(_RESULTS):
            statements += [f"CREATE TEMPORARY TABLE {ident(sink.table)} (`k` STRING, `v` STRING) "
                           + _files(sink.uri, {"format": "json"}) for sink in sinks]
        elif statement.startswith(_DEAD_LETTERS):
            statements.append(f"{_DEAD_LETTERS} (`v` STRING) WITH ('connector' = 'blackhole')")
        elif statement.startswith(_RESULT_INSERT):
            sink = sinks[inserts.index(statement)]
            statements.append(f"INSERT INTO {ident(sink.table)} "
                              + statement.removeprefix(_RESULT_INSERT))
        else:
            statements.append(statement)
    spec = replace(streaming, job_id=job_id, job_name=job_name, result_topic=results_uri,
                   dlq_topic="", statements=tuple(statements),
                   configuration=(*BATCH_CONFIGURATION,
                                  ("parallelism.default", str(parallelism))))
    return BackfillJob(spec, sinks)
