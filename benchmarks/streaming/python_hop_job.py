"""The "Python hop" design as a Flink job: window rows → ``to_data_stream`` → a PyFlink
``KeyedProcessFunction`` that writes Redis itself (no result topic, no writer process).

Run by :mod:`benchmarks.streaming.python_hop` as a PyFlink client process:
``python -m benchmarks.streaming.python_hop_job`` with a JSON request on stdin (the compiled
``JobSpec``, the Flink URL, the jars, the Redis URL); prints ``{"job_id": ...}``.

The SQL is the platform's own (the compiled view's DDL, checks, DLQ insert and window
queries); only the sink differs.  Rows are buffered in keyed state (``--buckets`` keys,
``zlib.crc32`` of the entity key) and flushed by a processing-time timer or when a bucket
holds ``max_rows``, through ``RedisOnlineStore.apply`` — the same Lua and pipelining as the
writer — so a crash loses nothing that was checkpointed.  This module runs as ``__main__``
so that cloudpickle ships the function by value: the TaskManager's Python worker needs only
the installed project (``sinks``), not the ``benchmarks`` folder.
"""

from __future__ import annotations

import json
import sys
import zlib
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from pyflink.common import Configuration, Row, Types
from pyflink.datastream import KeyedProcessFunction, RuntimeContext, StreamExecutionEnvironment
from pyflink.datastream.state import ListStateDescriptor, ValueStateDescriptor
from pyflink.java_gateway import get_gateway
from pyflink.table import EnvironmentSettings, StreamTableEnvironment

from sinks.online_store import FeatureRow, RedisOnlineStore

RESULT_INSERT = "INSERT INTO `feature_rows` "


class RedisRowsWriter(KeyedProcessFunction):  # type: ignore[misc]
    """Buffers result rows in keyed state and writes them to Redis in pipelined batches."""

    def __init__(self, redis_url: str, view: str, namespace: str, flush_ms: int,
                 max_rows: int) -> None:
        self.redis_url, self.view, self.namespace = redis_url, view, namespace
        self.flush_ms, self.max_rows = flush_ms, max_rows

    def open(self, runtime_context: RuntimeContext) -> None:
        self.rows = runtime_context.get_list_state(ListStateDescriptor("rows", Types.STRING()))
        self.count = runtime_context.get_state(ValueStateDescriptor("count", Types.INT()))
        self.store = RedisOnlineStore(self.redis_url)

    def process_element(self, value: Row, ctx: KeyedProcessFunction.Context) -> Iterable[Any]:
        self.rows.add(value[1])
        count = (self.count.value() or 0) + 1
        if count == 1:
            timers = ctx.timer_service()
            timers.register_processing_time_timer(timers.current_processing_time()
                                                  + self.flush_ms)
        if count >= self.max_rows:
            self._flush()
        else:
            self.count.update(count)
        return iter(())

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext,
                 ) -> Iterable[Any]:
        self._flush()
        return iter(())

    def _flush(self) -> None:
        rows = [FeatureRow.parse(payload.encode()) for payload in self.rows.get()]
        if rows:
            self.store.apply({(self.view, self.namespace): rows})
        self.rows.clear()
        self.count.clear()


def bucket(row: Row, buckets: int) -> int:
    return zlib.crc32(str(row[0]).encode()) % buckets


def submit(request: dict[str, Any]) -> str:
    spec, url = request["spec"], urlsplit(request["flink_url"])
    options = {
        "execution.target": "remote",
        "rest.address": url.hostname or "127.0.0.1",
        "rest.port": str(url.port or 8081),
        "pipeline.name": f"{spec['job_name']} (python hop)",
        "parallelism.default": "1",
        "execution.checkpointing.interval": f"{request['checkpoint_interval_ms']} ms",
        "python.executable": sys.executable,
        "pipeline.jars": ";".join(f"file://{jar}" for jar in request["jars"]),
    }
    conf = Configuration()
    for key, value in options.items():
        conf.set_string(key, value)
    # get_execution_environment(conf) would ignore execution.target and run a MiniCluster
    # inside this client: build the Java environment directly.
    java_env = get_gateway().jvm.org.apache.flink.streaming.api.environment \
        .StreamExecutionEnvironment(conf._j_configuration)
    env = StreamExecutionEnvironment(java_env)
    table_env = StreamTableEnvironment.create(
        env, environment_settings=EnvironmentSettings.in_streaming_mode())
    table_env.get_config().set("table.local-time-zone", "UTC")
    table_env.get_config().set("table.exec.source.idle-timeout", "5000 ms")
    for key, value in spec["configuration"]:
        table_env.get_config().set(key, value)

    statements = table_env.create_statement_set()
    selects = []
    for statement in spec["statements"]:
        if statement.startswith(RESULT_INSERT):
            selects.append(statement.removeprefix(RESULT_INSERT))
        elif statement.startswith("INSERT"):
            statements.add_insert_sql(statement)  # the dead-letter insert
        else:
            table_env.execute_sql(statement)
    statements.attach_as_datastream()
    rows = table_env.to_data_stream(
        table_env.sql_query(" UNION ALL ".join(f"({select})" for select in selects)))
    buckets = int(request["buckets"])
    rows.key_by(lambda row: bucket(row, buckets), key_type=Types.INT()) \
        .process(RedisRowsWriter(request["redis_url"], spec["view"], spec["namespace"],
                                 int(request["flush_ms"]), int(request["max_rows"]))) \
        .name("redis writer (python)")
    return str(env.execute_async(options["pipeline.name"]).get_job_id())


def main() -> int:
    try:
        job = submit(json.load(sys.stdin))
    except Exception as error:  # the parent gets every failure as one JSON line
        print(json.dumps({"error": f"{type(error).__name__}: {error}"}))
        return 1
    print(json.dumps({"job_id": job}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
