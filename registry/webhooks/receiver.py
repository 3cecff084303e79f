"""The webhook HTTP endpoints: authenticate, store, answer, wake.

The rules are in docs/reference.md, "Git push webhooks".

A request is checked in this order, and refused at the first failure with nothing stored:
the provider's secret is configured (403), the body is at most 25 MB (413), the signature or
token is valid (401), the body is a JSON object (400).  Then a ping is answered 204; anything
else is stored in the inbox — ``queued`` when it is a push to apply (the configured branch of
an allowed repository), ``skipped`` with the reason otherwise — and answered 202 with the
delivery as recorded.  Processing happens in the worker, so the answer never waits for git or
the definitions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from litestar import Request, Response, get, post
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers import BaseRouteHandler, HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, RawBody

from core.errors import NotFoundError
from core.problems import problem_responses
from core.settings import GITHUB_WEBHOOK_SECRET, GITLAB_WEBHOOK_SECRET, WEBHOOK_SECRET
from registry.webhooks.git import without_credentials
from registry.webhooks.inbox import DeliveryInbox, DeliveryStatus, NewDelivery
from registry.webhooks.payloads import (
    EventKind,
    Provider,
    RepositoryAllowlist,
    parse_json,
    read_event,
    read_push,
    skip_reason,
)
from registry.webhooks.signatures import github_signature_valid, gitlab_token_valid

MAX_BODY_BYTES = 25 * 1024 * 1024


_SECRET_VARIABLES = {Provider.GITHUB: GITHUB_WEBHOOK_SECRET, Provider.GITLAB: GITLAB_WEBHOOK_SECRET}


class WebhookReceiver:
    def __init__(self, inbox: DeliveryInbox, secrets: Mapping[Provider, str | None],
                 branch: str, repositories: RepositoryAllowlist,
                 on_queued: Callable[[], None]) -> None:
        self.inbox = inbox
        self.secrets = secrets
        """Each provider's secret; a provider without one is refused (403)."""
        self.branch = branch
        self.repositories = repositories
        self.on_queued = on_queued

    def receive(self, provider: Provider, headers: Mapping[str, str],
                body: bytes) -> dict[str, Any] | None:
        """The delivery as recorded, or None for a ping.  ``headers`` keys are lower case."""
        if not self._authentic(provider, headers, body):
            raise NotAuthorizedException(
                "invalid X-Hub-Signature-256" if provider is Provider.GITHUB
                else "invalid X-Gitlab-Token")
        payload = parse_json(body)
        event = read_event(provider, headers, body)
        if event.kind is EventKind.PING:
            return None
        status = DeliveryStatus.SKIPPED
        reason: str | None = f"{event.name!r} events are not applied; only pushes are"
        repository: str | None = None
        ref: str | None = None
        commit: str | None = None
        if event.kind is EventKind.PUSH:
            push = read_push(provider, payload)
            reason = skip_reason(push, self.branch, self.repositories)
            status = DeliveryStatus.SKIPPED if reason else DeliveryStatus.QUEUED
            repository = without_credentials(push.repository_url)
            ref, commit = push.ref, push.after
        record, stored = self.inbox.receive(NewDelivery(
            provider=provider.value, delivery_id=event.delivery_id, event=event.name,
            payload=body, status=status, repository=repository, ref=ref, commit=commit,
            reason=reason))
        if stored and record.status is DeliveryStatus.QUEUED:
            self.on_queued()
        return record.to_json()

    def _authentic(self, provider: Provider, headers: Mapping[str, str], body: bytes) -> bool:
        secret = self.require_secret(provider)
        if provider is Provider.GITHUB:
            return github_signature_valid(secret, body, headers.get("x-hub-signature-256"))
        return gitlab_token_valid(secret, headers.get("x-gitlab-token"))

    def require_secret(self, provider: Provider) -> str:
        secret = self.secrets.get(provider)
        if not secret:
            raise PermissionDeniedException(
                f"{provider.value} webhooks are disabled: neither "
                f"{_SECRET_VARIABLES[provider].name} nor {WEBHOOK_SECRET.name} is set")
        return secret

    def secret_guard(self, provider: Provider) -> Callable[
            [ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], None]:
        """Refuses before the body is read, so an unconfigured provider's body is never read."""
        def guard(_: ASGIConnection[Any, Any, Any, Any], __: BaseRouteHandler) -> None:
            self.require_secret(provider)
        return guard


def webhook_route_handlers(receiver: WebhookReceiver,
                           inbox: DeliveryInbox) -> list[HTTPRouteHandler]:
    def endpoint(provider: Provider, path: str) -> HTTPRouteHandler:
        @post(path, sync_to_thread=True, guards=[receiver.secret_guard(provider)], status_code=202,
              request_max_body_size=MAX_BODY_BYTES, name=f"webhook-{provider.value}",
              summary=f"{provider.value.capitalize()} push webhook", tags=["webhooks"],
              responses={204: ResponseSpec(None, description="A ping: nothing to do."),
                         **problem_responses(400, 401, 403, 413)})
        def receive(request: Request[Any, Any, Any], body: RawBody) -> Response[Any]:
            headers = {name.lower(): value for name, value in request.headers.items()}
            recorded = receiver.receive(provider, headers, body)
            if recorded is None:
                return Response(None, status_code=204)
            return Response(recorded, status_code=202)

        return receive

    @get("/v1/webhooks/deliveries/{delivery_id:str}", sync_to_thread=True, tags=["webhooks"],
         summary="One webhook delivery: status, commit, changes, error",
         responses=problem_responses(404))
    def delivery(delivery_id: FromPath[str]) -> dict[str, Any]:
        record = inbox.get(delivery_id)
        if record is None:
            raise NotFoundError(f"no webhook delivery {delivery_id!r} was received")
        return record.to_json()

    return [endpoint(Provider.GITHUB, "/v1/webhooks/github"),
            endpoint(Provider.GITLAB, "/v1/webhooks/gitlab"), delivery]
