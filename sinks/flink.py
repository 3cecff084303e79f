"""Flink session-cluster adapter: submit, inspect, stop and cancel jobs (JobManager REST)."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from core.errors import InfrastructureError
from sinks.backfill_job import is_batch
from sinks.compiler import JobSpec
from sinks.flink_submit import REPLY_PREFIX

TERMINAL_STATES = {"FINISHED", "CANCELED", "FAILED"}


@dataclass(frozen=True)
class JobStatus:
    job_id: str
    name: str
    state: str
    vertex_states: tuple[str, ...]
    start_time_ms: int

    @property
    def running(self) -> bool:
        """RUNNING with every task RUNNING (a job can be RUNNING with tasks SCHEDULED)."""
        return self.state == "RUNNING" and all(s == "RUNNING" for s in self.vertex_states)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES


class FlinkJobs(Protocol):
    """What the deployer needs of a Flink session cluster: run, watch, stop and cancel jobs
    by the ids their specs name."""

    def submit(self, spec: JobSpec) -> str: ...

    def status(self, job_id: str) -> JobStatus | None: ...

    def exceptions(self, job_id: str) -> list[str]: ...

    def restarts(self, job_id: str) -> int: ...

    def stop_with_savepoint(self, job_id: str) -> str | None: ...

    def wait_until_terminal(self, job_id: str) -> JobStatus | None: ...

    def cancel(self, job_id: str) -> None: ...


class FlinkError(InfrastructureError):
    """The Flink cluster refused or failed an operation."""


class FlinkClient:
    def __init__(self, url: str, jars: Sequence[Path] = (), submit_timeout: float = 120,
                 checkpoint_interval_ms: int = 5000, idle_timeout_ms: int = 30_000) -> None:
        """``idle_timeout_ms``: a source partition that yields nothing this long stops holding
        the watermark back.  Too short, and a partition merely slower to be read (a backlog
        replayed under load) is declared idle, the watermark runs ahead and its events are
        dead-lettered as late; too long, and windows wait on a truly empty partition."""
        self.url = url.rstrip("/")
        self.jars = [str(j) for j in jars]
        self.submit_timeout = submit_timeout
        self.checkpoint_interval_ms = checkpoint_interval_ms
        self.idle_timeout_ms = idle_timeout_ms
        self._http = httpx.Client(base_url=self.url, timeout=15)
        self._submitter = _Submitter()

    def close(self) -> None:
        self._http.close()
        self._submitter.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise FlinkError(f"Flink unreachable at {self.url}: {error}") from error
        if response.status_code == 404:
            return None
        if not response.is_success:
            raise FlinkError(f"Flink {method} {path} answered {response.status_code}: "
                             f"{response.text[:500]}")
        return response.json() if response.content else {}

    def prepare_submissions(self) -> None:
        """Start the submitting child (and its JVM) now, so that a submission soon after
        does not wait for it."""
        self._submitter.start()

    def submit(self, spec: JobSpec) -> str:
        """Run ``spec`` on the cluster and return its job id; idempotent for a running job."""
        existing = self.status(spec.job_id)
        if existing is not None and not existing.terminal:
            return spec.job_id
        # A batch job reads and writes files: it needs none of the Kafka connector's jars.
        jars = [] if is_batch(spec) else self.jars
        request = {"spec": spec.to_json(), "flink_url": self.url, "jars": jars,
                   "checkpoint_interval_ms": self.checkpoint_interval_ms,
                   "idle_timeout_ms": self.idle_timeout_ms}
        reply = self._submitter.ask(request, self.submit_timeout)
        if "job_id" not in reply:
            raise FlinkError(f"submitting {spec.job_name} failed: {reply.get('error')}")
        return str(reply["job_id"])

    def status(self, job_id: str) -> JobStatus | None:
        body = self._call("GET", f"/jobs/{job_id}")
        if body is None:
            return None
        return JobStatus(job_id=job_id, name=body.get("name", ""), state=body["state"],
                         vertex_states=tuple(v["status"] for v in body.get("vertices", [])),
                         start_time_ms=body.get("start-time", 0))

    def jobs(self) -> list[JobStatus]:
        overview = self._call("GET", "/jobs/overview") or {"jobs": []}
        return [JobStatus(job_id=j["jid"], name=j["name"], state=j["state"], vertex_states=(),
                          start_time_ms=j.get("start-time", 0)) for j in overview["jobs"]]

    def exceptions(self, job_id: str) -> list[str]:
        body = self._call("GET", f"/jobs/{job_id}/exceptions") or {}
        history = body.get("exceptionHistory", {}).get("entries", [])
        return [f"{e.get('exceptionName', '')}: {e.get('stacktrace', '').splitlines()[0]}"
                for e in history if e.get("stacktrace")]

    def restarts(self, job_id: str) -> int:
        """How often the job failed over: the numRestarts metric, or the failures in its
        exception history when that is higher (the metric lags, and was seen at 0 after a
        TaskManager loss)."""
        metrics = self._call("GET", f"/jobs/{job_id}/metrics", params={"get": "numRestarts"})
        counted = int(metrics[0]["value"]) if metrics else 0
        return max(counted, len(self.exceptions(job_id)))

    def stop_with_savepoint(self, job_id: str, target_directory: str | None = None,
                            timeout: float = 60) -> str | None:
        """Stop gracefully; the savepoint path, or None when the job was already gone."""
        body: dict[str, Any] = {"drain": False}
        if target_directory:
            body["targetDirectory"] = target_directory
        trigger = self._call("POST", f"/jobs/{job_id}/stop", json=body)
        if trigger is None:
            return None
        request_id = trigger["request-id"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self._call("GET", f"/jobs/{job_id}/savepoints/{request_id}") or {}
            if result.get("status", {}).get("id") == "COMPLETED":
                operation = result.get("operation", {})
                if "failure-cause" in operation:
                    raise FlinkError(f"stopping {job_id} failed: "
                                     f"{operation['failure-cause'].get('class', '')}")
                return str(operation.get("location"))
            time.sleep(0.2)
        raise FlinkError(f"stopping {job_id} with a savepoint took over {timeout:.0f} s")

    def wait_until_terminal(self, job_id: str, timeout: float = 60) -> JobStatus | None:
        """Poll until the job has ended (a stopped job finishes shortly after its savepoint)."""
        deadline = time.monotonic() + timeout
        while (status := self.status(job_id)) is not None and not status.terminal:
            if time.monotonic() > deadline:
                raise FlinkError(f"job {job_id} still {status.state} after {timeout:.0f} s")
            time.sleep(0.2)
        return status

    def cancel(self, job_id: str) -> None:
        self._call("PATCH", f"/jobs/{job_id}", params={"mode": "cancel"})


class _Submitter:
    """The `sinks.flink_submit` child, started on first use and kept for later jobs."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()

    def ask(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        process = self.start()
        assert process.stdin is not None
        process.stdin.write(json.dumps(request) + "\n")
        process.stdin.flush()
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                break
            if line is None:
                self.close()
                raise FlinkError("the job submitter exited while submitting")
            if line.startswith(REPLY_PREFIX):
                reply: dict[str, Any] = json.loads(line.removeprefix(REPLY_PREFIX))
                return reply
        self.close()
        raise FlinkError(f"submitting took over {timeout:.0f} s")

    def start(self) -> subprocess.Popen[str]:
        """The running child: started unless it runs already."""
        if self._process is None or self._process.poll() is not None:
            self._lines = queue.Queue()
            self._process = subprocess.Popen(
                [sys.executable, "-m", "sinks.flink_submit"], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
            threading.Thread(target=self._read, args=(self._process, self._lines),
                             daemon=True).start()
        return self._process

    @staticmethod
    def _read(process: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    def close(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=10)
        self._process = None
