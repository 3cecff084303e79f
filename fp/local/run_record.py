"""A file naming what a running ``fp up`` started, so that the next one removes it if this
one was killed before it could.

The kernel kills each process ``fp up`` starts when ``fp up`` dies (:func:`owned_child`), but
not their own children (a Flink job's Python worker, a PostgreSQL backend, a deployer's
submitter), and nothing removes the temporary folders after a SIGKILL.  So ``fp up`` keeps a
record — its own identity, the process groups it started, its folders — in a private folder,
rewritten as it starts things and deleted once it has stopped them.  A record whose owner
is gone is a leftover: :func:`remove_leftovers` kills its process groups that are provably
the same ones and removes its folders.  Nothing else is ever touched: not other running
``fp up`` instances, not Flink clusters or servers started by anyone else.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from core.errors import InfrastructureError


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name; None: no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name in parentheses may itself hold spaces and parentheses.
    return text.rpartition(")")[2].split()


# Indexes in _stat_fields, i.e. proc(5)'s field numbers minus 3.
_PARENT, _PROCESS_GROUP, _START_TIME = 1, 2, 19


def _processes() -> Iterator[tuple[int, list[str]]]:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))) is not None:
            yield int(entry.name), fields


@dataclass(frozen=True)
class ProcessIdentity:
    """A process, told apart from a later one that gets its pid number: the kernel reuses pid
    numbers but not the pair (pid, start time in clock ticks since boot)."""

    pid: int
    start_time: int

    @classmethod
    def of(cls, pid: int) -> ProcessIdentity | None:
        fields = _stat_fields(pid)
        return None if fields is None else cls(pid, int(fields[_START_TIME]))

    def alive(self) -> bool:
        return ProcessIdentity.of(self.pid) == self


def runs_dir() -> Path:
    """The folder of records: this user's own, since a record says what to kill and delete."""
    folder = Path(tempfile.gettempdir()) / f"fp-runs-{os.geteuid()}"
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o700)
    status = folder.lstat()
    # In a shared /tmp anyone could have made the folder first, to plant records in it.
    if (not stat.S_ISDIR(status.st_mode) or status.st_uid != os.geteuid()
            or status.st_mode & 0o077):
        raise InfrastructureError(f"{folder} is not a folder that only this user can write to")
    return folder


class RunRecord:
    """The record of this process, an ``fp up``: create it before starting anything, save it
    after each start, and remove it once everything is stopped."""

    def __init__(self) -> None:
        owner = ProcessIdentity.of(os.getpid())
        assert owner is not None  # this process is running
        self._owner = owner
        self._path = runs_dir() / f"{owner.pid}.json"

    def save(self, folders: list[Path]) -> None:
        """Record ``folders`` and the process groups this process started: its children
        that lead their own group (every server it starts does, see ``owned_child``)."""
        groups = [ProcessIdentity(pid, int(fields[_START_TIME])) for pid, fields in _processes()
                  if int(fields[_PARENT]) == self._owner.pid and int(fields[_PROCESS_GROUP]) == pid]
        content = {"owner": _as_json(self._owner), "folders": [str(folder) for folder in folders],
                   "process_groups": [_as_json(group) for group in groups]}
        # Written aside and renamed, so a kill mid-write never leaves half a record.
        draft = self._path.with_suffix(".draft")
        draft.write_text(json.dumps(content))
        draft.replace(self._path)

    def remove(self) -> None:
        self._path.unlink(missing_ok=True)


def _as_json(process: ProcessIdentity) -> list[int]:
    return [process.pid, process.start_time]


def remove_leftovers() -> list[str]:
    """Remove what every ``fp up`` that is gone left behind; say what was removed."""
    removed = []
    for path in sorted(runs_dir().glob("*.json")):
        content = json.loads(path.read_text())
        owner = ProcessIdentity(*content["owner"])
        if owner.alive():
            continue  # another fp up, still running
        removed += [f"process group {pgid}" for pgid, start_time in content["process_groups"]
                    if _kill_group_if_left_by(ProcessIdentity(pgid, start_time))]
        for folder in map(Path, content["folders"]):
            if folder.exists():
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(str(folder))
        path.unlink()
    return removed


def _kill_group_if_left_by(group: ProcessIdentity) -> bool:
    """SIGKILL the process group ``group`` leads if it is still the one a gone ``fp up`` started."""
    leader = ProcessIdentity.of(group.pid)
    if leader is not None and leader != group:
        return False  # the pid number now belongs to another process
    # A group that lost its leader is still the same one: the kernel reuses no pid number
    # while a process group is named after it.
    try:
        os.killpg(group.pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True
