"""A Flink session cluster (a JobManager and a TaskManager) on loopback, from PyFlink's files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
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
    WorkDir,
    free_port,
    kill_process_group,
    log_tail,
    process_group_alive,
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
        # The daemon scripts background the JVMs, which stay in the script's process group.
        self._process_groups: dict[str, int] = {}

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

    def _alive(self) -> bool:
        return bool(self._process_groups) and all(map(process_group_alive,
                                                      self._process_groups.values()))

    def _start(self) -> None:
        self._home = self._work_dir.create()
        self._rest_port = free_port()
        self._write_config()
        try:
            scripts = self._run_scripts("start")
            self._process_groups = {daemon: script.pid for daemon, script in scripts.items()}
            if failed := [daemon for daemon, script in scripts.items() if script.returncode != 0]:
                raise InfrastructureError(f"`{failed[0]}.sh start` failed")
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
        for name in ("log4j.properties", "logback.xml"):
            shutil.copy(shipped / name, folders["conf"])

    def kill_taskmanager(self) -> None:
        """SIGKILL the TaskManager, as a crash would (for recovery tests)."""
        kill_process_group(self._process_groups.pop("taskmanager"))

    def start_taskmanager(self) -> None:
        """Start a TaskManager again after :meth:`kill_taskmanager`."""
        script = self._run_scripts("start", ("taskmanager",))["taskmanager"]
        self._process_groups["taskmanager"] = script.pid
        wait_until(self._has_free_slot, self._start_timeout, f"a new TaskManager at {self.url}")

    def _run_scripts(self, action: str, daemons: tuple[str, ...] = DAEMONS,
                     ) -> dict[str, subprocess.Popen[bytes]]:
        """Run ``<daemon>.sh action`` for the daemons at once and wait for the scripts."""
        # FLINK_* variables of the caller's shell would override our config.yaml (e.g. log dir).
        env = {name: value for name, value in os.environ.items() if not name.startswith("FLINK_")}
        env |= {"FLINK_CONF_DIR": str(self.conf_dir), "FLINK_IDENT_STRING": "fp"}
        scripts = {}
        for daemon in daemons:
            with (self._folder("log") / f"{daemon}-{action}.out").open("ab") as output:
                scripts[daemon] = subprocess.Popen(
                    [pyflink_home() / "bin" / f"{daemon}.sh", action],
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
        for script in scripts.values():
            script.wait()
        return scripts

    def _has_free_slot(self) -> bool:
        for daemon, pgid in self._process_groups.items():
            if not process_group_alive(pgid):
                raise InfrastructureError(f"the Flink {daemon} exited during start")
        try:
            with urllib.request.urlopen(f"{self.url}/overview", timeout=2) as response:
                overview = json.load(response)
        except (OSError, ValueError):
            return False
        return bool(overview["taskmanagers"] >= 1 and overview["slots-available"] >= 1)

    def stop(self) -> None:
        if self._process_groups:
            self._run_scripts("stop")
            # The scripts give up after 10 s, and the JVMs' children are no business of theirs.
            for pgid in self._process_groups.values():
                kill_process_group(pgid)
            self._process_groups.clear()
        self._work_dir.remove_temporary()
        self._home = None
