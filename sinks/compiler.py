"""Feature view → Flink SQL (pure; no I/O).

One job per (view, version, namespace), all plain Flink SQL:

1. ``source_events``: the source topic read as raw UTF-8 text, with Kafka partition/offset
   and an event time parsed from ``timestamp_field`` (watermark = ``watermark_delay``).
2. ``parsed_events`` → ``typed_events`` → ``checked_events``: each schema field's JSON text
   taken out of the message once (the only per-field parse of it), converted to its SQL type
   with ``TRY_CAST`` (NULL when it does not convert), then every event checked against the
   source's data contract — the rules of :func:`core.domain.contracts.contract_rules`, each
   rendered to a SQL condition — and against lateness: an event whose window slice has
   already fired would be dropped silently by the window operator, so it is flagged
   instead.  The index of the first broken rule is the event's ``broken_rule``.
3. Violations go to ``{topic}.dlq`` with the rule's message, reason code and field, the
   payload and where it came from.
4. Clean events are aggregated, one window-TVF query per distinct (window, slide) — a view
   ``window_rows_{n}`` —, plus one per-event projection for ``last`` features; every result
   row goes to the view's result topic as ``{"e": entity key, "t": event time ms, "f":
   {feature: value}, "p": per-feature times?, "l": last-values row?}``, which
   :mod:`sinks.redis_writer` applies to Redis.
5. Drift statistics: the same feature values, one per feature per row (``feature_values``),
   are counted per monitoring window (a TUMBLE over the rows' time), feature and fixed bucket
   of :func:`core.domain.drift.bucket_index` (or string category), with the bucket's sum,
   sum of squares, minimum and maximum; each count is one row of the statistics topic, which
   the drift monitor merges into a window's statistics
   (:func:`core.domain.drift.statistics_of_parts`).

Every identifier is a validated name and is still backquoted; every literal goes through
:func:`sql_string` — nothing from a definition reaches the SQL unquoted.

:func:`compile_view` checks the view and its source against every rule of
:mod:`core.domain.definitions` and :mod:`core.domain.validation` first, and raises
InvalidDefinitionError when one fails: those rules are what the SQL below relies on (values
of the field's type, intervals under 100 days, no clash with the job's own columns), so a
definition the registry refused — or one registered before a rule existed — never reaches
Flink and never fails here with anything but a platform error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core.domain import limits
from core.domain.contracts import (
    EPOCH_SECONDS_LIMIT_MS,
    Reason,
    Rule,
    contract_rules,
    number_text,
)
from core.domain.definitions import (
    Aggregation,
    Definition,
    Feature,
    FeatureView,
    Field,
    Kind,
    Scalar,
    Source,
    TimestampFormat,
    ValueType,
    definition_key,
    local_problems,
)
from core.domain.drift import Kind as DriftKind
from core.domain.drift import monitored_kind
from core.domain.layout import (
    ENTITY_KEY_SEPARATOR,
    FETCH_WAIT_MS,
    job_id,
    job_name,
    output_type,
    result_topic,
    source_group,
    statistics_topic,
    view_join_keys,
)
from core.domain.validation import definition_problems
from core.errors import InvalidDefinitionError, Problem


def sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def sql_interval(millis: int) -> str:
    days, rest = divmod(millis, 86_400_000)
    hours, rest = divmod(rest, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, ms = divmod(rest, 1000)
    return f"INTERVAL '{days} {hours:02}:{minutes:02}:{seconds:02}.{ms:03}' DAY TO SECOND(3)"


def dlq_topic(source: Source) -> str:
    return f"{source.topic}.dlq"


@dataclass(frozen=True)
class StartPosition:
    """Where the job starts reading the source topic: ``earliest`` or an epoch-ms timestamp."""

    timestamp_ms: int | None = None

    def connector_options(self) -> dict[str, str]:
        if self.timestamp_ms is None:
            return {"scan.startup.mode": "earliest-offset"}
        return {"scan.startup.mode": "timestamp",
                "scan.startup.timestamp-millis": str(self.timestamp_ms)}


JOB_CONFIGURATION = (
    # Plan each view read by several statements (``checked_events`` by the dead-letter insert
    # and ``clean_events``, ``clean_events`` by every window query) once and share its output,
    # instead of repeating its projection — the contract checks — in every branch.
    ("table.optimizer.reuse-optimize-block-with-digest-enabled", "true"),
    # Freshness: a window fires when the watermark passes its end, and its rows then cross
    # one exchange.  Defaults: a watermark every 200 ms, buffers flushed every 100 ms.
    ("pipeline.auto-watermark-interval", "50 ms"),
    ("execution.buffer-timeout.interval", "10 ms"),
)


DEFAULT_MONITORING_WINDOW_MS = 300_000
"""The drift statistics' window: five minutes of the feature values a job emits."""


@dataclass(frozen=True)
class JobSpec:
    """Everything needed to run one materialisation job."""

    view: str
    version: int
    namespace: str
    job_name: str
    job_id: str
    source_topic: str
    result_topic: str
    dlq_topic: str
    statistics_topic: str
    statements: tuple[str, ...]
    """DDL, then the INSERT statements that run together as one statement set."""
    configuration: tuple[tuple[str, str], ...] = JOB_CONFIGURATION
    """Flink options the job is written for."""

    @property
    def topics(self) -> tuple[str, ...]:
        """The topics the job writes: they must exist before it runs."""
        return (self.result_topic, self.dlq_topic, self.statistics_topic)

    @property
    def inserts(self) -> tuple[str, ...]:
        return tuple(s for s in self.statements if s.startswith("INSERT"))

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in vars(self).items()}


# --------------------------------------------------------------------------- JSON extraction

def _raw_query(column: str) -> str:
    """The field's JSON text wrapped in an array (``["x"]``, ``[1.5]``); NULL when the field
    is absent or JSON null.  The wrapper makes the JSON type visible without failing.  It is
    the only per-field parse of the whole message: everything else reads this small text."""
    return f"JSON_QUERY(`message`, {sql_string('$.' + column)} WITH ARRAY WRAPPER)"


def _evaluated_once(expression: str) -> str:
    """``expression``, kept in its own projection.  Flink 2.0 neither reuses a repeated call
    in generated code nor keeps a projection apart when merging it into the next one would
    repeat it — unless the expression is non-deterministic.  ``RAND()`` makes it so, for the
    cost of one random draw instead of one more parse of the message per use."""
    return f"CASE WHEN RAND() >= 0 THEN {expression} END"


def _text(column: str) -> str:
    return f"JSON_VALUE(`message`, {sql_string('$.' + column)})"


def _raw(field: Field) -> str:
    return ident(f"raw:{field.name}")


def _typed(field: Field) -> str:
    return ident(f"typed:{field.name}")


_TYPE_PATTERN = {
    ValueType.STRING: r'^\["',
    ValueType.LONG: r"^\[-?[0-9]+\]$",
    ValueType.INT: r"^\[-?[0-9]+\]$",
    ValueType.DOUBLE: r"^\[-?[0-9]",
    ValueType.FLOAT: r"^\[-?[0-9]",
    ValueType.BOOLEAN: r"^\[(true|false)\]$",
    ValueType.TIMESTAMP: r'^\["',
}

_SQL_TYPE = {
    ValueType.STRING: "STRING", ValueType.LONG: "BIGINT", ValueType.INT: "INT",
    ValueType.DOUBLE: "DOUBLE", ValueType.FLOAT: "DOUBLE", ValueType.BOOLEAN: "BOOLEAN",
    ValueType.TIMESTAMP: "TIMESTAMP(3)",
}

_QUOTED_TYPES = (ValueType.STRING, ValueType.TIMESTAMP)


def _raw_text(field: Field) -> str:
    """The value as text, read from the wrapped raw value: a JSON string unescaped, any other
    value as the message spelled it (``[1.5]`` → ``1.5``)."""
    raw = _raw(field)
    if field.type in _QUOTED_TYPES:
        return f"JSON_VALUE({raw}, '$[0]')"
    return f"SUBSTR({raw}, 2, CHAR_LENGTH({raw}) - 2)"


def _typed_value(field: Field) -> str:
    """The field's value in its SQL type, NULL when it does not convert."""
    text = _raw_text(field)
    if field.type is ValueType.STRING:
        return text
    if field.type is ValueType.TIMESTAMP:
        return f"TRY_CAST(REPLACE(REPLACE({text}, 'T', ' '), 'Z', '') AS TIMESTAMP(3))"
    return f"TRY_CAST({text} AS {_SQL_TYPE[field.type]})"


def _broken(rule: Rule) -> str:
    """The SQL condition of an event breaking ``rule``, over ``typed_events`` (NULL counts as
    not broken, as a missing value breaks no bound)."""
    field = rule.field
    if field is None:
        return ("NOT `is_object`" if rule.reason is Reason.NOT_AN_OBJECT
                else "`event_ms` IS NULL")
    raw, value = _raw(field), _typed(field)
    if rule.reason is Reason.MISSING_REQUIRED:
        return f"{raw} IS NULL"
    if rule.reason is Reason.WRONG_TYPE:
        type_ok = f"REGEXP({raw}, {sql_string(_TYPE_PATTERN[field.type])})"
        return f"{raw} IS NOT NULL AND (NOT {type_ok} OR {value} IS NULL)"
    if rule.reason in (Reason.BELOW_MIN, Reason.ABOVE_MAX):
        assert rule.limit is not None, "a bound rule has its limit"
        operator = "<" if rule.reason is Reason.BELOW_MIN else ">"
        return f"{value} {operator} {number_text(rule.limit)}"
    allowed = ", ".join(_allowed_literal(field, v) for v in rule.allowed)
    return f"{value} NOT IN ({allowed})"


def _message(rule: Rule) -> str:
    """The rule's message as SQL, quoting the offending value as the message spelled it."""
    before, after = rule.message_around_value()
    if not rule.quotes_value or rule.field is None:
        return sql_string(before)
    return f"CONCAT({sql_string(before)}, {_raw_text(rule.field)}, {sql_string(after)})"


def _allowed_literal(field: Field, value: Scalar) -> str:
    """The literal of an allowed value, which validation made a value of the field's type."""
    if isinstance(value, str):
        return sql_string(value)
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    return f"CAST({number_text(value)} AS {_SQL_TYPE[field.type]})"


def _event_millis(source: Source, text: str) -> str:
    """Epoch ms of the event, from ``text``: the timestamp field's value as text."""
    if source.timestamp_format is TimestampFormat.EPOCH_MILLIS:
        return f"TRY_CAST({text} AS BIGINT)"
    if source.timestamp_format is TimestampFormat.EPOCH_SECONDS:
        millis = f"TRY_CAST({text} AS DOUBLE) * 1000"
        return (f"CASE WHEN ABS({millis}) < {EPOCH_SECONDS_LIMIT_MS!r} "
                f"THEN CAST({millis} AS BIGINT) END")
    parsed = f"TRY_CAST(REPLACE(REPLACE({text}, 'T', ' '), 'Z', '') AS TIMESTAMP(3))"
    return _timestamp_millis(parsed)


def _timestamp_millis(timestamp: str) -> str:
    """Epoch ms of a TIMESTAMP(3) read in UTC (the job's session time zone)."""
    return (f"(UNIX_TIMESTAMP(CAST({timestamp} AS STRING)) * 1000 "
            f"+ EXTRACT(MILLISECOND FROM {timestamp}))")


# --------------------------------------------------------------------------- the job

@dataclass(frozen=True)
class KafkaOptions:
    bootstrap_servers: str
    start: StartPosition = StartPosition()
    extra_properties: Mapping[str, str] | None = None


def _with(options: Mapping[str, str]) -> str:
    return "WITH (\n  " + ",\n  ".join(f"{sql_string(k)} = {sql_string(v)}"
                                         for k, v in options.items()) + "\n)"


def _kafka_options(topic: str, kafka: KafkaOptions) -> dict[str, str]:
    options = {"connector": "kafka", "topic": topic,
               "properties.bootstrap.servers": kafka.bootstrap_servers}
    for key, value in (kafka.extra_properties or {}).items():
        options[f"properties.{key}"] = value
    return options


_BATCHED_PRODUCER = {
    # A window's rows leave in one burst: sent in few large requests rather than many small
    # ones, they cost the broker and the job a fraction of the CPU, for at most 10 ms more.
    "properties.linger.ms": "10",
    "properties.batch.size": str(1024 * 1024),
}


def _compilable_source(view: FeatureView, catalog: Mapping[str, Definition]) -> Source:
    """The view's source, once the view and the source pass every rule the SQL relies on;
    else InvalidDefinitionError with every problem (the unknown source among them)."""
    source = catalog.get(f"{Kind.SOURCE}:{view.source}")
    checked: list[Definition] = [view, source] if isinstance(source, Source) else [view]
    problems = [Problem(p.path, p.message, definition_key(definition))
                for definition in checked for p in local_problems(definition)]
    problems += [p for definition in checked for p in definition_problems(definition, catalog)]
    if problems or not isinstance(source, Source):
        raise InvalidDefinitionError(problems)
    return source


def event_time_columns(source: Source) -> str:
    """The source table's event time, read from the message's ``timestamp_field`` (0 when
    unreadable: such an event breaks a contract rule anyway), and its watermark."""
    event_ms = _event_millis(source, _text(source.timestamp_field))
    return (f"  `event_time` AS TO_TIMESTAMP_LTZ(COALESCE({event_ms}, 0), 3),\n"
            "  WATERMARK FOR `event_time` AS `event_time` - "
            f"{sql_interval(source.watermark_delay_ms)}\n")


def compile_view(view: FeatureView, catalog: Mapping[str, Definition], namespace: str,
                 version: int, *, kafka: KafkaOptions, deployment: int = 0,
                 monitoring_window_ms: int = DEFAULT_MONITORING_WINDOW_MS,
                 bounded: bool = False) -> JobSpec:
    """The Flink SQL job that materialises ``view`` into ``namespace``; InvalidDefinitionError
    when the view or its source breaks a rule of the definitions (see the module).

    ``bounded``: the statements will read a bounded input in batch mode (a backfill,
    :mod:`sinks.backfill_job`), where no watermark exists and so no event is late: the
    lateness checks are left out, and so are the drift statistics (history is not live
    traffic); everything else is the same."""
    if not 0 < monitoring_window_ms < limits.STREAMED_DURATION_BOUND_MS:
        raise InvalidDefinitionError([Problem(
            "monitoring_window", f"{monitoring_window_ms} ms: the monitoring window must be "
            "positive and shorter than 100 days")])
    source = _compilable_source(view, catalog)
    keys = view_join_keys(view, catalog)
    results, dlq = result_topic(view.name, namespace), dlq_topic(source)
    group_id = source_group(view.name, namespace)
    timestamp_field = source.field_named(source.timestamp_field)
    assert timestamp_field is not None, "a validated source has its timestamp field"

    source_ddl = (
        "CREATE TEMPORARY TABLE `source_events` (\n"
        "  `message` STRING,\n"
        "  `kafka_partition` INT METADATA FROM 'partition' VIRTUAL,\n"
        "  `kafka_offset` BIGINT METADATA FROM 'offset' VIRTUAL,\n"
        + event_time_columns(source)
        + ") " + _with({**_kafka_options(source.topic, kafka), "properties.group.id": group_id,
                      "properties.fetch.max.wait.ms": str(FETCH_WAIT_MS),
                      **kafka.start.connector_options(), "format": "raw",
                      "raw.charset": "UTF-8"})
    )
    results_ddl = (
        "CREATE TEMPORARY TABLE `feature_rows` (`k` STRING, `v` STRING) "
        + _with({**_kafka_options(results, kafka), "key.format": "raw", "key.fields": "k",
                 "value.format": "raw", "value.fields-include": "EXCEPT_KEY",
                 "sink.delivery-guarantee": "at-least-once", **_BATCHED_PRODUCER})
    )
    dlq_ddl = (
        "CREATE TEMPORARY TABLE `dead_letters` (`v` STRING) "
        + _with({**_kafka_options(dlq, kafka), "format": "raw",
                 "sink.delivery-guarantee": "at-least-once"})
    )

    used = _used_fields(view, source, keys)
    rules = contract_rules(source)
    late = [] if bounded else _lateness_checks(view)
    broken_rule = "COALESCE(\n    " + ",\n    ".join(
        [*(f"CASE WHEN {_broken(rule)} THEN {index} END" for index, rule in enumerate(rules)),
         *(f"CASE WHEN {check} THEN {len(rules)} END" for check in late)]) + ")"
    quoted = [f for f in source.schema
              if any(r.field == f and r.quotes_value for r in rules)]
    passed = "`message`, `kafka_partition`, `kafka_offset`, `event_time`"
    parsed_view = (
        f"CREATE TEMPORARY VIEW `parsed_events` AS SELECT {passed},\n  "
        "`message` IS NOT NULL AND `message` IS JSON OBJECT AS `is_object`,\n  "
        + ",\n  ".join(f"{_evaluated_once(_raw_query(f.name))} AS {_raw(f)}"
                       for f in source.schema)
        + "\nFROM `source_events`"
    )
    typed_view = (
        f"CREATE TEMPORARY VIEW `typed_events` AS SELECT {passed}, `is_object`,\n  "
        f"{_event_millis(source, _raw_text(timestamp_field))} AS `event_ms`,\n  "
        + ",\n  ".join(f"{_raw(f)}, {_evaluated_once(_typed_value(f))} AS {_typed(f)}"
                       for f in source.schema)
        + "\nFROM `parsed_events`"
    )
    checked_view = (
        f"CREATE TEMPORARY VIEW `checked_events` AS SELECT {passed}, `event_ms`,\n  "
        + "".join(f"{_typed(f)}, " for f in used)
        + "".join(f"{_raw(f)}, " for f in quoted)
        + f"\n  {broken_rule} AS `broken_rule`\nFROM `typed_events`"
    )
    clean_view = (
        "CREATE TEMPORARY VIEW `clean_events` AS SELECT `event_ms`, `event_time`,\n  "
        + ",\n  ".join(f"{_typed(f)} AS {ident(f.name)}" for f in used)
        + "\nFROM `checked_events` WHERE `broken_rule` IS NULL"
    )
    dead_letters = (
        "INSERT INTO `dead_letters` SELECT JSON_OBJECT("
        f"KEY 'reason' VALUE {_by_rule([_message(r) for r in rules], LATE_MESSAGE)},\n  "
        "KEY 'reason_code' VALUE "
        f"{_by_rule([sql_string(r.reason) for r in rules], LATE_REASON)},\n  "
        "KEY 'field' VALUE "
        f"{_by_rule([_field_literal(r) for r in rules], 'CAST(NULL AS STRING)')},\n  "
        f"KEY 'origin' VALUE 'stream', KEY 'view' VALUE {sql_string(view.name)}, "
        f"KEY 'namespace' VALUE {sql_string(namespace)}, KEY 'topic' VALUE "
        f"{sql_string(source.topic)}, KEY 'partition' VALUE `kafka_partition`, "
        "KEY 'offset' VALUE `kafka_offset`, KEY 'payload' VALUE `message`) "
        "FROM `checked_events` WHERE `broken_rule` IS NOT NULL"
    )
    statistics = statistics_topic(view.name, namespace)
    statistics_ddl = (
        "CREATE TEMPORARY TABLE `drift_statistics` (`k` STRING, `v` STRING) "
        + _with({**_kafka_options(statistics, kafka), "key.format": "raw", "key.fields": "k",
                 "value.format": "raw", "value.fields-include": "EXCEPT_KEY",
                 "sink.delivery-guarantee": "at-least-once", **_BATCHED_PRODUCER})
    )
    per_feature_times = len(window_groups(view)) + any(
        f.aggregation is Aggregation.LAST for f in view.features) > 1
    window_views = [_window_view(index, view, keys, group)
                    for index, group in enumerate(window_groups(view), start=1)]
    inserts = [_window_insert(index, view, keys, group, per_feature_times)
               for index, group in enumerate(window_groups(view), start=1)]
    last = [f for f in view.features if f.aggregation is Aggregation.LAST]
    if last:
        inserts.append(_last_insert(keys, last, only_last=not window_groups(view)))
    monitoring = () if bounded else _statistics_statements(view, source, monitoring_window_ms)
    return JobSpec(
        view=view.name, version=version, namespace=namespace,
        job_name=job_name(view.name, namespace),
        job_id=job_id(view.name, namespace, deployment),
        source_topic=source.topic, result_topic=results, dlq_topic=dlq,
        statistics_topic=statistics,
        statements=(source_ddl, results_ddl, dlq_ddl, *(() if bounded else (statistics_ddl,)),
                    parsed_view, typed_view,
                    checked_view, clean_view, *window_views,
                    dead_letters, *inserts, *monitoring),
    )


def _used_fields(view: FeatureView, source: Source, keys: tuple[str, ...]) -> list[Field]:
    names = set(keys) | {f.column for f in view.features if f.column}
    return [f for f in source.schema if f.name in names]


def window_groups(view: FeatureView) -> list[tuple[int, int]]:
    return sorted({g for f in view.features if (g := f.window_group) is not None})


LATE_REASON = sql_string("late")
"""The dead-letter reason code of a late event, next to the contract's (a stream-only rule)."""
LATE_MESSAGE = sql_string("late: its window has already closed")


def _by_rule(per_rule: list[str], late: str) -> str:
    """One SQL value per contract rule, then ``late`` for the lateness checks (which follow
    the contract's rules), picked by ``broken_rule``."""
    cases = " ".join(f"WHEN {index} THEN {value}" for index, value in enumerate(per_rule))
    return f"CASE `broken_rule` {cases} ELSE {late} END"


def _field_literal(rule: Rule) -> str:
    return "CAST(NULL AS STRING)" if rule.field is None else sql_string(rule.field.name)


def _lateness_checks(view: FeatureView) -> list[str]:
    """The conditions of an event being late: the slice it falls in has fired for some window
    group.  The window operator would drop it (or use it for later windows only), so it goes
    to the DLQ.
    A slice (gcd of size and slide — the slide, which divides the window) fires once the
    watermark reaches its end - 1 ms."""
    slices = sorted({slide for _, slide in window_groups(view)})
    return [
        f"TO_TIMESTAMP_LTZ(`event_ms` - MOD(`event_ms`, {s}) + {s - 1}, 3) <= "
        "CURRENT_WATERMARK(`event_time`)"
        for s in slices
    ]


def _entity_key(keys: tuple[str, ...]) -> str:
    """layout.encode_entity_key in SQL: escape \\ and |, then join with |."""
    parts = [f"REPLACE(REPLACE(CAST({ident(k)} AS STRING), '\\', '\\\\'), "
             f"{sql_string(ENTITY_KEY_SEPARATOR)}, {sql_string(chr(92) + ENTITY_KEY_SEPARATOR)})"
             for k in keys]
    return parts[0] if len(parts) == 1 else f"CONCAT_WS({sql_string(ENTITY_KEY_SEPARATOR)}, " \
        + ", ".join(parts) + ")"


_AGGREGATE = {
    Aggregation.SUM: "SUM({})", Aggregation.MIN: "MIN({})", Aggregation.MAX: "MAX({})",
    Aggregation.AVG: "AVG(CAST({} AS DOUBLE))",
    Aggregation.STDDEV: "STDDEV_POP(CAST({} AS DOUBLE))",
}


def _aggregate(feature: Feature) -> str:
    if feature.aggregation is Aggregation.COUNT:
        return f"COUNT({ident(feature.column)})" if feature.column else "COUNT(*)"
    return _AGGREGATE[feature.aggregation].format(ident(feature.column or ""))


def _result_row(key: str, time_ms: str, features: str, *, per_feature_times: bool,
                last: bool, advances_watermark: bool) -> str:
    """Key and value of a result row; ``w`` marks rows whose time proves completeness."""
    flags = {"p": per_feature_times, "l": last, "w": advances_watermark}
    return (f"{key}, JSON_OBJECT(KEY 'e' VALUE {key}, KEY 't' VALUE {time_ms}, "
            f"KEY 'f' VALUE JSON_OBJECT({features}), "
            + ", ".join(f"KEY '{k}' VALUE {'TRUE' if v else 'FALSE'}" for k, v in flags.items())
            + ")")


def _window_view(index: int, view: FeatureView, keys: tuple[str, ...],
                 group: tuple[int, int]) -> str:
    """The window group's aggregates, one row per entity and window: what its result rows
    carry and its features' drift statistics count (the planner computes it once for both)."""
    size, slide = group
    if size == slide:
        window = f"TUMBLE(TABLE `clean_events`, DESCRIPTOR(`event_time`), {sql_interval(size)})"
    else:
        window = (f"HOP(TABLE `clean_events`, DESCRIPTOR(`event_time`), {sql_interval(slide)}, "
                  f"{sql_interval(size)})")
    key_columns = ", ".join(ident(k) for k in keys)
    aggregates = ",\n  ".join(f"{_aggregate(f)} AS {ident(f.name)}"
                              for f in view.features if f.window_group == group)
    return (f"CREATE TEMPORARY VIEW {_window_rows(index)} AS SELECT {key_columns}, "
            f"`window_start`, `window_end`, `window_time`,\n  {aggregates}\n"
            f"FROM TABLE({window})\n"
            f"GROUP BY {key_columns}, `window_start`, `window_end`, `window_time`")


def _window_rows(index: int) -> str:
    return ident(f"window_rows_{index}")


def _window_insert(index: int, view: FeatureView, keys: tuple[str, ...],
                   group: tuple[int, int], per_feature_times: bool) -> str:
    features = ", ".join(f"KEY {sql_string(f.name)} VALUE {ident(f.name)}"
                         for f in view.features if f.window_group == group)
    row = _result_row(_entity_key(keys), _timestamp_millis("`window_end`"), features,
                      per_feature_times=per_feature_times, last=False, advances_watermark=True)
    return f"INSERT INTO `feature_rows` SELECT {row}\nFROM {_window_rows(index)}"


def _last_insert(keys: tuple[str, ...], features: list[Feature], only_last: bool) -> str:
    """``last`` needs no window: every clean event carries its values with its event time,
    and the writer keeps, per feature, the value with the newest time (nulls are skipped)."""
    values = ", ".join(f"KEY {sql_string(f.name)} VALUE {ident(f.column or '')}"
                       for f in features)
    any_value = " OR ".join(f"{ident(f.column or '')} IS NOT NULL" for f in features)
    row = _result_row(_entity_key(keys), "`event_ms`", values, per_feature_times=True,
                      last=True, advances_watermark=only_last)
    return f"INSERT INTO `feature_rows` SELECT {row}\nFROM `clean_events` WHERE {any_value}"


# --------------------------------------------------------------------------- drift statistics

_FINITE_BOUND = "1.7976931348623157E308"
"""The largest double: ``ABS(x) <=`` it is false for NaN and infinities, true for the rest."""


def _monitored_value(feature: Feature, source: Source, column: str) -> tuple[str, str] | None:
    """The feature's value as (number, text) SQL, one of them NULL; None for a feature drift
    does not monitor (:func:`core.domain.drift.monitored_kind`)."""
    value_type = output_type(feature, source)
    kind = monitored_kind(value_type)
    if kind is None:
        return None
    if value_type is ValueType.BOOLEAN:  # as category_text spells them
        return ("CAST(NULL AS DOUBLE)",
                f"CASE WHEN {column} THEN 'true' WHEN NOT {column} THEN 'false' END")
    if kind is DriftKind.CATEGORICAL:
        return "CAST(NULL AS DOUBLE)", column
    number = f"CAST({column} AS DOUBLE)"
    if value_type in (ValueType.DOUBLE, ValueType.FLOAT):
        # NaN and the infinities have no bucket: counted as nulls, as the statistics do.
        number = f"CASE WHEN ABS({number}) <= {_FINITE_BOUND} THEN {number} END"
    return number, "CAST(NULL AS STRING)"


def _bucket(number: str) -> str:
    """:func:`core.domain.drift.bucket_index` in SQL, NULL for a NULL ``number``."""
    sign = f"CAST(SIGN({number}) AS INT)"
    return (f"CASE WHEN {number} IS NULL THEN CAST(NULL AS INT) "
            f"WHEN ABS({number}) < 1E-9 THEN 0 "
            f"WHEN ABS({number}) >= 1E19 THEN {sign} * 281 "
            f"ELSE {sign} * (1 + CAST(FLOOR((LOG10(ABS({number})) + 9) * 10) AS INT)) END")


def _statistics_statements(view: FeatureView, source: Source,
                           window_ms: int) -> tuple[str, ...]:
    """``feature_values`` — every monitored feature value the job emits, with its row's time
    — and the insert counting them per monitoring window, feature and bucket or category.
    ``last`` values count when an event carries them (a null one writes nothing).  Features
    are numbered within the job and named again only in the rows counted: the
    pre-aggregation hashes its key once per value, and a number hashes cheaper than a name."""
    values: list[tuple[Feature, str, str]] = []  # (feature, its column, its time and rows)
    for index, group in enumerate(window_groups(view), start=1):
        values += [(f, ident(f.name), f"`window_time` AS `value_time` FROM {_window_rows(index)}")
                   for f in view.features if f.window_group == group]
    values += [(f, ident(f.column or ""), f"`event_time` AS `value_time` FROM `clean_events` "
                                          f"WHERE {ident(f.column or '')} IS NOT NULL")
               for f in view.features if f.aggregation is Aggregation.LAST]
    monitored = [(feature, sql, rows) for feature, column, rows in values
                 if (sql := _monitored_value(feature, source, column)) is not None]
    if not monitored:
        return ()
    branches = [f"SELECT {number} AS `number`, {text} AS `text`, {index} AS `feature`, {rows}"
                for index, (_, (number, text), rows) in enumerate(monitored)]
    values_view = ("CREATE TEMPORARY VIEW `feature_values` AS SELECT `value_time`, `feature`, "
                   f"`number`, {_bucket('`number`')} AS `bucket`, `text`\nFROM (\n  "
                   + "\n  UNION ALL ".join(branches) + "\n)")
    name = "CASE `feature` " + " ".join(
        f"WHEN {index} THEN {sql_string(feature.name)}"
        for index, (feature, _, _) in enumerate(monitored)) + " END"
    window = (f"TUMBLE(TABLE `feature_values`, DESCRIPTOR(`value_time`), "
              f"{sql_interval(window_ms)})")
    counts = ("JSON_OBJECT("
              f"KEY 's' VALUE {_timestamp_millis('`window_start`')}, "
              f"KEY 'e' VALUE {_timestamp_millis('`window_end`')}, "
              f"KEY 'f' VALUE {name}, KEY 'b' VALUE `bucket`, KEY 'c' VALUE `text`, "
              "KEY 'r' VALUE COUNT(*), KEY 'sum' VALUE SUM(`number`), "
              "KEY 'sq' VALUE SUM(`number` * `number`), KEY 'lo' VALUE MIN(`number`), "
              "KEY 'hi' VALUE MAX(`number`))")
    insert = (f"INSERT INTO `drift_statistics` SELECT {name}, {counts}\n"
              f"FROM TABLE({window})\n"
              "GROUP BY `feature`, `bucket`, `text`, `window_start`, `window_end`")
    return values_view, insert
