"""What the ingest benchmark needs around the API: a registry on a scratch database, Tansu,
Redis, the server process pinned to its core, the payments events, CPU accounting.

Everything runs on loopback, on services these helpers start and stop (``fp.local``); the
registry may instead be one already running (its URL given).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from fp.local.base import LOOPBACK, answers_ok, free_port, owned_child, wait_until
from fp.local.kafka import LocalKafka
from fp.local.postgres import LocalPostgres, postgres_reachable
from fp.local.redis import LocalRedis
from registry.store.migrate import upgrade_to_head
from tests.payments import INVALID_EVENTS, SCHEMA, event

DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
SOURCE_NAME = "payments"
TOPIC = "payments"
SOURCE: dict[str, Any] = {"kind": "source", "name": SOURCE_NAME, "topic": TOPIC,
                          "timestamp_field": "ts", "schema": SCHEMA}
INGEST_PATH = f"/v1/ingest/{SOURCE_NAME}"
TS_MS = 1_790_000_000_000
REGIONS = ("eu", "us", "apac")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --------------------------------------------------------------------------- cores


@dataclass(frozen=True)
class Cores:
    """Where each side runs: the ingest server (and the producer baseline) on ``server``, the
    load generator, broker, Redis and registry on ``rest``; None: not pinned."""

    server: frozenset[int] | None
    rest: frozenset[int] | None

    def describe(self) -> str:
        if self.server is None or self.rest is None:
            return "not pinned: server, load generator and broker share every core"
        return (f"server pinned to CPU {_cpus(self.server)}; load generator, Tansu, Redis and "
                f"registry to CPU {_cpus(self.rest)}")

    def server_argv(self) -> list[str]:
        return [] if self.server is None else ["taskset", "-c", _cpus(self.server)]


def _cpus(cpus: frozenset[int]) -> str:
    return ",".join(str(cpu) for cpu in sorted(cpus))


def choose_cores(pin: bool) -> Cores:
    """Server on the first allowed CPU, the rest on the others; this process (the load
    generator) moves to the others at once, so the services it starts inherit them."""
    allowed = sorted(os.sched_getaffinity(0))
    if not pin or len(allowed) < 2:
        return Cores(None, None)
    cores = Cores(frozenset(allowed[:1]), frozenset(allowed[1:]))
    assert cores.rest is not None
    os.sched_setaffinity(0, cores.rest)
    return cores


# --------------------------------------------------------------------------- services


@dataclass
class Services:
    kafka: LocalKafka
    redis: LocalRedis
    registry_url: str
    pids: dict[str, int]
    """The processes whose CPU is accounted, by label (the server's is added later)."""


class ChildProcess:
    """A platform process of ours (its own process group, killed with this one)."""

    def __init__(self, argv: Sequence[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        with log_path.open("ab") as output:
            self.process = subprocess.Popen(list(argv), env=env, stdin=subprocess.DEVNULL,
                                            stdout=output, stderr=subprocess.STDOUT,
                                            **owned_child())

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@contextlib.contextmanager
def scratch_database(server_url: str | None, scratch: Path) -> Iterator[str]:
    """A fresh registry database at migration head on ``server_url`` (reachable), else on a
    throwaway local PostgreSQL; dropped on exit."""
    url = server_url or DEFAULT_POSTGRES
    local: LocalPostgres | None = None
    if not postgres_reachable(url):
        log(f"no PostgreSQL at {url}: starting a local one")
        local = LocalPostgres(scratch / "postgres")
        local.start()
        url = local.url
    name = f"fp_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        database = make_url(url).set(database=name).render_as_string(hide_password=False)
        upgrade_to_head(database)
        yield database
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        if local is not None:
            local.stop()


def platform_env(**values: str) -> dict[str, str]:
    """The environment of an ``fp`` child: ours without any ``FP_*``, then ``values``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FP_")}
    return {**env, "NO_COLOR": "1", "FP_API_TOKENS": "", **values}


@contextlib.contextmanager
def services(scratch: Path, *, postgres: str | None, registry_url: str | None,
             registry_token: str | None) -> Iterator[Services]:
    """Tansu, Redis and a registry (``fp registry serve`` on a scratch database, unless
    ``registry_url`` names one) holding the payments source."""
    with contextlib.ExitStack() as stack:
        kafka, redis = LocalKafka(scratch / "kafka"), LocalRedis(scratch / "redis")
        for service in (kafka, redis):
            service.start()
            stack.callback(service.stop)
        pids = {"broker": _child_pid("tansu"), "redis": _child_pid("redis-server",
                                                                    "valkey-server")}
        if registry_url is None:
            database = stack.enter_context(scratch_database(postgres, scratch))
            port = free_port()
            registry_url = f"http://{LOOPBACK}:{port}"
            registry = ChildProcess(
                [sys.executable, "-m", "fp.cli", "registry", "serve", "--port", str(port)],
                platform_env(FP_DATABASE_URL=database), scratch / "registry.log")
            stack.callback(registry.stop)
            wait_until(lambda: answers_ok(f"{registry_url}/healthz"), 60, "the registry",
                       scratch / "registry.log")
            pids["registry"] = registry.pid
        headers = {"Authorization": f"Bearer {registry_token}"} if registry_token else {}
        httpx.post(f"{registry_url}/v1/apply", json={"definitions": [SOURCE]}, headers=headers,
                   timeout=30).raise_for_status()
        yield Services(kafka, redis, registry_url, pids)


def _child_pid(*names: str) -> int:
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if child.name() in names:
                return int(child.pid)
    raise RuntimeError(f"no child process named {' or '.join(names)}")


class IngestServer:
    """``fp ingest serve`` (or the profiled runner of the same app) on a free port."""

    def __init__(self, stack: Services, cores: Cores, log_path: Path,
                 profile_to: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        env = platform_env(FP_REGISTRY_URL=stack.registry_url,
                           FP_KAFKA_BOOTSTRAP=stack.kafka.url, FP_REDIS_URL=stack.redis.url)
        if profile_to is None:
            command = ["-m", "fp.cli", "ingest", "serve", "--port", str(self.port)]
        else:
            command = ["-m", "benchmarks.ingest.profiled_server", "--port", str(self.port),
                       "--output", str(profile_to)]
        self._process = ChildProcess([*cores.server_argv(), sys.executable, *command], env,
                                     log_path)
        wait_until(self._ready, 60, "the ingest API", log_path)

    def _ready(self) -> bool:
        if self._process.process.poll() is not None:
            raise RuntimeError(f"the ingest server exited; see {self._process.log_path}")
        try:
            health = httpx.get(f"{self.url}/healthz", timeout=1).json()
        except (httpx.HTTPError, ValueError):
            return False
        return bool(health.get("registry_loaded"))

    @property
    def pid(self) -> int:
        return self._process.pid

    def stop(self) -> None:
        self._process.stop()


# --------------------------------------------------------------------------- events


def payment(rng: random.Random, ts: int) -> bytes:
    """A valid payments event as a client would send it (as tests/payments.event, over
    100,000 accounts)."""
    account = (f"acct-{rng.randrange(100_000):06d}", rng.choice(REGIONS))
    return json.dumps(event(account, ts, rng), separators=(",", ":")).encode()


def _is_json(value: bytes) -> bool:
    try:
        json.loads(value)
    except ValueError:
        return False
    return True


JSON_INVALID_EVENTS = [make for make in INVALID_EVENTS if _is_json(make(TS_MS))]
"""tests/payments.INVALID_EVENTS that are JSON: a JSON body cannot carry the others (it would
be refused whole, 400), only NDJSON can."""


def events(count: int, invalid_share: float, rng: random.Random) -> list[bytes]:
    """``count`` events, ``round(count * invalid_share)`` of them invalid (each way
    :data:`JSON_INVALID_EVENTS` breaks the contract in turn), at random places."""
    invalid = round(count * invalid_share)
    batch = [payment(rng, TS_MS + i) for i in range(count - invalid)]
    for n in range(invalid):
        batch.insert(rng.randrange(len(batch) + 1),
                     JSON_INVALID_EVENTS[n % len(JSON_INVALID_EVENTS)](TS_MS + n))
    return batch


def batch_body(batch: Sequence[bytes]) -> bytes:
    return b'{"events":[' + b",".join(batch) + b"]}"


# --------------------------------------------------------------------------- CPU


@dataclass(frozen=True)
class CpuSnapshot:
    at: float
    processes: dict[str, float]
    """CPU seconds (user + system) of each labelled process."""
    threads: dict[str, float]
    """CPU seconds of the server's threads, by kind."""
    busy: float
    """Seconds the server's CPUs (all CPUs when not pinned) ran anything (/proc/stat)."""
    steal: float
    """Seconds of those CPUs the hypervisor gave to other machines (/proc/stat)."""


class CpuProbe:
    def __init__(self, pids: dict[str, int], cpus: frozenset[int] | None,
                 server: str = "server") -> None:
        self.processes = {label: psutil.Process(pid) for label, pid in pids.items()}
        self.cpus = cpus
        self.server = server

    def snapshot(self) -> CpuSnapshot:
        times: dict[str, float] = {}
        for label, process in self.processes.items():
            with contextlib.suppress(psutil.Error):
                cpu = process.cpu_times()
                times[label] = cpu.user + cpu.system
        threads: dict[str, float] = {}
        if self.server in self.processes:
            threads = server_threads(self.processes[self.server])
        busy, steal = cpu_seconds(self.cpus)
        return CpuSnapshot(time.perf_counter(), times, threads, busy, steal)


def server_threads(process: psutil.Process) -> dict[str, float]:
    """CPU seconds of a Python process's threads: the main thread (the event loop), the
    librdkafka threads (named ``rdk:…``), and every other Python thread (the delivery-report
    poller, asyncio's executor threads)."""
    kinds: dict[str, float] = {}
    with contextlib.suppress(psutil.Error):
        for thread in process.threads():
            try:
                name = Path(f"/proc/{process.pid}/task/{thread.id}/comm").read_text().strip()
            except OSError:
                continue
            kind = ("event loop (main thread)" if thread.id == process.pid else
                    "librdkafka threads" if name.startswith("rdk:") else
                    "other Python threads (delivery-report poller, executor)")
            kinds[kind] = kinds.get(kind, 0.0) + thread.user_time + thread.system_time
    return kinds


def cpu_seconds(cpus: frozenset[int] | None) -> tuple[float, float]:
    """Seconds ``cpus`` (None: all) have been busy, and stolen by the hypervisor, since boot:
    /proc/stat's user, nice, system, irq and softirq; and steal."""
    busy = steal = 0
    wanted = {f"cpu{cpu}" for cpu in cpus} if cpus is not None else {"cpu"}
    for line in Path("/proc/stat").read_text().splitlines():
        fields = line.split()
        if fields and fields[0] in wanted:
            user, nice, system, _, _, irq, softirq, stolen = (int(f) for f in fields[1:9])
            busy += user + nice + system + irq + softirq
            steal += stolen
    ticks = os.sysconf("SC_CLK_TCK")
    return busy / ticks, steal / ticks


def cores_used(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, float]:
    """Cores each process used between the two snapshots."""
    wall = after.at - before.at
    return {label: (after.processes[label] - before.processes.get(label, 0.0)) / wall
            for label in after.processes}


def thread_cores(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, float]:
    wall = after.at - before.at
    return {kind: (after.threads[kind] - before.threads.get(kind, 0.0)) / wall
            for kind in after.threads}
