"""The processor's recorded errors: without credentials and bounded, whatever raised them."""

from __future__ import annotations

import json
from pathlib import Path

from registry.service import RegistryService
from registry.store.memory import MemoryRegistryStore
from registry.webhooks.git import GitError, GitRepositoryCache
from registry.webhooks.inbox import ClaimedDelivery, DeliveryStatus
from registry.webhooks.payloads import RepositoryAllowlist
from registry.webhooks.processor import MAX_ERROR_CHARACTERS, DeliveryProcessor, PushTarget
from registry.webhooks.sandbox import SandboxedLoader
from tests.webhooks.support import github_push

URL = "https://github.com/acme/features.git"
LEAK = "https://ci:hunter2@git.example/acme/features.git?private_token=hunter2"
NOISE = "remote: noise\n" * 1000


class FailingClones(GitRepositoryCache):
    """A repository cache whose git fails with a long message quoting a URL with a token."""

    def export(self, url: str, commit: str, folder: str, destination: Path) -> Path:
        raise GitError(f"git fetch failed: {NOISE}fatal: {LEAK} is gone")


def test_a_failure_is_recorded_bounded_and_without_credentials(tmp_path: Path) -> None:
    processor = DeliveryProcessor(RegistryService(MemoryRegistryStore()),
                                  FailingClones(tmp_path),
                                  SandboxedLoader(),
                                  PushTarget("main", "features", RepositoryAllowlist()))
    payload = json.dumps(github_push(URL, "a" * 40)).encode()

    outcome = processor(ClaimedDelivery("github", "d1", payload))

    assert outcome.status is DeliveryStatus.FAILED
    assert outcome.error is not None and len(outcome.error) <= MAX_ERROR_CHARACTERS
    assert outcome.error.endswith("fatal: https://git.example/acme/features.git is gone")
    assert "hunter2" not in outcome.error
