"""Loading a pushed features repository in a sandbox.

A features repository may hold Python, which the loader executes: code pushed by anyone with
write access to the repository must not read the registry's secrets, reach the network, touch
the host's files or outlive the load.  :class:`SandboxedLoader` therefore runs
``python -m registry.repo_loader`` under bubblewrap (``bwrap``), in namespaces of its own:

* a mount namespace holding only read-only mounts: ``/usr`` (and ``/bin``, ``/lib``,
  ``/lib64``), the Python installation, the platform's packages the loader imports, and the
  exported copy of the pushed folder.  No ``/etc``, no home folder, no ``/tmp``, no host
  ``/proc``: nothing of the registry can be read, and no file can be written anywhere;
* a network namespace: no interface but its own loopback;
* a user namespace in which the loader is uid/gid 65534 without capabilities;
* a PID namespace whose pid 1 is bwrap's reaper.  When the loader exits, or at the wall-clock
  deadline, or when the registry thread waiting for it dies, pid 1 dies and the kernel kills
  every process left in the namespace, those that called ``setsid()`` included;
* an environment of four variables (``PATH``, ``HOME``, ``LANG``, ``PYTHONPATH``), given to
  bwrap itself too: its pid 1 is visible inside, with its ``/proc/1/environ``;
* resource limits set inside the user namespace before any repository code runs: CPU time,
  address space, processes, open files, file size (the answer on stdout and stderr is the only
  thing it can write), no core dumps.

Where bwrap is missing or fails its self-check (the loader run in the sandbox on an empty
folder), Python definitions are refused and YAML/JSON are still loaded, in a child process with
the same environment and limits but no namespaces: parsing them runs no repository code.
``FP_WEBHOOK_PYTHON=off`` refuses Python definitions in every case.  See docs/webhooks.md,
"The definitions loader's sandbox", and docs/security.md.
"""

from __future__ import annotations

import ctypes
import functools
import json
import logging
import resource
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import registry
from core.errors import RepositoryLoadError
from core.settings import WEBHOOK_PYTHON, WebhookPython
from registry.repo_loader import definition_files
from registry.webhooks.processes import Finished, run_bounded, tail

logger = logging.getLogger(__name__)

# The folder holding the platform's packages, so the child imports the very code (SDK and
# loader) the registry itself runs, installed or not; only the packages the loader imports are
# mounted in the sandbox, not the rest of a source checkout.
_CODE_ROOT = Path(registry.__file__).resolve().parent.parent
_LOADER_PACKAGES = ("core", "registry")
_SYSTEM_FOLDERS = ("/usr", "/bin", "/lib", "/lib64")
_SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
_SANDBOX_ID = 65534  # "nobody"
_HOME = "/nonexistent"  # nobody's home by convention: there is nothing to read or write
_CHECKOUT = "/checkout"

# Resolved here, in the parent: between fork and exec a child may not load libraries.
_PR_SET_PDEATHSIG = 1
_prctl: Callable[..., int] | None = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)

# The child's first code, before any of the repository's.  The limits are set there rather
# than before exec because RLIMIT_NPROC counts the processes of a uid *in a user namespace*:
# set inside the sandbox's namespace it counts the sandbox's processes only, while set on bwrap
# it would count every process of the registry's user.  The sandbox's uid 65534 is the
# registry's user outside, and the kernel never applies RLIMIT_NPROC to root: for a registry
# running as root the process limit does not bind, and a fork bomb is stopped by the CPU and
# wall-clock limits and the PID namespace's end instead (docs/security.md).
# bwrap adds PWD to the environment; it is dropped so the loader sees exactly the variables
# of _loader_environment, sandboxed or not.
_ENTRY = """\
import os, resource, sys
os.environ.pop("PWD", None)
for limit, soft, hard in {rlimits!r}:
    resource.setrlimit(limit, (soft, hard))
from registry.repo_loader import main
sys.exit(main(sys.argv[1:]))
"""


@dataclass(frozen=True)
class SandboxLimits:
    wall_seconds: float = 30.0
    """Wall-clock time for the whole load, sandbox and interpreter start included."""
    cpu_seconds: int = 30
    """Per process."""
    memory_bytes: int = 1 << 30
    """Address space per process; the interpreter with the SDK needs well under 100 MiB."""
    file_bytes: int = 64 << 20
    """Largest output the loader may write on stdout or stderr (a write beyond fails)."""
    processes: int = 16
    """Processes and threads in the sandbox, bwrap's pid 1 and the interpreter included."""
    open_files: int = 64

    def rlimits(self, *, in_user_namespace: bool) -> list[tuple[int, int, int]]:
        """``(resource, soft, hard)`` for the child.  RLIMIT_NPROC only in a user namespace:
        outside one it would count the registry user's own processes and threads."""
        limits = [
            # The soft limit sends SIGXCPU; the hard one, a second later, SIGKILL.
            (resource.RLIMIT_CPU, self.cpu_seconds, self.cpu_seconds + 1),
            (resource.RLIMIT_AS, self.memory_bytes, self.memory_bytes),
            (resource.RLIMIT_FSIZE, self.file_bytes, self.file_bytes),
            (resource.RLIMIT_NOFILE, self.open_files, self.open_files),
            (resource.RLIMIT_CORE, 0, 0),
        ]
        if in_user_namespace:
            limits.append((resource.RLIMIT_NPROC, self.processes, self.processes))
        return limits


@dataclass(frozen=True)
class _Launch:
    args: list[str]
    cwd: Path
    in_sandbox: bool


class SandboxedLoader:
    def __init__(self, limits: SandboxLimits | None = None,
                 python_definitions: WebhookPython = "sandboxed", bwrap: str = "bwrap") -> None:
        self.limits = limits or SandboxLimits()
        self.python_definitions = python_definitions
        self.bwrap = bwrap
        self.bwrap_path = shutil.which(bwrap)

    def load(self, checkout: Path, folder: str) -> list[dict[str, Any]]:
        """The definitions' JSON of ``checkout/folder``, as ``python -m registry.repo_loader``
        prints it; the loader runs in (a copy of) ``checkout``, so its messages name files as
        the repository does (``features/views.yaml:3:5: …``).

        Raises RepositoryLoadError with the loader's own message, saying which limit the load
        exceeded, or saying why Python definitions are refused (naming FP_WEBHOOK_PYTHON).
        """
        self._refuse_python_unless_sandboxed(checkout, folder)
        if self.bwrap_path is not None and self.sandbox_unavailable is None:
            return self._run(self._in_sandbox(self.bwrap_path, checkout, folder))
        return self._run(self._in_child(checkout, folder))

    @functools.cached_property
    def sandbox_unavailable(self) -> str | None:
        """Why the sandbox cannot run here, or None: the self-check runs the loader in it on an
        empty folder, once per loader."""
        if self.bwrap_path is None:
            problem: str | None = f"{self.bwrap} is not installed"
        else:
            with tempfile.TemporaryDirectory(prefix="fp-sandbox-check-") as empty:
                try:
                    found = self._run(self._in_sandbox(self.bwrap_path, Path(empty), "."))
                except RepositoryLoadError as error:
                    problem = f"its self-check failed: {error}"
                else:
                    problem = None if found == [] else f"its self-check found {found!r}"
        if problem is not None:
            logger.warning("the definitions loader's sandbox is unavailable (%s): Python "
                           "definitions in pushes are refused", problem)
        return problem

    def _refuse_python_unless_sandboxed(self, checkout: Path, folder: str) -> None:
        root = checkout / folder
        python_files = [Path(folder, file.relative_to(root)) for file in
                        (definition_files(root) if root.is_dir() else [])
                        if file.suffix == ".py"]
        if not python_files:
            return
        if self.python_definitions == "off":
            raise RepositoryLoadError(
                f"{python_files[0]}: Python definitions in pushes are refused "
                f"({WEBHOOK_PYTHON.name}=off): write them in YAML or JSON, or set "
                f"{WEBHOOK_PYTHON.name}=sandboxed")
        if self.sandbox_unavailable is not None:
            raise RepositoryLoadError(
                f"{python_files[0]}: Python definitions in pushes run only in the loader's "
                f"sandbox, which is unavailable here ({self.sandbox_unavailable}): install "
                f"bubblewrap, or set {WEBHOOK_PYTHON.name}=off to refuse them and apply YAML "
                "and JSON only")

    def _in_sandbox(self, bwrap: str, checkout: Path, folder: str) -> _Launch:
        system = [arg for system_folder in _SYSTEM_FOLDERS
                  for arg in ("--ro-bind-try", system_folder, system_folder)]
        platform = [arg for folder in (*dict.fromkeys([sys.base_prefix, sys.prefix]),
                                       *(str(_CODE_ROOT / package)
                                         for package in _LOADER_PACKAGES))
                    for arg in ("--ro-bind", folder, folder)]
        return _Launch([
            bwrap, "--unshare-all", "--unshare-user", "--die-with-parent", "--new-session",
            "--uid", str(_SANDBOX_ID), "--gid", str(_SANDBOX_ID), "--cap-drop", "ALL", *system,
            *platform, "--ro-bind", str(checkout), _CHECKOUT, "--chdir", _CHECKOUT,
            "--proc", "/proc", "--dev", "/dev", "--remount-ro", "/dev", "--remount-ro", "/",
            "--", *self._python(folder, in_user_namespace=True)], checkout, in_sandbox=True)

    def _in_child(self, checkout: Path, folder: str) -> _Launch:
        return _Launch(self._python(folder, in_user_namespace=False), checkout, in_sandbox=False)

    def _python(self, folder: str, *, in_user_namespace: bool) -> list[str]:
        rlimits = self.limits.rlimits(in_user_namespace=in_user_namespace)
        # -P: the checkout is not put on sys.path ahead of the platform's code; -s: no user
        # site-packages.
        return [sys.executable, "-B", "-P", "-s", "-c", _ENTRY.format(rlimits=rlimits), folder]

    def _run(self, launch: _Launch) -> list[dict[str, Any]]:
        with tempfile.TemporaryDirectory(prefix="fp-loader-") as scratch, \
                Path(scratch, "stdout").open("w+b") as out, \
                Path(scratch, "stderr").open("w+b") as err:
            finished = run_bounded(launch.args, timeout=self.limits.wall_seconds,
                                   env=_loader_environment(), cwd=launch.cwd, stdout=out,
                                   stderr=err, preexec_fn=_die_with_the_registry)
            out.seek(0)
            err.seek(0)
            # Both are capped by RLIMIT_FSIZE, so reading them whole is bounded.
            return self._result(finished, _signal_of(finished, launch), out.read(), err.read())

    def _result(self, finished: Finished, killed_by: int | None, stdout: bytes,
                stderr: bytes) -> list[dict[str, Any]]:
        limits = self.limits
        if finished.timed_out:
            raise RepositoryLoadError(f"loading the definitions took longer than "
                                      f"{limits.wall_seconds:g} s and was stopped")
        stopped_by = {
            signal.SIGXCPU.value: f"used more than {limits.cpu_seconds} s of CPU time",
            signal.SIGKILL.value: f"was killed (over {limits.cpu_seconds} s of CPU time or out of "
                            "memory)",
        }.get(killed_by or 0)
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


def _loader_environment() -> dict[str, str]:
    """Everything the loader's processes are told: nothing of the registry's own environment."""
    return {"PATH": _SAFE_PATH, "HOME": _HOME, "LANG": "C.UTF-8",
            "PYTHONPATH": str(_CODE_ROOT)}


def _die_with_the_registry() -> None:
    """Runs in the child between fork and exec: only a system call, no imports."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _signal_of(finished: Finished, launch: _Launch) -> int | None:
    """The signal that killed the loader: bwrap reports it as exit status 128 + signal."""
    if finished.returncode < 0:
        return -finished.returncode
    if launch.in_sandbox and finished.returncode > 128:
        return finished.returncode - 128
    return None


def _json_object(output: bytes) -> dict[str, Any]:
    try:
        value = json.loads(output)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}

