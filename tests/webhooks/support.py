"""Helpers for the webhook tests: a local git remote, payloads shaped like the providers' own,
and requests signed the way GitHub signs them."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fp.local.base import answers_ok

FIXTURES = Path(__file__).resolve().parent / "fixtures"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "features"
SECRET = "It's a Secret to Everybody"
NULL_SHA = "0" * 40


class GitRemote:
    """A bare repository reachable by a ``file://`` URL, and a work tree that pushes to it."""

    def __init__(self, root: Path) -> None:
        self.bare = root / "origin.git"
        self.work = root / "work"
        self.url = self.bare.as_uri()
        root.mkdir(parents=True, exist_ok=True)
        self._git(root, "init", "--quiet", "--bare", "--initial-branch=main", str(self.bare))
        self._git(root, "init", "--quiet", "--initial-branch=main", str(self.work))

    def commit(self, files: Mapping[str, str | None], message: str = "change",
               branch: str = "main") -> str:
        """Write (or, for None, delete) ``files``, commit, push ``branch``; the new commit id."""
        self._git(self.work, "checkout", "--quiet", "-B", branch)
        for name, text in files.items():
            path = self.work / name
            if text is None:
                path.unlink()
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text).lstrip())
        self._git(self.work, "add", "--all")
        self._git(self.work, "commit", "--quiet", "--allow-empty", "-m", message)
        self._git(self.work, "push", "--quiet", "--force", str(self.bare), f"HEAD:{branch}")
        return self.head()

    def commit_examples(self, message: str = "payments features") -> str:
        """Commit the example features repository as ``features/``."""
        shutil.copytree(EXAMPLES, self.work / "features", dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
        return self.commit({}, message)

    def head(self) -> str:
        return self._git(self.work, "rev-parse", "HEAD").strip()

    @staticmethod
    def _git(cwd: Path, *args: str) -> str:
        return subprocess.run(
            ["git", "-c", "user.name=Codertocat", "-c", "user.email=codertocat@example.com",
             *args], cwd=cwd, check=True, capture_output=True, text=True, timeout=60).stdout


def github_push(url: str, after: str, before: str = NULL_SHA,
                ref: str = "refs/heads/main") -> dict[str, Any]:
    """GitHub's own push example (fixture) pointed at ``url`` and the pushed commit."""
    payload: dict[str, Any] = json.loads((FIXTURES / "github_push.json").read_text())
    payload.update(ref=ref, before=before, after=after, deleted=after == NULL_SHA)
    payload["repository"]["clone_url"] = url
    for commit in (*payload["commits"], payload["head_commit"]):
        commit["id"] = after
    return payload


def gitlab_push(url: str, after: str, before: str = NULL_SHA,
                ref: str = "refs/heads/main") -> dict[str, Any]:
    """The equivalent GitLab push payload (fixture) pointed at ``url`` and the pushed commit."""
    payload: dict[str, Any] = json.loads((FIXTURES / "gitlab_push.json").read_text())
    payload.update(ref=ref, before=before, after=after, checkout_sha=after)
    payload["project"]["git_http_url"] = payload["repository"]["git_http_url"] = url
    payload["commits"][0]["id"] = after
    return payload


def sign(body: bytes, secret: str = SECRET) -> str:
    """``X-Hub-Signature-256`` exactly as GitHub computes it (and @octokit/webhooks-methods)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def github_request(payload: Any, event: str = "push", delivery: str | None = None,
                   secret: str = SECRET) -> tuple[bytes, dict[str, str]]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return body, {"Content-Type": "application/json", "X-GitHub-Event": event,
                  "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
                  "X-Hub-Signature-256": sign(body, secret),
                  "User-Agent": "GitHub-Hookshot/test"}


def gitlab_request(payload: Any, event: str = "Push Hook", delivery: str | None = None,
                   token: str = SECRET) -> tuple[bytes, dict[str, str]]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return body, {"Content-Type": "application/json", "X-Gitlab-Event": event,
                  "X-Gitlab-Event-UUID": delivery or str(uuid.uuid4()),
                  "X-Gitlab-Token": token}


def poll(read: Callable[[], dict[str, Any]], done: Callable[[dict[str, Any]], bool],
         timeout: float = 60.0, interval: float = 0.05) -> dict[str, Any]:
    """``read()`` again until ``done`` holds for its answer; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        answer = read()
        if done(answer):
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"still not done after {timeout:g} s: {answer}")
        time.sleep(interval)


def finished(delivery: dict[str, Any]) -> bool:
    return delivery.get("status") not in (None, "queued")


def with_description(view_yaml: str, description: str) -> str:
    """views.yaml of the examples with ``user_transactions``'s description replaced."""
    return view_yaml.replace("description: Spending of each user over the last minutes.",
                             f"description: {description}")


def examples_file(name: str) -> str:
    return (EXAMPLES / name).read_text()


@dataclass(frozen=True)
class RunningRegistry:
    process: subprocess.Popen[bytes]
    url: str


@contextmanager
def registry_server(database_url: str, cache_home: Path, log: Path,
                    repository_url: str) -> Iterator[RunningRegistry]:
    """The real ``fp registry serve`` on a free port, with webhooks configured to apply pushes
    of ``repository_url``."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    env = {**os.environ, "FP_DATABASE_URL": database_url, "FP_WEBHOOK_SECRET": SECRET,
           "FP_GIT_BRANCH": "main", "FP_FEATURES_PATH": "features",
           "FP_GIT_REPOSITORIES": repository_url,
           "XDG_CACHE_HOME": str(cache_home)}
    with log.open("ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "fp.cli", "registry", "serve", "--port", str(port)],
            env=env, stdout=output, stderr=subprocess.STDOUT)
    server = RunningRegistry(process, f"http://127.0.0.1:{port}")
    try:
        poll(lambda: {"up": answers_ok(f"{server.url}/healthz")}, lambda r: bool(r["up"]),
             timeout=30)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)



