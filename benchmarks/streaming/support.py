"""What the streaming benchmarks share: local services, Kafka producing, result rows, the
benchmark feature view, a fixed-rate event generator, Redis probes, CPU accounting, figures.

Everything runs on loopback, on services these helpers start and stop (``fp.local``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import redis
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from redis import Redis

from core.domain.definitions import FeatureView, parse_definitions
from core.domain.layout import (
    WRITER_GROUP,
    feature_key,
    feature_time_field,
    meta_key,
    source_group,
)
from core.domain.validation import validate_batch
from fp.local.base import running
from fp.local.flink import LocalFlink
from fp.local.kafka import LocalKafka
from fp.local.redis import LocalRedis
from sinks.compiler import JobSpec, KafkaOptions, compile_view
from sinks.flink import FlinkClient

# --------------------------------------------------------------------------- services


@dataclass
class Stack:
    kafka: LocalKafka
    redis: LocalRedis
    flink: LocalFlink | None = None

    @property
    def redis_client(self) -> Redis:
        return Redis.from_url(self.redis.url, decode_responses=True)


@contextlib.contextmanager
def local_stack(*, with_flink: bool = False, task_slots: int = 2) -> Iterator[Stack]:
    """Tansu, Redis and (optionally) a Flink session cluster, all on loopback, stopped on exit."""
    stack = Stack(LocalKafka(), LocalRedis(),
                  LocalFlink(task_slots=task_slots) if with_flink else None)
    services = [s for s in (stack.kafka, stack.redis, stack.flink) if s is not None]
    started = time.monotonic()
    with running(*services):
        log(f"services up in {time.monotonic() - started:.1f} s: Kafka {stack.kafka.url}, "
            f"Redis {stack.redis.url}" + (f", Flink {stack.flink.url}" if stack.flink else ""))
        yield stack


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --------------------------------------------------------------------------- Kafka


def create_topics(bootstrap: str, partitions: dict[str, int]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(name, count, 1)
                                       for name, count in partitions.items()]).values():
        future.result(timeout=30)


def bulk_producer(bootstrap: str, linger_ms: int = 5) -> Producer:
    """A producer tuned for throughput (batches; order per partition is kept)."""
    return Producer({"bootstrap.servers": bootstrap, "linger.ms": linger_ms,
                     "batch.num.messages": 10_000, "queue.buffering.max.messages": 1_000_000,
                     "queue.buffering.max.kbytes": 1_048_576})


def produce_one(producer: Producer, topic: str, value: bytes, key: bytes | None = None,
                partition: int = -1) -> None:
    """Produce, waiting for room in the local queue instead of failing."""
    while True:
        try:
            producer.produce(topic, value, key, partition=partition)
            return
        except BufferError:
            producer.poll(0.01)


def produce_keyed(bootstrap: str, topic: str, records: Iterable[tuple[bytes, bytes]]) -> int:
    """(key, value) records, partitioned by key as Flink's Kafka sink does; the count."""
    producer, count = bulk_producer(bootstrap), 0
    for key, value in records:
        produce_one(producer, topic, value, key)
        count += 1
        if count % 1000 == 0:
            producer.poll(0)
    if producer.flush(60) != 0:
        raise RuntimeError(f"could not deliver every record to {topic}")
    return count


class GroupProgress(threading.Thread):
    """The offsets ``group`` committed on ``topic``, summed over partitions, every second
    (a Flink job commits on each checkpoint; the writer after each batch).  Tansu reports a
    partition's end offset as its last batch's base + 1, so lags are approximate."""

    def __init__(self, bootstrap: str, topic: str, group: str, interval: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.topic, self.interval = topic, interval
        self.samples: list[tuple[float, int]] = []
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
        self._partitions = [TopicPartition(topic, p) for p in self._consumer.list_topics(
            topic, timeout=10).topics[topic].partitions]
        self._stop_event = threading.Event()

    def committed(self) -> int:
        committed = self._consumer.committed(self._partitions, timeout=10)
        return sum(max(tp.offset, 0) for tp in committed)

    def lag(self) -> int:
        """End offsets minus committed offsets, now (call after :meth:`stop`)."""
        ends = sum(self._consumer.get_watermark_offsets(tp, timeout=10)[1]
                   for tp in self._partitions)
        return ends - self.committed()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.samples.append((time.time(), self.committed()))

    def stop(self) -> None:
        self._stop_event.set()
        self.join(30)

    def close(self) -> None:
        self._consumer.close()

    def rate(self, from_s: float, to_s: float) -> float:
        """Records/s committed between the two wall-clock times."""
        return slope([sample for sample in self.samples if from_s <= sample[0] <= to_s])


def count_records(bootstrap: str, topic: str, quiet: float = 3.0) -> int:
    """Every record of ``topic`` now, read from the start (stops after ``quiet`` s of none)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"fp-bench-{time.time_ns()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "session.timeout.ms": 6000})
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    count, last = 0, time.monotonic()
    try:
        while time.monotonic() - last < quiet:
            messages = consumer.consume(10_000, timeout=0.5)
            good = sum(1 for m in messages if m.error() is None)
            if good:
                count, last = count + good, time.monotonic()
    finally:
        consumer.close()
    return count


# --------------------------------------------------------------------------- result rows

ROW_FEATURES = ("events_1m", "amount_sum_1m", "amount_min_1m", "amount_max_1m",
                "amount_avg_1m", "amount_stddev_1m", "items_sum_1m", "items_max_1m",
                "items_avg_1m", "items_stddev_1m")
"""The ten features of a benchmark result row (integers and doubles, as windows yield)."""


def result_row(entity: str, time_ms: int, rng: random.Random) -> dict[str, Any]:
    """A row as the compiler's window INSERT emits it (multi-window view: per-feature times)."""
    events = rng.randint(1, 40)
    amounts = [round(rng.uniform(0, 500), 2) for _ in range(3)]
    values: list[int | float] = [
        events, round(sum(amounts) * events / 3, 2), min(amounts), max(amounts),
        statistics.fmean(amounts), statistics.pstdev(amounts), events * 3, rng.randint(1, 9),
        rng.uniform(1, 9), rng.uniform(0, 4)]
    return {"e": entity, "t": time_ms, "f": dict(zip(ROW_FEATURES, values, strict=True)),
            "p": True, "l": False, "w": True}


def encode_row(row: dict[str, Any]) -> bytes:
    return json.dumps(row, separators=(",", ":")).encode()


# --------------------------------------------------------------------------- Redis


def meta(client: redis.Redis, view: str, namespace: str) -> dict[str, int]:
    stored = cast(dict[str, str], client.hgetall(meta_key(view, namespace)))
    return {k: int(v) for k, v in stored.items()}


def wait_for_rows(client: redis.Redis, view: str, namespace: str, rows: int, timeout: float,
                  ) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if meta(client, view, namespace).get("rows", 0) >= rows:
            return True
        time.sleep(0.05)
    return False


# --------------------------------------------------------------------------- CPU accounting

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _processes() -> dict[int, tuple[int, str, float]]:
    """pid → (parent pid, command line, CPU seconds so far) of every process."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                "utf-8", "replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        table[int(entry.name)] = (int(fields[1]), command,
                                  (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS)
    return table


@dataclass(frozen=True)
class Component:
    """Process ``pid``, or the processes whose command line holds every one of ``marks``
    (and that descend from a process whose command line holds every one of ``within``);
    with their descendants."""

    name: str
    marks: tuple[str, ...] = ()
    pid: int | None = None
    within: tuple[str, ...] = ()

    def roots(self, table: dict[int, tuple[int, str, float]]) -> list[int]:
        if self.pid is not None:
            return [self.pid] if self.pid in table else []
        return [pid for pid, (_, command, _) in table.items()
                if all(mark in command for mark in self.marks)
                and (not self.within or self._descends(pid, table))]

    def _descends(self, pid: int, table: dict[int, tuple[int, str, float]]) -> bool:
        while (pid := table[pid][0]) in table:
            if all(mark in table[pid][1] for mark in self.within):
                return True
        return False


class CpuMeter:
    """CPU seconds used by components (Flink daemons, broker, Redis, …) between two reads.

    Processes are recognised by marks unique to this run (a port, a folder), so services of
    other runs on the same machine are not counted."""

    def __init__(self, components: Sequence[Component]) -> None:
        self.components = components
        self._start = self.read()
        self._started = time.monotonic()

    def read(self) -> dict[str, float]:
        """CPU seconds so far; a process counts for the first component that claims it (a
        service started by the benchmark process is not the benchmark's own work)."""
        table = _processes()
        children: dict[int, list[int]] = {}
        for pid, (parent, _, _) in table.items():
            children.setdefault(parent, []).append(pid)
        claimed: dict[str, set[int]] = {}
        taken: set[int] = set()
        # Narrow components first: a Python worker before the TaskManager it runs under,
        # services before the benchmark process that started them.
        for component in sorted(self.components,
                                key=lambda c: (not c.within, c.pid is not None)):
            todo, mine = component.roots(table), set()
            while todo:
                pid = todo.pop()
                if pid not in taken and pid not in mine:
                    mine.add(pid)
                    todo.extend(children.get(pid, ()))
            claimed[component.name] = mine
            taken |= mine
        return {c.name: sum(table[pid][2] for pid in claimed[c.name]) for c in self.components}

    def restart(self) -> None:
        self._start, self._started = self.read(), time.monotonic()

    def shares(self) -> dict[str, float]:
        """Each component's CPU use since the start, in cores (1.0 = one core busy)."""
        now, wall = self.read(), time.monotonic() - self._started
        return {name: (now[name] - self._start.get(name, 0.0)) / wall for name in now}


def stack_components(stack: Stack, extra: Sequence[Component] = ()) -> list[Component]:
    """The components of a stack: broker, Redis, and the Flink JobManager/TaskManager (the
    TaskManager with its Python workers)."""
    port = stack.redis.url.rsplit(":", 1)[1].split("/")[0]
    components = [Component("kafka (tansu)", ("tansu", stack.kafka.url)),
                  Component("redis", ("redis-server", f":{port}"))]
    if stack.flink is not None:
        conf = str(stack.flink.conf_dir)
        taskmanager = ("TaskManagerRunner", conf)
        components += [Component("flink python worker", ("python",), within=taskmanager),
                       Component("flink taskmanager", taskmanager),
                       Component("flink jobmanager", ("StandaloneSessionClusterEntrypoint", conf))]
    return [*components, *extra]


def format_shares(shares: dict[str, float]) -> str:
    return ", ".join(f"{name} {share:.2f}" for name, share in shares.items())


# --------------------------------------------------------------------------- figures


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def slope(samples: Sequence[tuple[float, int]]) -> float:
    """Growth per second from the first to the last (time, count) sample; NaN if none."""
    if len(samples) < 2 or samples[-1][0] <= samples[0][0]:
        return math.nan
    return (samples[-1][1] - samples[0][1]) / (samples[-1][0] - samples[0][0])


def run_for(seconds: float, stop: threading.Event | None = None) -> None:
    """Sleep ``seconds``, waking early when ``stop`` is set."""
    (stop or threading.Event()).wait(seconds)


def elapsed_since(started: float) -> float:
    return time.perf_counter() - started




# --------------------------------------------------------------------------- the benchmark view

PROBES = 32
"""Entities ``u0``… that get an event in every 100 ms, so every window has a row for them:
the freshness probes."""
WINDOW_FEATURES = {  # group → the feature whose __ts:{feature} the probes read
    "1s": "events_1s", "5s": "events_5s", "5s/1s": "amount_sum_5s_hop"}


def view_definitions(view: str, topic: str, watermark_delay_ms: int) -> list[dict[str, Any]]:
    """A source and a view with 1 s and 5 s windows, tumbling and hopping (three window
    queries, seven features)."""
    schema = [{"name": "user_id", "type": "string", "required": True},
              {"name": "amount", "type": "double", "min": 0},
              {"name": "items", "type": "long"},
              {"name": "ts", "type": "long", "required": True}]
    return [
        {"kind": "entity", "name": "user", "join_keys": ["user_id"]},
        {"kind": "source", "name": "bench_events", "topic": topic, "timestamp_field": "ts",
         "watermark_delay": f"{watermark_delay_ms}ms", "schema": schema},
        {"kind": "feature_view", "name": view, "entities": ["user"], "source": "bench_events",
         "features": [
             {"name": "events_1s", "aggregation": "count", "window": "1s"},
             {"name": "amount_sum_1s", "aggregation": "sum", "column": "amount", "window": "1s"},
             {"name": "amount_max_1s", "aggregation": "max", "column": "amount", "window": "1s"},
             {"name": "events_5s", "aggregation": "count", "window": "5s"},
             {"name": "amount_avg_5s", "aggregation": "avg", "column": "amount", "window": "5s"},
             {"name": "amount_sum_5s_hop", "aggregation": "sum", "column": "amount",
              "window": "5s", "slide": "1s"},
             {"name": "items_max_5s_hop", "aggregation": "max", "column": "items",
              "window": "5s", "slide": "1s"},
         ]},
    ]


def compile_benchmark_view(view: str, namespace: str, topic: str, watermark_delay_ms: int,
                           bootstrap: str) -> JobSpec:
    """The job the platform itself would run for the benchmark view (starts at the earliest
    offset: the topic is new)."""
    catalog = validate_batch({}, parse_definitions(view_definitions(view, topic,
                                                                    watermark_delay_ms)))
    definition = catalog[f"feature_view:{view}"]
    assert isinstance(definition, FeatureView)
    return compile_view(definition, catalog, namespace, 1, kafka=KafkaOptions(bootstrap))


# --------------------------------------------------------------------------- input generator


@dataclass(frozen=True)
class Load:
    rate: int
    """Events per second, ``ts`` = the wall clock when produced."""
    seconds: float
    entities: int = 10_000
    linger_ms: int = 5
    """How long the producer waits to fill a batch: a Kafka client's default is 5 ms."""


def generate(bootstrap: str, topic: str, load: Load, report: Any) -> None:
    """Produce ``load`` to ``topic`` (run in its own process); puts a :class:`Generated` on
    ``report``."""
    producer = bulk_producer(bootstrap, load.linger_ms)
    rng = random.Random(3)
    tick = 0.01
    per_tick = load.rate * tick
    started = time.time()
    due, sent, lag, ticks = 0.0, 0, 0.0, 0
    while (now := time.time()) - started < load.seconds:
        ticks += 1
        now_ms = int(now * 1000)
        due += per_tick
        users = [rng.randrange(load.entities) for _ in range(int(due) - sent)]
        if ticks % 10 == 0:  # every 100 ms, one event per probe entity
            users[:PROBES] = range(PROBES)
        for user in users:
            payload = (f'{{"user_id":"u{user}","amount":{rng.random() * 500:.2f},'
                       f'"items":{rng.randrange(1, 9)},"ts":{now_ms}}}')
            produce_one(producer, topic, payload.encode(), f"u{user}".encode())
        sent += len(users)
        producer.poll(0)
        lag = max(lag, time.time() - (started + ticks * tick))
        if (pause := started + ticks * tick - time.time()) > 0:
            time.sleep(pause)
    producer.flush(30)
    report.put(Generated(sent, time.time() - started, lag, time.process_time()))


@dataclass(frozen=True)
class Generated:
    events: int
    seconds: float
    worst_lag: float
    """How far the generator fell behind its schedule at worst (s)."""
    cpu_seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds


class Generator:
    """:func:`generate` in a child process (its CPU is then not the writer's or Flink's)."""

    def __init__(self, bootstrap: str, topic: str, load: Load) -> None:
        context = multiprocessing.get_context("spawn")
        self._report = context.Queue()
        self.process = context.Process(target=generate, args=(bootstrap, topic, load,
                                                              self._report), daemon=True)

    def start(self) -> None:
        self.process.start()

    @property
    def pid(self) -> int:
        return self.process.pid or 0

    def result(self, timeout: float) -> Generated:
        generated = self._report.get(timeout=timeout)
        self.process.join(10)
        assert isinstance(generated, Generated)
        return generated


# --------------------------------------------------------------------------- what Redis shows


@dataclass
class Sightings:
    """What the :class:`RedisSampler` saw."""

    visible: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    """(window group, window end ms) → wall-clock ms at which each probe's row appeared."""
    watermark_first_seen: dict[int, float] = field(default_factory=dict)
    """meta watermark value → wall-clock ms it was first seen."""
    rows: list[tuple[float, int]] = field(default_factory=list)
    """(wall-clock s, meta rows) samples."""


class RedisSampler(threading.Thread):
    """Reads the probes' per-feature times and the view's meta every ``interval`` seconds.

    A probe has a row in every window, so when its ``__ts:{feature}`` moves to W the row of
    window end W has just become visible: the sample time (±interval) is its arrival."""

    def __init__(self, redis_url: str, view: str, namespace: str,
                 interval: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.client = Redis.from_url(redis_url, decode_responses=True)
        self.view, self.namespace, self.interval = view, namespace, interval
        self.seen = Sightings()
        self._stop_event = threading.Event()

    def stop(self) -> Sightings:
        self._stop_event.set()
        self.join(10)
        return self.seen

    def run(self) -> None:
        fields = [feature_time_field(f) for f in WINDOW_FEATURES.values()]
        keys = [feature_key(self.view, self.namespace, f"u{p}") for p in range(PROBES)]
        last: dict[tuple[str, int], int] = {}
        while not self._stop_event.wait(self.interval):
            pipeline = self.client.pipeline(transaction=False)
            for key in keys:
                pipeline.hmget(key, fields)
            pipeline.hmget(meta_key(self.view, self.namespace), ["watermark", "rows"])
            *probes, (watermark, rows) = pipeline.execute()
            now_ms = time.time() * 1000
            for probe, times in enumerate(probes):
                for group, value in zip(WINDOW_FEATURES, times, strict=True):
                    if value is not None and int(value) > last.get((group, probe), 0):
                        last[group, probe] = int(value)
                        self.seen.visible.setdefault((group, int(value)), []).append(now_ms)
            if watermark is not None:
                self.seen.watermark_first_seen.setdefault(int(watermark), now_ms)
            self.seen.rows.append((now_ms / 1000, int(rows or 0)))


@dataclass(frozen=True)
class LoadFigures:
    input_rate: float
    processed_rate: float
    """Events/s the Flink job consumed (its committed offsets) over the steady part."""
    rows_per_second: float
    freshness_ms: tuple[float, float, float]
    """p50, p99, max of (row visible in Redis) - (window end + watermark delay)."""
    first_row_ms: tuple[float, float]
    """p50, p99 of the same for the first row of each window (the meta watermark)."""
    windows: int
    backlog_rows: int
    """Rows written after the input stopped."""
    source_lag: int
    """Events the Flink job had not committed (checkpointed) when the input stopped."""
    result_lag: int | None
    """Result rows the writer had not committed then (None: no writer)."""
    dead_letters: int
    cpu: dict[str, float]
    load_average: float

    def describe(self, watermark_delay_ms: int) -> str:
        p50, p99, worst = self.freshness_ms
        lags = f"Flink source lag {self.source_lag:,} events" + (
            f", writer lag {self.result_lag:,} rows" if self.result_lag is not None else "")
        return (
            f"input {self.input_rate:,.0f} events/s (Flink consumed {self.processed_rate:,.0f}/s)"
            f" -> {self.rows_per_second:,.0f} result rows/s into Redis\n"
            f"  freshness beyond the {watermark_delay_ms} ms watermark delay (row visible in "
            f"Redis - (window end + delay)), {self.windows} window ends x {PROBES} probes: "
            f"p50 {p50:,.0f} ms, p99 {p99:,.0f} ms, max {worst:,.0f} ms\n"
            f"  first row of each window (meta watermark): p50 {self.first_row_ms[0]:,.0f} ms, "
            f"p99 {self.first_row_ms[1]:,.0f} ms\n"
            f"  when the input stopped: {lags}; {self.backlog_rows:,} rows written after it\n"
            f"  events in the DLQ (all events were valid: 'late' ones): {self.dead_letters:,}\n"
            f"  CPU in cores: {format_shares(self.cpu)}; load average {self.load_average:.1f}")


def summarise(seen: Sightings, *, window_from_ms: float, window_to_ms: float,
              watermark_delay_ms: int) -> dict[str, Any]:
    """Freshness and rows/s over the windows that ended in [window_from_ms, window_to_ms]."""
    lateness = [arrival - (end + watermark_delay_ms)
                for (_, end), arrivals in seen.visible.items()
                if window_from_ms <= end <= window_to_ms for arrival in arrivals]
    first_rows = [seen_at - (mark + watermark_delay_ms)
                  for mark, seen_at in seen.watermark_first_seen.items()
                  if window_from_ms <= mark <= window_to_ms]
    steady = [(t, rows) for t, rows in seen.rows
              if window_from_ms / 1000 <= t <= (window_to_ms + watermark_delay_ms) / 1000]
    return {
        "rows_per_second": slope(steady),
        "freshness_ms": (percentile(lateness, 50), percentile(lateness, 99),
                         max(lateness, default=math.nan)),
        "first_row_ms": (percentile(first_rows, 50), percentile(first_rows, 99)),
        "windows": len({end for (_, end) in seen.visible
                        if window_from_ms <= end <= window_to_ms}),
    }


def settle(client: Redis, view: str, namespace: str, quiet: float, timeout: float) -> int:
    """Wait until the meta ``rows`` stopped moving for ``quiet`` seconds; the final count."""
    deadline, last, since = time.monotonic() + timeout, -1, time.monotonic()
    while time.monotonic() < deadline:
        rows = meta(client, view, namespace).get("rows", 0)
        if rows != last:
            last, since = rows, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
        time.sleep(0.2)
    return last


def measure_load(stack: Stack, spec: JobSpec, load: Load, *, watermark_delay_ms: int,
                 warmup: float, writer: Component | None = None) -> LoadFigures:
    """Feed ``load`` to a running job's source topic and watch its rows arrive in Redis.

    Figures cover the steady part: windows that ended after ``warmup`` seconds and closed
    (end + watermark delay) before the input stopped; CPU over the same span."""
    sampler = RedisSampler(stack.redis.url, spec.view, spec.namespace)
    source = GroupProgress(stack.kafka.url, spec.source_topic,
                           source_group(spec.view, spec.namespace))
    results = GroupProgress(stack.kafka.url, spec.result_topic, WRITER_GROUP)
    for thread in (sampler, source, results):
        thread.start()
    generator = Generator(stack.kafka.url, spec.source_topic, load)
    generator.start()
    started_ms = time.time() * 1000
    cpu = CpuMeter(stack_components(stack, [writer] if writer else []))
    time.sleep(warmup)
    cpu.restart()
    generated = generator.result(timeout=load.seconds + 120)
    stopped_ms = time.time() * 1000
    shares = cpu.shares() | {"generator": generated.cpu_seconds / generated.seconds}
    load_average = os.getloadavg()[0]
    source.stop()
    results.stop()
    source_lag, result_lag = source.lag(), results.lag() if writer else None
    log(f"generator: {generated.events:,} events in {generated.seconds:.1f} s = "
        f"{generated.rate:,.0f}/s (worst lag behind schedule {generated.worst_lag * 1000:.0f} "
        "ms); waiting for the rows to settle")
    rows_at_stop = max((rows for t, rows in sampler.seen.rows if t * 1000 <= stopped_ms),
                       default=0)
    final_rows = settle(stack.redis_client, spec.view, spec.namespace, quiet=5, timeout=120)
    seen = sampler.stop()
    try:
        return LoadFigures(
            input_rate=generated.rate,
            processed_rate=source.rate(started_ms / 1000 + warmup, stopped_ms / 1000),
            **summarise(seen, window_from_ms=started_ms + warmup * 1000,
                        window_to_ms=stopped_ms - watermark_delay_ms - 1000,
                        watermark_delay_ms=watermark_delay_ms),
            backlog_rows=final_rows - rows_at_stop, source_lag=source_lag,
            result_lag=result_lag,
            dead_letters=count_records(stack.kafka.url, spec.dlq_topic), cpu=shares,
            load_average=load_average)
    finally:
        source.close()
        results.close()


class WriterProcess:
    """``fp writer run`` as its own process, as production runs it."""

    def __init__(self, stack: Stack, log_file: Path) -> None:
        env = {**os.environ, "FP_KAFKA_BOOTSTRAP": stack.kafka.url,
               "FP_REDIS_URL": stack.redis.url}
        with log_file.open("ab") as output:
            self.process = subprocess.Popen([sys.executable, "-m", "fp.cli", "writer", "run"],
                                            env=env, stdout=output, stderr=subprocess.STDOUT)
        self.log_file = log_file

    @property
    def component(self) -> Component:
        return Component("writer", pid=self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# --------------------------------------------------------------------------- a run per rate


def add_load_arguments(parser: argparse.ArgumentParser, rates: str) -> None:
    parser.add_argument("--rates", default=rates, help="input events/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=60, help="input duration per rate")
    parser.add_argument("--warmup", type=float, default=15,
                        help="seconds of each run left out of the figures")
    parser.add_argument("--entities", type=int, default=10_000)
    parser.add_argument("--watermark-delay-ms", type=int, default=2000)
    parser.add_argument("--linger-ms", type=int, default=5,
                        help="the event producer's linger.ms (its batching; the test broker's "
                             "fetch cost grows with the batches a topic holds)")


def loads(args: argparse.Namespace) -> list[Load]:
    return [Load(int(rate), args.seconds, args.entities, args.linger_ms)
            for rate in args.rates.split(",")]


def run_under_load(stack: Stack, flink: FlinkClient, spec: JobSpec, submit: Callable[[], str],
                   load: Load, *, watermark_delay_ms: int, warmup: float,
                   writer: Component | None = None) -> LoadFigures:
    """Create the job's topics, ``submit`` it, wait for its tasks, measure, cancel it."""
    create_topics(stack.kafka.url, {spec.source_topic: 4, spec.result_topic: 4,
                                    spec.dlq_topic: 1})
    started = time.monotonic()
    job_id = submit()
    deadline = time.monotonic() + 120
    while not ((status := flink.status(job_id)) and status.running):
        if time.monotonic() > deadline:
            raise SystemExit(f"job {job_id} did not start: {flink.exceptions(job_id)}")
        time.sleep(0.5)
    log(f"{load.rate:,} events/s: job {job_id} running after {time.monotonic() - started:.1f} s")
    try:
        figures = measure_load(stack, spec, load, watermark_delay_ms=watermark_delay_ms,
                               warmup=warmup, writer=writer)
        print(f"\n{figures.describe(watermark_delay_ms)}\n", flush=True)
        return figures
    finally:
        if problems := flink.exceptions(job_id):
            log(f"job exceptions: {problems[:3]}")
        flink.cancel(job_id)


def print_table(title: str, results: Sequence[LoadFigures], args: argparse.Namespace) -> None:
    print(f"{title}; watermark delay {args.watermark_delay_ms} ms, {args.entities:,} entities, "
          f"{args.seconds:.0f} s per rate (first {args.warmup:.0f} s left out), "
          f"{os.cpu_count()} CPUs shared:")
    print(f"{'input ev/s':>11} {'consumed':>9} {'rows/s':>8} {'fresh p50':>10} {'fresh p99':>10} "
          f"{'max':>9} {'DLQ':>7} {'load avg':>8}")
    for f in results:
        p50, p99, worst = f.freshness_ms
        print(f"{f.input_rate:>11,.0f} {f.processed_rate:>9,.0f} {f.rows_per_second:>8,.0f} "
              f"{p50:>8,.0f}ms {p99:>8,.0f}ms {worst:>7,.0f}ms {f.dead_letters:>7,} "
              f"{f.load_average:>8.1f}")
