"""A Flink session cluster (a JobManager and a TaskManager) on loopback, from PyFlink's files."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from core.errors import InfrastructureError
from fp.local.base import (
    LOOPBACK,
    ManagedService,
    ServerProcess,
    WorkDir,
    free_port,
    log_tail,
    wait_until,
)
from sinks.flink_jars import pyflink_home

DAEMONS = ("jobmanager", "taskmanager")


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


class LocalFlink(ManagedService):
    """Every port and folder is the cluster's own, so several clusters can run side by side."""

    name = "flink"

    def __init__(
        self, work_dir: Path | None = None, task_slots: int = 4, start_timeout: float = 90
    ) -> None:
        self._work_dir = WorkDir(work_dir, "fp-flink-")
        self._task_slots = task_slots
        self._start_timeout = start_timeout
        self._home: Path | None = None
        self._rest_port = 0
        # Each JVM runs in the foreground (``<daemon>.sh start-foreground`` execs it), so it
        # stays our child and dies with us; the daemon mode would reparent it to init.
        self._servers: dict[str, ServerProcess] = {}

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self._rest_port}"

    @property
    def conf_dir(self) -> Path:
        """The FLINK_CONF_DIR for clients of this cluster, e.g. ``flink run``."""
        return self._folder("conf")

    def _folder(self, name: str) -> Path:
        if self._home is None:
            raise InfrastructureError("the local Flink cluster is not started")
        return self._home / name

    @property
    def temporary_folders(self) -> list[Path]:
        return self._work_dir.temporary

    def _alive(self) -> bool:
        return bool(self._servers) and all(server.alive for server in self._servers.values())

    def _start(self) -> None:
        self._home = self._work_dir.create()
        self._rest_port = free_port()
        self._write_config()
        try:
            for daemon in DAEMONS:
                self._start_daemon(daemon)
            wait_until(
                self._has_free_slot,
                self._start_timeout,
                f"a Flink TaskManager with a free slot at {self.url}",
            )
        except InfrastructureError as error:
            raise InfrastructureError(f"{error}\n{self._diagnosis()}") from None

    def _diagnosis(self) -> str:
        """The first errors in the logs (a JVM log ends in shutdown noise), then each log's end."""
        log_dir = self._folder("log")
        errors = [
            line
            for log in sorted(log_dir.glob("*.log"))
            for line in log.read_text(errors="replace").splitlines()
            if " ERROR " in line or line.startswith("Caused by:")
        ]
        first_errors = "\n".join(f"  {line}" for line in errors[:10])
        return f"first errors in {log_dir}:\n{first_errors}\nend of the logs:\n{log_tail(log_dir)}"

    def _write_config(self) -> None:
        shipped = pyflink_home() / "conf"
        config = _flatten(yaml.safe_load((shipped / "config.yaml").read_text()))
        folders = {name: self._folder(name) for name in ("conf", "log", "pid", "tmp", "web")}
        for folder in folders.values():
            folder.mkdir(exist_ok=True)
        java_options = f"{config.get('env.java.opts.all', '')} -Djava.io.tmpdir={folders['tmp']}"
        config |= {
            "env.java.opts.all": java_options,
            "env.pid.dir": str(folders["pid"]),
            "env.log.dir": str(folders["log"]),
            "io.tmp.dirs": str(folders["tmp"]),
            "web.tmpdir": str(folders["web"]),
            "jobmanager.bind-host": LOOPBACK,
            "jobmanager.rpc.address": LOOPBACK,
            "jobmanager.rpc.port": free_port(),
            "rest.address": LOOPBACK,
            "rest.bind-address": LOOPBACK,
            "rest.port": self._rest_port,
            "taskmanager.bind-host": LOOPBACK,
            "taskmanager.host": LOOPBACK,
            # 0 = any free port, so a second cluster never collides with this one.
            "taskmanager.rpc.port": "0",
            "taskmanager.data.port": "0",
            "blob.server.port": "0",
            "jobmanager.memory.process.size": "768m",
            # Room for two Python workers (~200 MB each) beside the JVM.
            "taskmanager.memory.process.size": "1600m",
            "taskmanager.numberOfTaskSlots": self._task_slots,
            # A backfill's batch job at parallelism 2 (offline/backfill.py) fits the default
            # network memory only with fewer buffers per sort-shuffle partition than 512.
            "taskmanager.network.sort-shuffle.min-buffers": 64,
            "parallelism.default": 1,
            # Notice a dead TaskManager in seconds, not the default 50 s.
            "heartbeat.interval": 2000,
            "heartbeat.timeout": 10000,
            "execution.checkpointing.dir": self._folder("checkpoints").as_uri(),
            "execution.checkpointing.savepoint-dir": self._folder("savepoints").as_uri(),
            # Otherwise Python jobs get a bare `python` without PyFlink on the TaskManager.
            "python.executable": sys.executable,
        }
        (folders["conf"] / "config.yaml").write_text(yaml.safe_dump(config))
        # The foreground scripts read the -console variants, which would log everything twice
        # (to stdout and the log file); the daemons' variants log to the file only.
        for name in ("log4j.properties", "logback.xml"):
            console_variant = name.replace(".", "-console.", 1)
            shutil.copy(shipped / name, folders["conf"] / console_variant)

    def kill_taskmanager(self) -> None:
        """SIGKILL the TaskManager, as a crash would (for recovery tests)."""
        self._servers.pop("taskmanager").stop(signal.SIGKILL)

    def start_taskmanager(self) -> None:
        """Start a TaskManager again after :meth:`kill_taskmanager`."""
        self._start_daemon("taskmanager")
        wait_until(self._has_free_slot, self._start_timeout, f"a new TaskManager at {self.url}")

    def _start_daemon(self, daemon: str) -> None:
        # FLINK_* variables of the caller's shell would override our config.yaml (e.g. log dir).
        env = {name: value for name, value in os.environ.items() if not name.startswith("FLINK_")}
        env |= {"FLINK_CONF_DIR": str(self.conf_dir), "FLINK_IDENT_STRING": "fp"}
        server = ServerProcess([pyflink_home() / "bin" / f"{daemon}.sh", "start-foreground"],
                               self._folder("log") / f"{daemon}.out", env=env)
        self._servers[daemon] = server
        server.start()

    def _has_free_slot(self) -> bool:
        for daemon, server in self._servers.items():
            if not server.alive:
                raise InfrastructureError(f"the Flink {daemon} exited during start")
        try:
            with urllib.request.urlopen(f"{self.url}/overview", timeout=2) as response:
                overview = json.load(response)
        except (OSError, ValueError):
            return False
        return bool(overview["taskmanagers"] >= 1 and overview["slots-available"] >= 1)

    def stop(self) -> None:
        # The TaskManager first, so the JobManager does not wait for its heartbeats.
        for daemon in reversed(DAEMONS):
            if (server := self._servers.pop(daemon, None)) is not None:
                server.stop()
        self._work_dir.remove_temporary()
        self._home = None
