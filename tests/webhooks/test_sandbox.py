"""The sandboxed loader, under the real bubblewrap: what pushed code can reach, its limits, and
that nothing it starts outlives the load (no other service)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from core.errors import RepositoryLoadError
from registry.api.app import create_registry_app
from registry.service import RegistryService
from registry.store.memory import MemoryRegistryStore
from registry.webhooks import WebhookConfig, Webhooks
from registry.webhooks.memory_inbox import MemoryDeliveryInbox
from registry.webhooks.sandbox import SandboxedLoader, SandboxLimits
from tests.webhooks.support import (
    EXAMPLES,
    SECRET,
    GitRemote,
    finished,
    github_push,
    github_request,
    poll,
)

FAST = SandboxLimits(wall_seconds=5, cpu_seconds=2, memory_bytes=512 << 20, processes=8)
SECRETS = {"FP_DATABASE_URL": "postgresql+psycopg://fp:db-password@db/fp",
           "FP_WEBHOOK_SECRET": "webhook-secret", "FP_API_TOKENS": "api-token",
           "AWS_SECRET_ACCESS_KEY": "aws-secret"}
LOADER_ENVIRONMENT = {"PATH", "HOME", "LANG", "PYTHONPATH"}

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None,
                                reason="bubblewrap is not installed (./dev test installs it)")


def features(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / "features" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "features" / name).write_text(textwrap.dedent(text).lstrip())
    return root


def load_error(root: Path, loader: SandboxedLoader | None = None) -> str:
    with pytest.raises(RepositoryLoadError) as caught:
        (loader or SandboxedLoader(FAST)).load(root, "features")
    return str(caught.value)


@pytest.fixture
def nothing_left_running() -> Iterator[None]:
    """After the test, no process is left in a PID namespace the test created."""
    namespaces_before = {_pid_namespace(pid) for pid in _pids()}
    yield
    deadline = time.monotonic() + 10  # the kernel tears a PID namespace down asynchronously
    while left := [pid for pid in _pids()
                   if _pid_namespace(pid) not in namespaces_before and _running(pid)]:
        assert time.monotonic() < deadline, f"{len(left)} processes still running: {left[:5]}"
        time.sleep(0.1)


def test_loads_the_example_repository(tmp_path: Path) -> None:
    shutil.copytree(EXAMPLES, tmp_path / "features")
    definitions = SandboxedLoader(FAST).load(tmp_path, "features")
    assert [d["name"] for d in definitions] == [
        "user", "merchant", "transactions", "user_transactions", "merchant_transactions",
        "user_ratios"]


def test_the_loaders_message_names_the_file_as_in_the_repository(tmp_path: Path) -> None:
    features(tmp_path, {"views.yaml": "- kind: entity\n  name: [unclosed\n"})
    assert load_error(tmp_path).startswith("features/views.yaml:")


def test_hostile_definitions_reach_no_secret_network_file_or_lasting_process(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nothing_left_running: None) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    outside = tmp_path / "outside.txt"
    marker = f"{os.getpid()}.{time.monotonic_ns() % 1000}"
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        port = listener.getsockname()[1]
        features(tmp_path, {"hostile.py": f"""
            import json, os, socket
            from registry.sdk import Entity

            def attempt(action):
                try:
                    return repr(action())
                except Exception as error:
                    return f"refused: {{type(error).__name__}}: {{error}}"

            def read(path):
                with open(path, "rb") as file:
                    return file.read().decode(errors="replace")

            def write(path):
                with open(path, "w") as file:
                    return file.write("pwned")

            if os.fork() == 0:
                os.setsid()
                if os.fork() == 0:
                    os.execvp("sleep", ["sleep", "{marker}"])
                os._exit(0)
            seen = {{
                "environ": dict(os.environ),
                "parent_environ": attempt(lambda: read(f"/proc/{{os.getppid()}}/environ")),
                "registry_environ": attempt(lambda: read("/proc/{os.getpid()}/environ")),
                "socket": attempt(lambda: socket.create_connection(("127.0.0.1", {port}), 1)),
                "write_outside": attempt(lambda: write({str(outside)!r})),
                "write_checkout": attempt(lambda: write("features/planted.py")),
                "uid": os.getuid(),
            }}
            hostile = Entity("hostile", join_keys=["k"], description=json.dumps(seen))
            """})
        (definition,) = SandboxedLoader(FAST).load(tmp_path, "features")
        with pytest.raises(BlockingIOError):
            listener.accept()  # no connection ever reached the test's listener
    seen = json.loads(definition["description"])
    assert not any(secret in definition["description"] for secret in SECRETS.values())
    assert set(seen["environ"]) <= LOADER_ENVIRONMENT
    assert seen["registry_environ"].startswith("refused: FileNotFoundError")
    assert seen["socket"].startswith("refused: ConnectionRefusedError")
    assert seen["write_outside"].startswith("refused: ")
    assert seen["write_checkout"] == "refused: OSError: [Errno 30] Read-only file system: " \
                                     "'features/planted.py'"
    assert seen["uid"] == 65534
    assert not outside.exists()
    assert not (tmp_path / "features" / "planted.py").exists()
    assert not [pid for pid in _pids() if marker in _command_line(pid)]


def test_a_fork_bomb_is_stopped_and_leaves_nothing_running(
        tmp_path: Path, nothing_left_running: None) -> None:
    features(tmp_path, {"bomb.py": """
        import os, time
        while True:
            if os.fork() == 0:
                time.sleep(600)
        """})
    message = load_error(tmp_path, SandboxedLoader(SandboxLimits(wall_seconds=3, processes=8)))
    # The process limit stops the forks (a registry not running as root), or the deadline does.
    assert message.startswith("features/bomb.py:3: BlockingIOError: [Errno 11]") or \
        message.endswith("took longer than 3 s and was stopped"), message


def test_a_busy_loop_is_stopped_at_the_cpu_limit(tmp_path: Path,
                                                 nothing_left_running: None) -> None:
    features(tmp_path, {"loop.py": "while True:\n    pass\n"})
    started = time.monotonic()
    message = load_error(tmp_path)
    # On a busy machine the wall-clock limit (5 s) may come first; either stops it, and the
    # margin is for the machine, not for the limits (a loop left running never returns).
    assert time.monotonic() - started < 5 + 7
    assert message.endswith("and was stopped"), message


def test_a_sleeping_load_and_its_detached_processes_are_stopped_at_the_deadline(
        tmp_path: Path, nothing_left_running: None) -> None:
    features(tmp_path, {"sleep.py": """
        import os, subprocess, time
        subprocess.Popen(["sleep", "600"], start_new_session=True)
        time.sleep(600)
        """})
    started = time.monotonic()
    assert "took longer than 2 s and was stopped" in load_error(
        tmp_path, SandboxedLoader(SandboxLimits(wall_seconds=2, cpu_seconds=10)))
    assert time.monotonic() - started < 2 + 5  # the deadline, and a margin for a busy machine


def test_memory_is_limited(tmp_path: Path) -> None:
    features(tmp_path, {"hog.py": "hog = bytearray(2 * 1024 ** 3)\n"})
    assert "features/hog.py:1: MemoryError" in load_error(tmp_path)


# /tmp is absent in the sandbox, unless the project itself lives below /tmp: then /tmp is
# a read-only parent of its mount.  Either way the write is refused.
NO_TMP = ("FileNotFoundError: [Errno 2] No such file or directory",
          "OSError: [Errno 30] Read-only file system")


@pytest.mark.parametrize(("target", "refusals"), [
    ("sys.stderr.buffer", ("OSError: [Errno 27] File too large",)),
    ("open('features/big', 'wb')", ("OSError: [Errno 30] Read-only file system",)),
    ("open('/tmp/big', 'wb')", NO_TMP),
], ids=["output", "checkout", "tmp"])
def test_a_10_gb_write_is_stopped(tmp_path: Path, target: str,
                                  refusals: tuple[str, ...]) -> None:
    features(tmp_path, {"big.py": f"""
        import sys
        sink = {target}
        for _ in range(10 * 1024):
            sink.write(b"x" * (1 << 20))
        """})
    message = load_error(tmp_path, SandboxedLoader(
        SandboxLimits(wall_seconds=5, cpu_seconds=2, file_bytes=1 << 20)))
    assert message.startswith("features/big.py:"), message
    assert any(refusal in message for refusal in refusals), message


def test_a_crash_of_the_interpreter_is_reported(tmp_path: Path) -> None:
    features(tmp_path, {"crash.py": "import os\nos._exit(3)\n"})
    assert "exit status 3" in load_error(tmp_path)


def test_python_off_refuses_python_files_and_still_loads_yaml(tmp_path: Path) -> None:
    loader = SandboxedLoader(FAST, python_definitions="off")
    features(tmp_path, {"entities.yaml": ENTITY_YAML, "more/views.py": "x = 1\n"})
    assert load_error(tmp_path, loader) == (
        "features/more/views.py: Python definitions in pushes are refused "
        "(FP_WEBHOOK_PYTHON=off): write them in YAML or JSON, or set "
        "FP_WEBHOOK_PYTHON=sandboxed")
    (tmp_path / "features" / "more" / "views.py").unlink()
    assert [d["name"] for d in loader.load(tmp_path, "features")] == ["user"]


def test_without_bubblewrap_python_is_refused_naming_the_setting_and_yaml_loads(
        tmp_path: Path) -> None:
    loader = SandboxedLoader(FAST, bwrap="fp-no-such-bwrap")
    features(tmp_path, {"entities.yaml": ENTITY_YAML, "views.py": "x = 1\n"})
    message = load_error(tmp_path, loader)
    assert message.startswith("features/views.py: Python definitions in pushes run only in "
                              "the loader's sandbox, which is unavailable here "
                              "(fp-no-such-bwrap is not installed)"), message
    assert "install bubblewrap, or set FP_WEBHOOK_PYTHON=off" in message
    (tmp_path / "features" / "views.py").unlink()
    assert [d["name"] for d in loader.load(tmp_path, "features")] == ["user"]


def test_with_python_off_a_push_with_python_fails_and_a_yaml_only_push_applies(
        tmp_path: Path) -> None:
    remote = GitRemote(tmp_path / "remote")
    service = RegistryService(MemoryRegistryStore())
    webhooks = Webhooks(service, MemoryDeliveryInbox(), WebhookConfig(
        secret=SECRET, repositories=(remote.url,), cache_dir=tmp_path / "git-cache",
        limits=FAST, poll_seconds=0.2, python="off"))
    app = create_registry_app(service, extra_handlers=webhooks.route_handlers,
                              lifespan=[webhooks.lifespan])
    with TestClient(app) as client:
        with_python = push(client, remote, remote.commit_examples())
        assert with_python["status"] == "failed"
        assert with_python["error"].startswith(
            "features/entities.py: Python definitions in pushes are refused "
            "(FP_WEBHOOK_PYTHON=off)")
        yaml_only = push(client, remote, remote.commit({
            "features/entities.py": None, "features/sources.py": None,
            "features/views.yaml": None, "features/entities.yaml": ENTITY_YAML}))
        assert yaml_only["status"] == "applied", yaml_only
        assert [change["name"] for change in yaml_only["changes"]] == ["user"]


ENTITY_YAML = """
    kind: entity
    name: user
    join_keys: [user_id]
    """


def push(client: TestClient[Any], remote: GitRemote, commit: str) -> dict[str, Any]:
    body, headers = github_request(github_push(remote.url, commit), delivery=commit)
    assert client.post("/v1/webhooks/github", content=body, headers=headers).status_code == 202
    return poll(lambda: client.get(f"/v1/webhooks/deliveries/{commit}").json(), finished)


def _pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def _pid_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:  # gone, or not ours to inspect
        return None


def _command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie waits for a reaper that may be slow)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"
