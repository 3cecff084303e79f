"""Each local service starts, serves a real client, and leaves no port or process behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
import redis
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported without __all__
    AdminClient,
    NewTopic,
)

from core.errors import InfrastructureError
from fp.local.base import LocalService, ServerProcess, port_open, running, wait_until
from fp.local.flink import LocalFlink
from fp.local.kafka import LocalKafka
from fp.local.postgres import LocalPostgres, postgres_reachable
from fp.local.redis import LocalRedis
from fp.local.run_record import ProcessIdentity, RunRecord, remove_leftovers, runs_dir
from sinks.flink_jars import KAFKA_JARS, ensure_kafka_connector_jars, flink_python_jar


def _processes() -> Iterator[tuple[int, int, str, str]]:
    """(pid, process group, state, command line) of every process on the machine."""
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # exited meanwhile
        # The command name in parentheses may itself hold spaces and parentheses.
        state, _ppid, pgid = stat.rpartition(")")[2].split()[:3]
        yield int(proc.name), int(pgid), state, cmdline


def _process_groups_mentioning(marker: str) -> set[int]:
    return {pgid for _, pgid, _, cmdline in _processes() if marker in cmdline}


def _live_members(groups: set[int]) -> set[int]:
    return {pid for pid, pgid, state, _ in _processes() if pgid in groups and state != "Z"}


def _port(url: str) -> int:
    port = urlsplit(url if "://" in url else f"tcp://{url}").port
    assert port is not None
    return port


def _assert_stops_cleanly(service: LocalService, marker: str) -> None:
    """Stop ``service`` and check that its port is closed and its whole process tree is gone."""
    port = _port(service.url)
    groups = _process_groups_mentioning(marker)
    service.stop()
    assert groups, f"no process mentioned {marker!r}: the check below would prove nothing"
    assert not port_open(port)
    assert not _live_members(groups)


def test_postgres_serves_sql_then_stops_cleanly(tmp_path: Path) -> None:
    postgres = LocalPostgres(tmp_path)
    postgres.start()
    try:
        assert postgres_reachable(postgres.url)
        with psycopg.connect(postgres.url.replace("+psycopg", "")) as connection:
            connection.execute("CREATE TABLE feature (name text PRIMARY KEY, value int)")
            connection.execute("INSERT INTO feature VALUES ('clicks', 3)")
            assert connection.execute("SELECT name, value FROM feature").fetchall() == [
                ("clicks", 3)
            ]
    finally:
        _assert_stops_cleanly(postgres, f"--port={_port(postgres.url)}")
    assert not postgres_reachable(postgres.url)
    assert (tmp_path / "postgres.log").is_file()


def test_redis_serves_hashes_then_stops_cleanly() -> None:
    local_redis = LocalRedis()
    local_redis.start()
    try:
        with redis.Redis.from_url(local_redis.url) as client:
            client.hset("user:1", mapping={"clicks": "3", "views": "7"})
            assert client.hgetall("user:1") == {b"clicks": b"3", b"views": b"7"}
    finally:
        _assert_stops_cleanly(local_redis, f"127.0.0.1:{_port(local_redis.url)}")


def test_start_is_idempotent(tmp_path: Path) -> None:
    local_redis = LocalRedis(tmp_path)
    local_redis.start()
    try:
        url = local_redis.url
        local_redis.start()
        assert local_redis.url == url
        assert len(_process_groups_mentioning(f"127.0.0.1:{_port(url)}")) == 1
    finally:
        local_redis.stop()


def test_kafka_delivers_a_message_then_stops_cleanly() -> None:
    kafka = LocalKafka()
    kafka.start()
    try:
        admin = AdminClient({"bootstrap.servers": kafka.url})
        admin.create_topics([NewTopic("clicks", num_partitions=1)])["clicks"].result(timeout=10)
        delivered = []
        producer = Producer({"bootstrap.servers": kafka.url})
        producer.produce(
            "clicks", key=b"user:1", value=b"3", on_delivery=lambda e, m: delivered.append((e, m))
        )
        assert producer.flush(10) == 0
        [(error, message)] = delivered
        assert error is None
        consumer = Consumer({"bootstrap.servers": kafka.url, "group.id": "test"})
        partition, offset = message.partition(), message.offset()
        assert partition is not None and offset is not None
        consumer.assign([TopicPartition("clicks", partition, offset)])
        received = consumer.poll(10)
        consumer.close()
        assert received is not None and received.error() is None
        assert (received.key(), received.value()) == (b"user:1", b"3")
    finally:
        _assert_stops_cleanly(kafka, f"--listener-url=tcp://{kafka.url}")


def test_running_stops_started_services_in_reverse_even_on_error() -> None:
    calls: list[str] = []

    class Recorder:
        url = ""

        def __init__(self, name: str, fails: bool = False) -> None:
            self.name = name
            self._fails = fails

        def start(self) -> None:
            calls.append(f"start {self.name}")
            if self._fails:
                raise InfrastructureError(f"{self.name} failed")

        def stop(self) -> None:
            calls.append(f"stop {self.name}")

        @property
        def temporary_folders(self) -> list[Path]:
            return []

    with pytest.raises(RuntimeError), running(Recorder("a"), Recorder("b")):
        raise RuntimeError("test body failed")
    assert calls == ["start a", "start b", "stop b", "stop a"]

    calls.clear()
    with pytest.raises(InfrastructureError), running(Recorder("a"), Recorder("b", fails=True)):
        pass
    assert calls == ["start a", "start b", "stop a"]


def test_a_server_that_dies_while_starting_is_reported_with_its_log(tmp_path: Path) -> None:
    server = ServerProcess(["sh", "-c", "echo cannot bind; exit 3"], tmp_path / "server.log")
    server.start()
    with pytest.raises(InfrastructureError, match=r"(?s)code 3.*cannot bind"):
        server.wait_ready(lambda: False, timeout=10, what="the test server")
    server.stop()


def test_a_timeout_is_reported_with_the_log(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("starting\nstill starting\n")
    with pytest.raises(InfrastructureError, match=r"(?s)0.1 s waiting for Godot.*still starting"):
        wait_until(lambda: False, timeout=0.1, what="Godot", log=log)


def test_a_server_deaf_to_sigterm_is_killed_with_its_children(tmp_path: Path) -> None:
    marker = f"sleep {10_000 + os.getpid() % 10_000}"  # unique enough to find our sleeps
    server = ServerProcess(
        ["sh", "-c", f"trap '' TERM; {marker} & {marker}"], tmp_path / "server.log"
    )
    server.start()
    wait_until(lambda: len(_live_members(_process_groups_mentioning(marker))) >= 2, 10, "sleeps")
    groups = _process_groups_mentioning(marker)
    server.stop(signal.SIGTERM, timeout=0.2)
    assert not _live_members(groups)


def test_a_server_dies_with_the_process_that_started_it_even_by_sigkill(tmp_path: Path) -> None:
    starter = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from fp.local.base import ServerProcess;"
         " ServerProcess(['sleep', '1000'], __import__('pathlib').Path(sys.argv[1])).start();"
         " print(flush=True); time.sleep(1000)", tmp_path / "server.log"],
        stdout=subprocess.PIPE)
    assert starter.stdout is not None
    starter.stdout.readline()
    [server] = [pid for pid, *_ in _processes() if _parent(pid) == starter.pid]
    starter.kill()
    starter.wait()
    wait_until(lambda: ProcessIdentity.of(server) is None or _state(server) == "Z", 5,
               "the server to die with its parent")


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]


def test_leftovers_of_a_killed_owner_are_removed_and_nothing_else(tmp_path: Path) -> None:
    left_folder = tmp_path / "left"
    left_folder.mkdir()
    # An owner that records a process group the kernel does not tie to it (as a server's
    # own child would be), then is killed.
    owner = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys, pathlib;"
         " from fp.local.run_record import RunRecord;"
         " subprocess.Popen(['sleep', '1000'], start_new_session=True);"
         " RunRecord().save([pathlib.Path(sys.argv[1])]); print(flush=True); sys.stdin.read()",
         left_folder], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert owner.stdout is not None
    owner.stdout.readline()
    [left] = [pid for pid, *_ in _processes() if _parent(pid) == owner.pid]
    owner.kill()
    owner.wait()
    # A stranger whose pid a forged record names with another start time, and a live owner.
    stranger = subprocess.Popen(["sleep", "1000"], start_new_session=True)
    stranger_identity = ProcessIdentity.of(stranger.pid)
    assert stranger_identity is not None
    forged = runs_dir() / f"forged-{os.getpid()}.json"
    forged.write_text(json.dumps({
        "owner": [owner.pid, 0], "folders": [],
        "process_groups": [[stranger.pid, stranger_identity.start_time + 1]]}))
    live = RunRecord()
    live.save([tmp_path / "live"])
    (tmp_path / "live").mkdir()
    try:
        removed = remove_leftovers()
        assert f"process group {left}" in removed
        assert str(left_folder) in removed
        assert not left_folder.exists()
        wait_until(lambda: ProcessIdentity.of(left) is None or _state(left) == "Z", 5,
                   "the leftover to die")
        assert stranger.poll() is None
        assert f"process group {stranger.pid}" not in removed
        assert not forged.exists()
        assert (tmp_path / "live").is_dir()
        assert (runs_dir() / f"{os.getpid()}.json").is_file()
    finally:
        live.remove()
        stranger.kill()
        stranger.wait()


@pytest.mark.flink
def test_flink_cluster_offers_task_slots_then_stops_cleanly(tmp_path: Path) -> None:
    flink = LocalFlink(tmp_path, task_slots=2)
    flink.start()
    try:
        with urllib.request.urlopen(f"{flink.url}/overview", timeout=10) as response:
            overview = json.load(response)
        assert overview["flink-version"] == "2.0.2"
        assert overview["taskmanagers"] == 1
        assert overview["slots-available"] == 2
        assert (flink.conf_dir / "config.yaml").is_file()
    finally:
        port = _port(flink.url)
        # Both JVMs log into the work dir, so their command lines name it.
        groups = _process_groups_mentioning(str(tmp_path))
        flink.stop()
    assert len(groups) == 2
    assert not port_open(port)
    assert not _live_members(groups)


@pytest.mark.flink
def test_kafka_connector_jars_are_cached(tmp_path: Path) -> None:
    jars = ensure_kafka_connector_jars(tmp_path)
    assert sorted(jar.stem for jar in jars) == sorted(KAFKA_JARS)
    assert ensure_kafka_connector_jars(tmp_path) == jars
    assert flink_python_jar().is_file()
