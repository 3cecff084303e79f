"""`fp up` as a newcomer runs it: features served, a second apply rolls out, and Ctrl-C
leaves no process, port or temporary folder behind — nor does SIGKILL, or SIGINT when the
shell started it with SIGINT ignored."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from fp.local.base import free_port, port_open
from fp.local.run_record import runs_dir
from tests.services import wait_for

pytestmark = pytest.mark.flink

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "features"


def _processes() -> dict[int, tuple[int, str]]:
    """pid → (parent pid, command line) of every live process (zombies are dead)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        state, parent = stat.rsplit(")", 1)[1].split()[:2]
        if state != "Z":
            table[int(entry.name)] = (int(parent), command)
    return table


def alive(pids: set[int]) -> set[int]:
    return pids & set(_processes())


@dataclass
class FpUp:
    """A running `fp up` and what it printed so far."""

    process: subprocess.Popen[str]
    output: list[str]
    registry_port: int
    serving_port: int
    ingest_port: int

    @property
    def text(self) -> str:
        return "".join(self.output)

    def wait_until_up(self) -> None:
        wait_for(lambda: "press Ctrl-C" in self.text or self.process.poll() is not None,
                 "fp up to start", timeout=240)
        assert self.process.poll() is None, self.text

    def work_dir(self) -> Path:
        record = json.loads((runs_dir() / f"{self.process.pid}.json").read_text())
        return Path(record["folders"][0])

    def started(self) -> set[int]:
        """Its descendants, and any process that runs from its work folder."""
        table = _processes()
        found: set[int] = set()
        frontier = {self.process.pid}
        while frontier:
            frontier = {pid for pid, (parent, _) in table.items() if parent in frontier} - found
            found |= frontier
        work_dir = str(self.work_dir())
        return found | {pid for pid, (_, command) in table.items() if work_dir in command}

    def ports(self) -> set[int]:
        started_at = map(int, re.findall(r"started .* at \S*:(\d+)", self.text))
        return {self.registry_port, self.serving_port, self.ingest_port, *started_at}


def start_fp_up(*args: str, env: dict[str, str], sigint_ignored: bool = False) -> FpUp:
    registry_port, serving_port, ingest_port = free_port(), free_port(), free_port()
    command = [sys.executable, "-m", "fp.cli", "up", *args, "--registry-port",
               str(registry_port), "--serving-port", str(serving_port), "--ingest-port",
               str(ingest_port)]
    if sigint_ignored:
        # As a shell starts a script's background job; exec keeps the disposition.
        command = ["sh", "-c", "trap '' INT; exec \"$@\"", "sh", *command]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    output: list[str] = []
    threading.Thread(target=lambda: output.extend(iter(process.stdout.readline, "")),
                     daemon=True).start()
    return FpUp(process, output, registry_port, serving_port, ingest_port)


def _env_without_services() -> dict[str, str]:
    """Our environment minus the FP_* variables, so `fp up` starts every service itself."""
    return {k: v for k, v in os.environ.items() if not k.startswith("FP_")}


def _fp_up_folders() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("fp-up-*"))


def test_fp_up_demo_serves_features_rolls_out_and_stops_cleanly(tmp_path: Path) -> None:
    env = _env_without_services()
    before = _fp_up_folders()
    up = start_fp_up("--demo", env=env)
    try:
        up.wait_until_up()
        serving = f"http://127.0.0.1:{up.serving_port}"

        def served() -> bool:
            response = httpx.get(f"{serving}/v1/features/user_transactions/u1", timeout=5)
            return response.status_code == 200 and response.json()["found"]

        wait_for(served, "the demo's features to be served", timeout=240)

        def refused_at_the_door() -> bool:
            metrics = httpx.get(f"http://127.0.0.1:{up.ingest_port}/metrics", timeout=5).text
            return bool(re.search(r'fp_ingest_rejected_events_total\{reason="\w+",'
                                  r'source="transactions"\} [1-9]', metrics))

        # The demo's payments come through the ingest API, 1 in 50 breaking the contract.
        wait_for(refused_at_the_door, "the demo's broken payments to be refused", timeout=60)

        repo = tmp_path / "features"
        repo.mkdir()
        for file in EXAMPLES.iterdir():
            (repo / file.name).write_text(file.read_text().replace("window: 1m", "window: 2m", 1))
        # What fp up prints for other shells is what the commands there need.
        printed = re.search(r"other shells: export (.+)", up.text)
        assert printed, up.text
        cli_env = {**env, **dict(item.split("=", 1) for item in printed[1].split())}
        assert cli_env["FP_REGISTRY_URL"] == f"http://127.0.0.1:{up.registry_port}"
        applied = subprocess.run([sys.executable, "-m", "fp.cli", "apply", str(repo)],
                                 env=cli_env, capture_output=True, text=True, check=False)
        assert applied.returncode == 0, applied.stderr

        def rolled_out() -> bool:
            status = subprocess.run([sys.executable, "-m", "fp.cli", "status"], env=cli_env,
                                    capture_output=True, text=True, check=False).stdout
            return bool(re.search(r"feature_view\s+user_transactions\s+2\s+2\s+v2 completed",
                                  status))

        wait_for(rolled_out, "v2 to roll out blue/green", timeout=240)
    finally:
        children = up.started()
        up.process.send_signal(signal.SIGINT)
        up.process.wait(timeout=90)
    assert up.process.returncode == 0, up.text[-3000:]
    assert "fp up: stopped" in up.text
    assert len(children) >= 8, "postgres, redis, tansu, 2 JVMs and the platform processes"
    wait_for(lambda: not alive(children), "every process fp up started to exit", timeout=30)
    assert len(up.ports()) >= 6
    assert not [port for port in up.ports() if port_open(port)]
    assert _fp_up_folders() == before


def test_sigkill_takes_every_process_along_and_the_next_fp_up_removes_the_folders() -> None:
    env = _env_without_services()
    up = start_fp_up(env=env)
    try:
        up.wait_until_up()
        work_dir = up.work_dir()
        children = up.started()
    finally:
        up.process.kill()
        up.process.wait(timeout=10)
    assert len(children) >= 8, "postgres, redis, tansu, 2 JVMs and the platform processes"
    # The kernel kills each child as its parent dies; PostgreSQL's backends follow their
    # postmaster.  Nothing is left to wait for.
    wait_for(lambda: not alive(children), "every process fp up started to die", timeout=10)
    assert not [pid for pid, (_, command) in _processes().items() if str(work_dir) in command]
    assert not [port for port in up.ports() if port_open(port)]
    # The folders are left by design: only a later fp up can remove them.
    assert work_dir.is_dir()

    later = start_fp_up(env=env)
    try:
        wait_for(lambda: "fp up: started" in later.text or later.process.poll() is not None,
                 "the later fp up to start something", timeout=60)
    finally:
        later.process.send_signal(signal.SIGINT)
        later.process.wait(timeout=60)
    assert later.process.returncode == 0, later.text
    assert "removed what a killed fp up left: " in later.text
    assert str(work_dir) in later.text
    assert not work_dir.exists()
    assert not (runs_dir() / f"{up.process.pid}.json").exists()


def test_sigint_stops_fp_up_even_when_started_with_sigint_ignored() -> None:
    before = _fp_up_folders()
    up = start_fp_up(env=_env_without_services(), sigint_ignored=True)
    try:
        up.wait_until_up()
        children = up.started()
    finally:
        up.process.send_signal(signal.SIGINT)
        up.process.wait(timeout=90)
    assert up.process.returncode == 0, up.text[-3000:]
    assert "fp up: stopping" in up.text and "fp up: stopped" in up.text
    wait_for(lambda: not alive(children), "every process fp up started to exit", timeout=30)
    assert not [port for port in up.ports() if port_open(port)]
    assert _fp_up_folders() == before
    assert not (runs_dir() / f"{up.process.pid}.json").exists()
