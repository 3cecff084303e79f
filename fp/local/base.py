"""The shape every local service shares, and the helpers that start, watch and stop them."""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import httpx

from core.errors import InfrastructureError

LOOPBACK = "127.0.0.1"


class LocalService(Protocol):
    """A piece of infrastructure run on this machine for tests and ``fp up``."""

    name: str

    def start(self) -> None:
        """Start if not running and return once ready; InfrastructureError on failure or timeout."""

    def stop(self) -> None:
        """Stop whatever this object started and remove its temporary folders."""

    @property
    def url(self) -> str:
        """Where clients connect, in the form their libraries expect."""

    @property
    def temporary_folders(self) -> list[Path]:
        """The folders this service made and removes on stop (for a later ``fp up`` to remove
        when the one that started the service was killed before it could)."""


@contextlib.contextmanager
def running(*services: LocalService) -> Iterator[tuple[LocalService, ...]]:
    """Start ``services`` in order and stop the started ones in reverse order, even on error."""
    with contextlib.ExitStack() as stack:
        for service in services:
            service.start()
            stack.callback(service.stop)
        yield services


def free_port() -> int:
    """A loopback TCP port that nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def port_open(port: int, host: str = LOOPBACK) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def log_tail(log: Path, lines: int = 20) -> str:
    """The last lines of ``log`` (a file, or a folder of them), indented for an error message."""
    if log.is_dir():
        return "\n".join(f"  {file}:\n{log_tail(file, lines)}" for file in sorted(log.iterdir()))
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return f"  (no log at {log})"
    return "\n".join(f"  {line}" for line in text.splitlines()[-lines:])


def answers_ok(url: str) -> bool:
    """Whether ``url`` answers 200 right now (a readiness probe for HTTP services)."""
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, log: Path | None = None
) -> None:
    """Poll ``predicate`` until true; after ``timeout`` seconds raise, quoting ``log``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            message = f"timed out after {timeout:g} s waiting for {what}"
            if log is not None:
                message += f"; end of {log}:\n{log_tail(log)}"
            raise InfrastructureError(message)
        time.sleep(0.05)


def package_dir(package: str) -> Path | None:
    """Folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def kill_process_group(pgid: int) -> None:
    """SIGKILL every process left in the group; a group that is already gone is fine."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent(parent: int) -> Callable[[], None]:
    """A ``preexec_fn`` asking the kernel to SIGKILL the child when ``parent`` dies."""

    def ask_kernel() -> None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        # A parent that died between fork and prctl would never send the signal.
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)

    return ask_kernel


def owned_child(user: str | None = None) -> dict[str, Any]:
    """``subprocess`` arguments for a server that is ours: in its own process group, so
    stopping it reaches its children and a terminal's Ctrl-C does not, and killed by the
    kernel when the thread that starts it ends, whatever ends it (even SIGKILL) — so start
    servers from a thread that outlives them."""
    return {
        "start_new_session": True,
        # Runs after the switch to ``user``: a change of user clears the death signal.
        "preexec_fn": _die_with_parent(os.getpid()),
        **run_as(user),
    }


def run_as(user: str | None) -> dict[str, Any]:
    """``subprocess`` arguments that run the child as ``user`` (None: as ourselves)."""
    if user is None:
        return {}
    account = pwd.getpwnam(user)
    # extra_groups=[] drops root's supplementary groups along with its uid.
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


class WorkDir:
    """A service's folder: the caller's, which is kept, or else a temporary one removed on stop."""

    def __init__(self, given: Path | None, prefix: str) -> None:
        self._given = given
        self._prefix = prefix
        self._temporary: Path | None = None

    def create(self) -> Path:
        if self._given is not None:
            self._given.mkdir(parents=True, exist_ok=True)
            return self._given
        if self._temporary is None:
            self._temporary = Path(tempfile.mkdtemp(prefix=self._prefix))
        return self._temporary

    @property
    def temporary(self) -> list[Path]:
        return [] if self._temporary is None else [self._temporary]

    def remove_temporary(self) -> None:
        if self._temporary is not None:
            shutil.rmtree(self._temporary, ignore_errors=True)
            self._temporary = None


class ServerProcess:
    """One long-running server in its own process group, its output appended to ``log``."""

    def __init__(self, argv: Sequence[str | Path], log: Path, user: str | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self._log = log
        self._argv = [str(arg) for arg in argv]
        self._user = user
        self._env = env
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        with self._log.open("ab") as output:
            self._process = subprocess.Popen(
                self._argv,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=self._env,
                **owned_child(self._user),
            )

    def wait_ready(self, probe: Callable[[], bool], timeout: float, what: str) -> None:
        """Wait for ``probe``; fail at once, quoting the log, if the server exits meanwhile."""

        def ready() -> bool:
            if self._process is not None and self._process.poll() is not None:
                raise InfrastructureError(
                    f"{what}: the server exited with code {self._process.returncode};"
                    f" end of {self._log}:\n{log_tail(self._log)}"
                )
            return probe()

        wait_until(ready, timeout, what, self._log)

    def stop(self, graceful: signal.Signals = signal.SIGTERM, timeout: float = 10) -> None:
        """Ask the server to stop with ``graceful``, then SIGKILL whatever is left of its group."""
        if self._process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self._process.send_signal(graceful)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout)
        kill_process_group(self._process.pid)
        self._process.wait()
        self._process = None


class ManagedService:
    """``start`` does nothing while the service runs, clears up after one that died, and
    leaves nothing behind when starting fails; subclasses say how in ``_alive``,
    ``_start`` and ``stop``."""

    def start(self) -> None:
        if self._alive():
            return
        self.stop()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _alive(self) -> bool:
        raise NotImplementedError

    def _start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


class SingleServerService(ManagedService):
    """A service that is one server process on a free port: subclasses start it in
    ``_start`` and may remove what they made outside the work folder in ``_clean_up``."""

    name: str
    stop_signal = signal.SIGTERM

    def __init__(self, work_dir: Path | None, prefix: str, start_timeout: float) -> None:
        self._work_dir = WorkDir(work_dir, prefix)
        self._start_timeout = start_timeout
        self._port = 0
        self._server: ServerProcess | None = None

    def _alive(self) -> bool:
        return self._server is not None and self._server.alive

    @property
    def temporary_folders(self) -> list[Path]:
        return self._work_dir.temporary

    def _clean_up(self) -> None:
        """Remove what ``_start`` made outside the work folder (nothing by default)."""

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(self.stop_signal)
            self._server = None
        self._clean_up()
        self._work_dir.remove_temporary()
