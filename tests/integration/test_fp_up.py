"""`fp up --demo` as a newcomer runs it: features served, a second apply rolls out, and
Ctrl-C leaves no process, port or temporary folder behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import httpx
import pytest

from fp.local.base import free_port, port_open
from tests.services import wait_for

pytestmark = pytest.mark.flink

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "features"


def _processes() -> dict[int, tuple[int, str]]:
    """pid → (parent pid, command line) of every process."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        table[int(entry.name)] = (int(stat.rsplit(")", 1)[1].split()[1]), command)
    return table


def started_by(root: int) -> set[int]:
    """Descendants of ``root``, and daemons that left its tree but run from its folders."""
    table = _processes()
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, (parent, _) in table.items() if parent in frontier} - found
        found |= frontier
    return found | {pid for pid, (_, command) in table.items() if "fp-up-" in command}


def alive(pids: set[int]) -> set[int]:
    return pids & set(_processes())


def test_fp_up_demo_serves_features_rolls_out_and_stops_cleanly(tmp_path: Path) -> None:
    registry_port, serving_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FP_")}
    before = set(Path(tempfile.gettempdir()).glob("fp-up-*"))
    up = subprocess.Popen([sys.executable, "-m", "fp.cli", "up", "--demo", "--registry-port",
                           str(registry_port), "--serving-port", str(serving_port)], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(iter(up.stdout.readline, "")),
                              daemon=True)
    reader.start()
    try:
        wait_for(lambda: any("press Ctrl-C" in line for line in output) or up.poll() is not None,
                 "fp up to start", timeout=240)
        assert up.poll() is None, "".join(output)
        serving = f"http://127.0.0.1:{serving_port}"

        def served() -> bool:
            response = httpx.get(f"{serving}/v1/features/user_transactions/u1", timeout=5)
            return response.status_code == 200 and response.json()["found"]

        wait_for(served, "the demo's features to be served", timeout=240)

        repo = tmp_path / "features"
        repo.mkdir()
        for file in EXAMPLES.iterdir():
            (repo / file.name).write_text(file.read_text().replace("window: 1m", "window: 2m", 1))
        cli_env = {**env, "FP_REGISTRY_URL": f"http://127.0.0.1:{registry_port}"}
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
        children = started_by(up.pid)
        up.send_signal(signal.SIGINT)
        up.wait(timeout=90)
    text = "".join(output)
    assert up.returncode == 0, text[-3000:]
    assert "fp up: stopped" in text
    assert len(children) >= 8, "postgres, redis, tansu, 2 JVMs and the platform processes"
    wait_for(lambda: not alive(children), "every process fp up started to exit", timeout=30)
    ports = {registry_port, serving_port, *map(int, re.findall(r"started .* at \S*:(\d+)", text))}
    assert len(ports) >= 6
    assert not [port for port in ports if port_open(port)]
    assert set(Path(tempfile.gettempdir()).glob("fp-up-*")) == before
