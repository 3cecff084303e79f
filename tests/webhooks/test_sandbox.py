"""The sandboxed loader: limits, environment, process clean-up (no other service)."""

from __future__ import annotations

import json
import shutil
import textwrap
import time
from pathlib import Path

import pytest

from core.errors import RepositoryLoadError
from registry.webhooks.sandbox import SandboxedLoader, SandboxLimits
from tests.webhooks.support import EXAMPLES

FAST = SandboxLimits(wall_seconds=5, cpu_seconds=2, memory_bytes=512 << 20)
SECRETS = {"FP_DATABASE_URL": "postgresql+psycopg://fp:db-password@db/fp",
           "FP_WEBHOOK_SECRET": "webhook-secret", "FP_API_TOKENS": "api-token",
           "AWS_SECRET_ACCESS_KEY": "aws-secret"}


def features(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / "features" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "features" / name).write_text(textwrap.dedent(text).lstrip())
    return root


def load_error(root: Path, limits: SandboxLimits = FAST) -> str:
    with pytest.raises(RepositoryLoadError) as caught:
        SandboxedLoader(limits).load(root, "features")
    return str(caught.value)


def test_loads_the_example_repository(tmp_path):
    shutil.copytree(EXAMPLES, tmp_path / "features")
    definitions = SandboxedLoader(FAST).load(tmp_path, "features")
    assert [d["name"] for d in definitions] == [
        "user", "merchant", "transactions", "user_transactions", "merchant_transactions",
        "user_ratios"]


def test_the_loaders_message_names_the_file_as_in_the_repository(tmp_path):
    features(tmp_path, {"views.yaml": "- kind: entity\n  name: [unclosed\n"})
    assert load_error(tmp_path).startswith("features/views.yaml:")


def test_definitions_see_none_of_the_registrys_environment(tmp_path, monkeypatch):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    features(tmp_path, {"leak.py": """
        import json, os
        from registry.sdk import Entity
        leak = Entity("leak", join_keys=["k"], description=json.dumps(dict(os.environ)))
        """})
    (definition,) = SandboxedLoader(FAST).load(tmp_path, "features")
    seen = json.loads(definition["description"])
    assert set(seen) <= {"PATH", "HOME", "LANG", "PYTHONPATH"}
    assert not any(secret in definition["description"] for secret in SECRETS.values())


def test_a_busy_loop_is_stopped_at_the_cpu_limit(tmp_path):
    features(tmp_path, {"loop.py": "while True:\n    pass\n"})
    started = time.monotonic()
    message = load_error(tmp_path)
    assert time.monotonic() - started < 4
    # On a busy machine the wall-clock limit (5 s) may come first; either stops it.
    assert message.endswith("and was stopped"), message


def test_a_sleeping_load_is_stopped_at_the_wall_clock_limit(tmp_path):
    features(tmp_path, {"sleep.py": "import time\ntime.sleep(600)\n"})
    started = time.monotonic()
    assert "took longer than 2 s and was stopped" in load_error(
        tmp_path, SandboxLimits(wall_seconds=2, cpu_seconds=10))
    assert time.monotonic() - started < 4


def test_processes_the_definitions_start_are_killed_with_them(tmp_path):
    pid_file = tmp_path / "child.pid"
    features(tmp_path, {"spawn.py": f"""
        import pathlib, subprocess, time
        child = subprocess.Popen(["sleep", "600"])
        pathlib.Path({str(pid_file)!r}).write_text(str(child.pid))
        time.sleep(600)
        """})
    load_error(tmp_path, SandboxLimits(wall_seconds=2, cpu_seconds=10))
    pid = int(pid_file.read_text())
    time.sleep(0.2)
    assert not _running(pid)


def test_memory_is_limited(tmp_path):
    features(tmp_path, {"hog.py": "hog = bytearray(2 * 1024 ** 3)\n"})
    assert "features/hog.py:1: MemoryError" in load_error(tmp_path)


def test_output_is_limited(tmp_path):
    features(tmp_path, {"chatty.py": "import sys\nsys.stderr.write('x' * (8 << 20))\n"})
    message = load_error(tmp_path, SandboxLimits(wall_seconds=5, cpu_seconds=2,
                                                 file_bytes=1 << 20))
    # Python ignores SIGXFSZ: the write fails and the loader reports it.
    assert message == "features/chatty.py:2: OSError: [Errno 27] File too large"


def test_a_crash_of_the_interpreter_is_reported(tmp_path):
    features(tmp_path, {"crash.py": "import os\nos._exit(3)\n"})
    assert "exit status 3" in load_error(tmp_path)


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie waits for a reaper that may be slow)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
