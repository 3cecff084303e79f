"""Running a child process with a wall-clock limit, killing its whole process group.

Both ``git`` (which starts helpers such as ``git-remote-https`` or ``ssh``) and bubblewrap
(whose PID namespace dies with its pid 1) leave descendants behind when only the direct child
is killed.  Each child therefore gets a session of its own, and on a
timeout, and again after it exits, everything left in that process group is sent SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO


@dataclass(frozen=True)
class Finished:
    """How a bounded child process ended."""

    returncode: int
    """Negative: killed by that signal (as :class:`subprocess.Popen` reports it)."""
    timed_out: bool
    stdout: bytes
    """Captured output; empty when ``stdout`` was redirected to a file."""
    stderr: bytes


def run_bounded(args: Sequence[str], *, timeout: float, env: Mapping[str, str] | None = None,
                cwd: Path | None = None, stdout: IO[bytes] | int = subprocess.PIPE,
                stderr: IO[bytes] | int = subprocess.PIPE,
                preexec_fn: Callable[[], None] | None = None) -> Finished:
    """Run ``args`` (never through a shell) for at most ``timeout`` seconds of wall-clock time."""
    # preexec_fn is unsafe in a threaded process only when it takes a lock another thread may
    # have held at fork time; the one caller passes a function making system calls only.
    with subprocess.Popen(list(args), stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                          env=dict(env) if env is not None else None, cwd=cwd,
                          start_new_session=True,
                          preexec_fn=preexec_fn) as process:  # noqa: PLW1509
        timed_out = False
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(process.pid)
            out, err = process.communicate()
        finally:
            # Descendants that outlived the child (a daemonised helper, a process the loaded
            # code started) must not survive it.
            _kill_group(process.pid)
    return Finished(process.returncode, timed_out, out or b"", err or b"")


def _kill_group(group: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is empty
        os.killpg(group, signal.SIGKILL)


def tail(output: bytes, limit: int = 2000) -> str:
    """The end of a process's output as text: where the reason for a failure usually is."""
    text = output.decode("utf-8", errors="replace").strip()
    return text if len(text) <= limit else "…" + text[-limit:]
