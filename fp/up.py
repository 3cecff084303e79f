"""`fp up [--demo]`: the whole platform on one machine, stopped cleanly on Ctrl-C / SIGTERM.

Services named in the environment are used as they are; the missing ones are started
locally (PostgreSQL, Redis, a Kafka-protocol broker, a Flink session cluster).  Then the
migrations run and the platform's own processes start: registry, serving, deployer, the
Redis writer, the archiver, the drift monitor and the ingest API.  Everything this command
started — and only that — is stopped on exit, in reverse order, with its temporary
folders.  Killed instead (SIGKILL), it takes its processes along (the kernel kills each
when it dies), and the next `fp up` removes the rest (see fp/local/run_record.py).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from core.errors import FeaturePlatformError, InfrastructureError
from core.settings import Settings
from fp.local.base import (
    LocalService,
    answers_ok,
    kill_process_group,
    owned_child,
    wait_until,
)
from fp.local.run_record import RunRecord, remove_leftovers

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "features"


@dataclass
class Component:
    """One platform process (`fp <args>`), with the health URL that says it is up."""

    name: str
    args: list[str]
    health_url: str | None = None
    process: subprocess.Popen[bytes] | None = None


@dataclass(frozen=True)
class Ports:
    """Where the platform's own servers listen."""

    registry: int
    serving: int
    ingest: int


@dataclass
class Platform:
    settings: Settings
    work_dir: Path
    ports: Ports
    say: Callable[[str], None]
    record: RunRecord
    services: list[LocalService] = field(default_factory=list)
    components: list[Component] = field(default_factory=list)

    def start_missing_services(self) -> Settings:
        """The settings with every service this machine has to run filled in, and the
        registry this command starts."""
        from fp.local.flink import LocalFlink
        from fp.local.kafka import LocalKafka
        from fp.local.postgres import LocalPostgres
        from fp.local.redis import LocalRedis

        settings = self.settings
        return replace(
            settings,
            database_url=self._use_or_start(settings.database_url, LocalPostgres, "PostgreSQL",
                                            "postgres"),
            redis_url=self._use_or_start(settings.redis_url, LocalRedis, "Redis", "redis"),
            kafka_bootstrap=self._use_or_start(settings.kafka_bootstrap, LocalKafka,
                                               "Kafka-protocol broker (Tansu)", "kafka"),
            flink_url=self._use_or_start(settings.flink_url, LocalFlink,
                                         "Flink session cluster", "flink"),
            warehouse=settings.warehouse or (self.work_dir / "warehouse").as_uri(),
            registry=replace(settings.registry, url=f"http://127.0.0.1:{self.ports.registry}"),
            serving_url=f"http://127.0.0.1:{self.ports.serving}",
            ingest=replace(settings.ingest, url=f"http://127.0.0.1:{self.ports.ingest}"))

    def _use_or_start(self, url: str | None, factory: Callable[[Path], LocalService],
                      label: str, folder: str) -> str:
        if url:
            self.say(f"using {label} at {url}")
            return url
        started = time.monotonic()
        service = factory(self.work_dir / folder)
        self.services.append(service)
        try:
            service.start()
        finally:
            self.save_record()
        self.say(f"started {label} at {service.url} ({time.monotonic() - started:.1f} s)")
        return service.url

    def start_components(self, env: dict[str, str]) -> None:
        def server(name: str, port: int) -> Component:
            return Component(name, [name, "serve", "--port", str(port)],
                             f"http://127.0.0.1:{port}/healthz")

        self.components = [
            server("registry", self.ports.registry),
            Component("writer", ["writer", "run"]),
            Component("deployer", ["deployer", "run"]),
            Component("archiver", ["archiver", "run"]),
            Component("monitor", ["monitor", "run"]),
            server("serving", self.ports.serving),
            server("ingest", self.ports.ingest),
        ]
        for component in self.components:
            log = (self.work_dir / f"{component.name}.log").open("ab")
            component.process = subprocess.Popen(
                [sys.executable, "-m", "fp.cli", *component.args], env=env, stdout=log,
                stderr=subprocess.STDOUT, **owned_child())
            self.save_record()
            if component.health_url:
                wait_until(partial(answers_ok, component.health_url), 60,
                           f"the {component.name} at {component.health_url}",
                           self.work_dir / f"{component.name}.log")
            self.say(f"started {component.name}")

    def save_record(self) -> None:
        self.record.save([self.work_dir, *(folder for service in self.services
                                           for folder in service.temporary_folders)])

    def check_components(self) -> None:
        for component in self.components:
            if component.process is not None and component.process.poll() is not None:
                raise InfrastructureError(
                    f"{component.name} exited with {component.process.returncode}; see "
                    f"{self.work_dir / (component.name + '.log')}")

    def stop(self) -> None:
        for component in reversed(self.components):
            if component.process is not None and component.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(component.process.pid, signal.SIGTERM)
        for component in reversed(self.components):
            if component.process is None:
                continue
            with contextlib.suppress(subprocess.TimeoutExpired):
                component.process.wait(timeout=15)
            kill_process_group(component.process.pid)
        for service in reversed(self.services):
            with contextlib.suppress(Exception):
                service.stop()


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _stop_signals() -> list[signal.Signals]:
    """SIGINT and SIGTERM always: a shell starts a script's background jobs with SIGINT
    ignored, and then Python installs no Ctrl-C handler.  SIGHUP unless ignored: that is
    what `nohup` is for."""
    return [sig for sig in STOP_SIGNALS
            if sig != signal.SIGHUP or signal.getsignal(sig) != signal.SIG_IGN]


def _ignore_stop_signals() -> None:
    """Once stopping, a second Ctrl-C must not cut the stop short and leave things behind."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


@contextlib.contextmanager
def _stop_signals_raise() -> Iterator[None]:
    """SIGTERM (and SIGHUP) end `fp up` like Ctrl-C does, once."""
    def interrupt(*_: Any) -> None:
        _ignore_stop_signals()
        raise KeyboardInterrupt

    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    for sig in _stop_signals():
        signal.signal(sig, interrupt)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run(settings: Settings, demo: bool, ports: Ports) -> int:
    def say(message: str) -> None:
        print(f"fp up: {message}", flush=True)

    with _stop_signals_raise():
        if removed := remove_leftovers():
            say(f"removed what a killed fp up left: {', '.join(removed)}")
        record = RunRecord()
        with tempfile.TemporaryDirectory(prefix="fp-up-") as folder:
            exit_code = _run_platform(
                Platform(settings, Path(folder), ports, say, record),
                demo)
        record.remove()
        return exit_code


def _run_platform(platform: Platform, demo: bool) -> int:
    """Start the platform, watch it until a stop signal or a failure, then stop it."""
    settings, say = platform.settings, platform.say
    platform.save_record()
    stop_demo = threading.Event()
    try:
        settings = platform.start_missing_services()
        from registry.store.migrate import upgrade_to_head

        upgrade_to_head(settings.require_database_url())
        say("registry database migrated")
        env = {**os.environ, **settings.services_env()}
        if demo:
            from fp.demo import DRIFT_ENV

            env = {**DRIFT_ENV, **env}  # the demo's drift cadence, unless the environment's
        platform.start_components(env)
        if demo:
            from fp.demo import start_demo

            start_demo(settings, EXAMPLES, stop_demo, say)
        _print_urls(platform.ports, settings, demo, say)
        while True:
            platform.check_components()
            time.sleep(1)
    except KeyboardInterrupt:
        say("stopping…")
        return 0
    except FeaturePlatformError as error:
        say(f"error: {error}")
        return 1
    finally:
        _ignore_stop_signals()
        stop_demo.set()
        platform.stop()
        say("stopped")


def _without_password(url: str) -> str:
    """``url`` with any password replaced by ``***``: the console is no place for it."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@",
                                                                 ":***@", 1)))


def _print_urls(ports: Ports, settings: Settings, demo: bool,
                say: Callable[[str], None]) -> None:
    say(f"registry  http://127.0.0.1:{ports.registry}  (OpenAPI: /schema/openapi.json)")
    say(f"web UI    http://127.0.0.1:{ports.registry}/ui")
    say(f"serving   http://127.0.0.1:{ports.serving}")
    say(f"ingest    http://127.0.0.1:{ports.ingest}  (POST /v1/ingest/{{source}})")
    # Commands that reach the services themselves (fp backfill run, fp dataset, fp drift
    # baseline) need their addresses in another shell.
    say("other shells: export " + " ".join(f"{name}={_without_password(value)}" for name, value
                                            in sorted(settings.services_env().items())))
    if demo:
        say(f"try:  curl -s http://127.0.0.1:{ports.serving}/v1/features/user_transactions/u1")
        say(f"      curl -s http://127.0.0.1:{ports.ingest}/metrics | grep rejected")
    say("press Ctrl-C to stop everything")
