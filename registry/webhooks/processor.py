"""Processing one queued push: fetch the commit, load its definitions in the sandbox, apply.

Applying goes through :meth:`RegistryService.apply`, exactly like ``POST /v1/apply``, with
the push's provenance in every event's metadata.  A definition registered earlier but absent
from the pushed tree is neither deleted nor dropped silently: it stays registered and the
delivery lists it in ``missing_from_repository`` (docs/webhooks.md, "Deleted definitions").

A push of the commit applied last from its branch, or of an ancestor of it, is skipped: the
signature covers the body only, so an old push can be sent again under a new delivery id, and
a provider may deliver two pushes out of order — applying either would register old
definitions as new versions, which the deployer rolls out.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.domain.changes import Action, Change
from core.domain.events import Provenance
from core.errors import ConcurrencyConflictError, FeaturePlatformError
from registry.service import RegistryService
from registry.webhooks.git import GitRepositoryCache, without_credentials
from registry.webhooks.inbox import ClaimedDelivery, DeliveryOutcome, DeliveryStatus
from registry.webhooks.payloads import (
    Provider,
    Push,
    RepositoryAllowlist,
    parse_json,
    read_push,
    skip_reason,
)
from registry.webhooks.sandbox import SandboxedLoader

logger = logging.getLogger(__name__)

_APPLY_ATTEMPTS = 3
MAX_ERROR_CHARACTERS = 4000
"""A delivery's recorded error is cut to this: it is read by people, and stored forever."""


@dataclass(frozen=True)
class PushTarget:
    """Which pushes are applied and where their definitions are."""

    branch: str
    features_path: str
    repositories: RepositoryAllowlist


class DeliveryProcessor:
    def __init__(self, service: RegistryService, repositories: GitRepositoryCache,
                 loader: SandboxedLoader, target: PushTarget) -> None:
        self.service = service
        self.repositories = repositories
        self.loader = loader
        self.target = target

    def __call__(self, delivery: ClaimedDelivery) -> DeliveryOutcome:
        try:
            push = read_push(Provider(delivery.provider), parse_json(delivery.payload))
            # Decided again here: FP_GIT_BRANCH or FP_GIT_REPOSITORIES may have changed since
            # the delivery was queued.
            reason = (skip_reason(push, self.target.branch, self.target.repositories)
                      or self._superseded(push, delivery.applied_commit))
            if reason is not None:
                logger.info("webhook delivery %s skipped: %s", delivery.delivery_id, reason)
                return DeliveryOutcome(DeliveryStatus.SKIPPED, reason=reason)
            changes = self._apply(push, self._load(push), _provenance(delivery, push))
        except FeaturePlatformError as error:
            message = _public_error(str(error))
            logger.warning("webhook delivery %s failed: %s", delivery.delivery_id, message)
            return DeliveryOutcome(DeliveryStatus.FAILED, error=message)
        except Exception as error:
            # A bug must not leave the delivery queued forever, retried on every poll.
            logger.exception("webhook delivery %s failed unexpectedly", delivery.delivery_id)
            return DeliveryOutcome(DeliveryStatus.FAILED, error=_public_error(
                f"internal error: {type(error).__name__}: {error}"))
        missing = self._missing_from(changes)
        if missing:
            logger.warning("webhook delivery %s: registered definitions not in the pushed "
                           "repository (kept registered): %s", delivery.delivery_id,
                           ", ".join(missing))
        logger.info("webhook delivery %s applied commit %s: %d changed", delivery.delivery_id,
                    push.after[:12], sum(c.action is not Action.UNCHANGED for c in changes))
        return DeliveryOutcome(DeliveryStatus.APPLIED, changes=[c.to_json() for c in changes],
                               missing_from_repository=missing)

    def _superseded(self, push: Push, applied_commit: str | None) -> str | None:
        """Why ``push`` would roll its branch back, or None when it brings a newer commit."""
        if applied_commit is None:
            return None
        if push.after == applied_commit:
            return f"commit {push.after} is already applied"
        if self.repositories.is_ancestor(push.repository_url, push.after, applied_commit):
            return (f"commit {push.after} is an ancestor of applied {applied_commit}: an old "
                    "push delivered again or late; to go back, push a commit that reverts")
        return None

    def _load(self, push: Push) -> list[dict[str, Any]]:
        with tempfile.TemporaryDirectory(prefix="fp-push-") as checkout:
            self.repositories.export(push.repository_url, push.after, self.target.features_path,
                                     Path(checkout))
            return self.loader.load(Path(checkout), self.target.features_path)

    def _apply(self, push: Push, definitions: list[dict[str, Any]],
               provenance: Provenance) -> list[Change]:
        attempt = 1
        while True:
            try:
                return self.service.apply(definitions, provenance)
            except ConcurrencyConflictError:
                # Someone registered a definition this push touches meanwhile: plan again
                # against what is registered now.
                if attempt == _APPLY_ATTEMPTS:
                    raise
                attempt += 1
                logger.info("commit %s: concurrent change, applying again", push.after[:12])

    def _missing_from(self, changes: list[Change]) -> list[str]:
        pushed = {change.key for change in changes}
        return sorted(f"{record.kind}:{record.name}"
                      for record in self.service.store.definitions()
                      if f"{record.kind}:{record.name}" not in pushed)


def _public_error(message: str) -> str:
    """``message`` fit to be recorded and shown: without credentials (git's messages and a
    driver's quote URLs), and bounded (their end is kept: that is where the cause is)."""
    public = without_credentials(message)
    if len(public) <= MAX_ERROR_CHARACTERS:
        return public
    return "…" + public[-(MAX_ERROR_CHARACTERS - 1):]


def _provenance(delivery: ClaimedDelivery, push: Push) -> Provenance:
    return Provenance(actor=f"webhook:{delivery.provider}", message=push.message,
                      provider=delivery.provider,
                      repository=without_credentials(push.repository_url), ref=push.ref,
                      commit=push.after, delivery_id=delivery.delivery_id, pusher=push.pusher)
