"""Git push webhooks: receive, store, process in the background.

The rules are in docs/reference.md, "Git push webhooks".

A push is stored in the inbox (:mod:`.inbox`) and answered at once by :mod:`.receiver`; the
worker (:mod:`.worker`) later fetches the pushed commit (:mod:`.git`), loads its definitions in
a sandbox (:mod:`.sandbox`) and applies them (:mod:`.processor`).  Parsing and
authentication are pure (:mod:`.payloads`, :mod:`.signatures`).  :class:`Webhooks` puts the
pieces together for the registry app: its route handlers and a lifespan that runs the worker
and publishes the delivery counts on ``/metrics``.  See docs/webhooks.md.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import anyio.to_thread
from litestar import Litestar
from litestar.handlers import HTTPRouteHandler
from prometheus_client import REGISTRY

from core.settings import WebhookPython
from registry.service import RegistryService
from registry.webhooks.git import GitRepositoryCache
from registry.webhooks.inbox import DeliveryInbox
from registry.webhooks.metrics import DeliveryCountCollector
from registry.webhooks.payloads import Provider, RepositoryAllowlist
from registry.webhooks.processor import DeliveryProcessor, PushTarget
from registry.webhooks.receiver import WebhookReceiver, webhook_route_handlers
from registry.webhooks.sandbox import SandboxedLoader, SandboxLimits
from registry.webhooks.worker import DEFAULT_POLL_SECONDS, DeliveryWorker, Retention

__all__ = ["SandboxLimits", "WebhookConfig", "Webhooks", "default_cache_dir"]


def default_cache_dir() -> Path:
    """Where clones of pushed repositories are kept: ``$XDG_CACHE_HOME/fp/git``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fp" / "git"


@dataclass(frozen=True)
class WebhookConfig:
    secret: str | None
    """FP_WEBHOOK_SECRET: the secret of each provider without one of its own; a provider
    without any secret is refused (403)."""
    github_secret: str | None = None
    gitlab_secret: str | None = None
    repositories: tuple[str, ...] = ()
    """FP_GIT_REPOSITORIES: full names or exact URLs; none: any https or ssh repository."""
    retention: timedelta = timedelta(days=7)
    branch: str = "main"
    features_path: str = "features"
    cache_dir: Path = field(default_factory=default_cache_dir)
    limits: SandboxLimits = field(default_factory=SandboxLimits)
    python: WebhookPython = "sandboxed"
    """FP_WEBHOOK_PYTHON: whether pushed Python definitions run in the loader's sandbox."""
    poll_seconds: float = DEFAULT_POLL_SECONDS


class Webhooks:
    """The webhook receiver and its worker, ready to plug into ``create_registry_app``."""

    def __init__(self, service: RegistryService, inbox: DeliveryInbox,
                 config: WebhookConfig) -> None:
        self.inbox = inbox
        repositories = RepositoryAllowlist(config.repositories)
        target = PushTarget(config.branch, config.features_path.strip("/") or ".",
                            repositories)
        clones = GitRepositoryCache(config.cache_dir)
        processor = DeliveryProcessor(service, clones,
                                      SandboxedLoader(config.limits, config.python), target)
        self.worker = DeliveryWorker(self.inbox, processor,
                                     Retention(self.inbox, clones, config.retention),
                                     config.poll_seconds)
        secrets = {Provider.GITHUB: config.github_secret or config.secret,
                   Provider.GITLAB: config.gitlab_secret or config.secret}
        receiver = WebhookReceiver(self.inbox, secrets, config.branch, repositories,
                                   on_queued=self.worker.wake)
        self.route_handlers: list[HTTPRouteHandler] = webhook_route_handlers(receiver,
                                                                             self.inbox)

    @asynccontextmanager
    async def lifespan(self, _: Litestar) -> AsyncIterator[None]:
        """Runs the worker and publishes the delivery counts while the app is up."""
        collector = DeliveryCountCollector(self.inbox)
        try:
            REGISTRY.register(collector)
            published = True
        except ValueError:  # another app in this process publishes the same counts already
            published = False
        self.worker.start()
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(self.worker.stop)
            if published:
                REGISTRY.unregister(collector)
