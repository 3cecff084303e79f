"""Loading a pushed features repository in a separate process with limits.

A features repository may hold Python, which the loader executes; code pushed by anyone with
write access to the repository must not read the platform's secrets or hold the registry
hostage.  :class:`SandboxedLoader` therefore runs ``python -m registry.repo_loader`` as a child
process that:

* gets an environment of its own — ``PATH``, ``HOME`` (an empty scratch folder), ``LANG`` and
  ``PYTHONPATH`` only — so the database URL, API tokens and webhook secret are not in it;
* runs under ``RLIMIT_AS`` (memory), ``RLIMIT_CPU`` (CPU time), ``RLIMIT_FSIZE`` (output and
  files written) and no core dumps, set between fork and exec;
* is killed, with every process it started, when the wall-clock limit passes or when the
  registry thread waiting for it dies;
* answers on stdout with the definitions' canonical JSON, ``{"definitions": [...]}``.

This is a resource boundary and keeps the secrets out of the loader's environment; it is not a
container: the child runs as the registry's user and can read what that user can read, the
registry's ``/proc/<pid>/environ`` included (docs/webhooks.md, "The definitions loader's
sandbox").
"""

from __future__ import annotations

import ctypes
import json
import resource
import signal
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import registry
from core.errors import RepositoryLoadError
from registry.webhooks.processes import Finished, run_bounded, tail

# The folder holding the ``registry`` package, so the child imports the very code (SDK and
# loader) the registry itself runs, installed or not.
_CODE_ROOT = Path(registry.__file__).resolve().parent.parent
_SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"

# Resolved here, in the parent: between fork and exec a child may not load libraries.
_PR_SET_PDEATHSIG = 1
_prctl: Callable[..., int] | None = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)


@dataclass(frozen=True)
class SandboxLimits:
    wall_seconds: float = 30.0
    """Wall-clock time for the whole load, interpreter start included."""
    cpu_seconds: int = 30
    memory_bytes: int = 1 << 30
    """Address space; the interpreter with the SDK needs well under 100 MiB."""
    file_bytes: int = 64 << 20
    """Largest file the child may write, its own output included (a write beyond fails)."""


class SandboxedLoader:
    def __init__(self, limits: SandboxLimits | None = None,
                 python: str = sys.executable) -> None:
        self.limits = limits or SandboxLimits()
        self.python = python

    def load(self, checkout: Path, folder: str) -> list[dict[str, Any]]:
        """The definitions' JSON of ``checkout/folder``, as ``python -m registry.repo_loader``
        prints it; the loader runs in ``checkout``, so its messages name files as the
        repository does (``features/views.yaml:3:5: …``).

        Raises RepositoryLoadError with the loader's own message, or saying which limit the
        load exceeded.
        """
        with tempfile.TemporaryDirectory(prefix="fp-sandbox-") as scratch:
            home = Path(scratch, "home")
            home.mkdir()
            with Path(scratch, "stdout").open("w+b") as out, \
                    Path(scratch, "stderr").open("w+b") as err:
                finished = run_bounded(
                    # -P: the checkout is not put on sys.path ahead of the platform's code.
                    [self.python, "-B", "-P", "-m", "registry.repo_loader", folder],
                    timeout=self.limits.wall_seconds, env=sandbox_environment(home),
                    cwd=checkout, stdout=out, stderr=err, preexec_fn=self._limit_child)
                out.seek(0)
                err.seek(0)
                # Both are capped by RLIMIT_FSIZE, so reading them whole is bounded.
                return self._result(finished, out.read(), err.read())

    def _limit_child(self) -> None:
        """Runs in the child between fork and exec: only system calls, no imports."""
        limits = self.limits
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        # The soft limit sends SIGXCPU; the hard one, a second later, SIGKILL.
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 1))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if _prctl is not None:
            _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)

    def _result(self, finished: Finished, stdout: bytes, stderr: bytes) -> list[dict[str, Any]]:
        limits = self.limits
        if finished.timed_out:
            raise RepositoryLoadError(f"loading the definitions took longer than "
                                      f"{limits.wall_seconds:g} s and was stopped")
        stopped_by = {
            -signal.SIGXCPU: f"used more than {limits.cpu_seconds} s of CPU time",
            -signal.SIGKILL: f"was killed (over {limits.cpu_seconds} s of CPU time or out of "
                             "memory)",
        }.get(finished.returncode)
        if stopped_by:
            raise RepositoryLoadError(f"loading the definitions {stopped_by} and was stopped")
        answer = _json_object(stdout)
        if finished.returncode == 1 and isinstance(answer.get("error"), str):
            raise RepositoryLoadError(answer["error"])
        definitions = answer.get("definitions")
        if finished.returncode != 0 or not isinstance(definitions, list) or \
                not all(isinstance(d, dict) for d in definitions):
            raise RepositoryLoadError(f"loading the definitions failed (exit status "
                                      f"{finished.returncode}): {tail(stderr) or 'no message'}")
        return definitions


def sandbox_environment(home: Path) -> dict[str, str]:
    """Everything the loader's process is told: nothing of the registry's own environment."""
    return {"PATH": _SAFE_PATH, "HOME": str(home), "LANG": "C.UTF-8",
            "PYTHONPATH": str(_CODE_ROOT)}


def _json_object(output: bytes) -> dict[str, Any]:
    try:
        value = json.loads(output)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
