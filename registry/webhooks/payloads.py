"""What a webhook request means, from its headers and JSON alone: no I/O here.

GitHub and GitLab say the same things in different words; :func:`read_event` and
:func:`read_push` turn either into one vocabulary — the kind of event, the delivery id, and
for pushes the :class:`Push` facts — and :func:`skip_reason` decides which pushes are applied:
those to the configured branch of a repository :class:`RepositoryAllowlist` accepts.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from core.errors import FeaturePlatformError
from registry.webhooks.git import (
    RefusedRepositoryError,
    url_scheme,
    validate_commit,
    without_credentials,
)

NULL_COMMIT = "0" * 40
_MAX_DELIVERY_ID_LENGTH = 200


class Provider(StrEnum):
    GITHUB = "github"
    GITLAB = "gitlab"


class EventKind(StrEnum):
    PING = "ping"
    PUSH = "push"
    OTHER = "other"


class PayloadError(FeaturePlatformError):
    """The request is not a webhook the platform can read (answered 400)."""


@dataclass(frozen=True)
class Event:
    kind: EventKind
    name: str
    """The provider's own name for it (``push``, ``Tag Push Hook``…), as recorded."""
    delivery_id: str


@dataclass(frozen=True)
class Push:
    """The facts of one push that decide whether and what to apply."""

    ref: str
    before: str
    after: str
    repository_url: str
    """Where to fetch from: ``repository.clone_url`` (GitHub), ``project.git_http_url`` (GitLab)."""
    pusher: str | None
    message: str | None
    """The pushed head commit's message, when the payload carries it."""

    @property
    def deletes_ref(self) -> bool:
        return self.after.strip("0") == ""


def read_event(provider: Provider, headers: Mapping[str, str], body: bytes) -> Event:
    """The event of a request whose signature was verified (``headers`` keys in lower case)."""
    if provider is Provider.GITHUB:
        name = headers.get("x-github-event", "")
        kind = {"ping": EventKind.PING, "push": EventKind.PUSH}.get(name, EventKind.OTHER)
        delivery = headers.get("x-github-delivery")
    else:
        name = headers.get("x-gitlab-event", "")
        # GitLab has no ping; its "Test" button sends a real push.  Tag pushes are pushes too,
        # and skip_reason turns them down with a reason.
        kind = EventKind.PUSH if name in ("Push Hook", "Tag Push Hook") else EventKind.OTHER
        # Idempotency-Key stays the same when GitLab resends a delivery, X-Gitlab-Event-UUID
        # may not: the first is what makes "processed once" hold.
        delivery = headers.get("idempotency-key") or headers.get("x-gitlab-event-uuid")
    if not name:
        header = "X-GitHub-Event" if provider is Provider.GITHUB else "X-Gitlab-Event"
        raise PayloadError(f"no {header} header: not a webhook delivery")
    return Event(kind, name, _delivery_id(delivery, body))


def _delivery_id(header: str | None, body: bytes) -> str:
    if header is None or not header.strip():
        # Without an id a retry of the same body still maps to the same delivery.
        return f"sha256-{hashlib.sha256(body).hexdigest()}"
    delivery = header.strip()
    if len(delivery) > _MAX_DELIVERY_ID_LENGTH or not delivery.isprintable() or "/" in delivery:
        raise PayloadError(f"the delivery id must be at most {_MAX_DELIVERY_ID_LENGTH} printable "
                           "characters without '/'")
    return delivery


def parse_json(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except ValueError as error:
        raise PayloadError(f"the body is not valid JSON: {error}") from None
    if not isinstance(payload, dict):
        raise PayloadError("the body must be a JSON object")
    return payload


def read_push(provider: Provider, payload: Mapping[str, Any]) -> Push:
    """The push facts of a push event payload; PayloadError when one is missing."""
    if provider is Provider.GITHUB:
        url = _text(_object(payload, "repository"), "clone_url", "repository.")
        pusher = _optional_object(payload, "pusher").get("name")
        message = _optional_object(payload, "head_commit").get("message")
    else:
        # Older GitLab versions sent only the deprecated "repository" object.
        project = _optional_object(payload, "project") or _object(payload, "repository")
        url = _text(project, "git_http_url", "project.")
        pusher = payload.get("user_username") or payload.get("user_name")
        message = None
    after = _text(payload, "after")
    try:
        validate_commit(after)
    except RefusedRepositoryError as error:
        raise PayloadError(f"'after': {error}") from None
    if message is None:  # GitLab: the pushed commit among the (at most 20) listed
        commits = payload.get("commits")
        message = next((c.get("message") for c in commits if isinstance(c, dict) and
                        c.get("id") == after), None) if isinstance(commits, list) else None
    return Push(ref=_text(payload, "ref"), before=str(payload.get("before") or ""), after=after,
                repository_url=url, pusher=_optional_text(pusher),
                message=_optional_text(message))


_OPEN_SCHEMES = ("https", "ssh")
"""Fetched from any repository; other transports only from a URL listed exactly: file://
reads the registry's own disk, http:// and git:// travel unauthenticated, and both reach
internal addresses as easily as public ones."""


@dataclass(frozen=True)
class RepositoryAllowlist:
    """``FP_GIT_REPOSITORIES``: which repositories pushes are applied from.

    An entry with ``://`` is a URL, matched exactly, whatever its scheme (a local mirror's
    ``file://`` URL included).  Any other entry is a full name (``org/repo``,
    ``group/subgroup/repo``), matched case-insensitively against the path of an https or ssh
    URL, with or without ``.git``, on any host.  No entries: any https or ssh repository.
    """

    entries: tuple[str, ...] = ()

    def refusal(self, url: str) -> str | None:
        """Why pushes of the repository at ``url`` are not applied; None when they are."""
        if url in self.entries:
            return None
        shown = without_credentials(url)
        scheme = url_scheme(url)
        if scheme not in _OPEN_SCHEMES:
            return (f"repository {shown} is not fetched: only https:// and ssh:// repositories "
                    "are, or a URL listed exactly in FP_GIT_REPOSITORIES")
        names = {entry.lower() for entry in self.entries if "://" not in entry}
        if self.entries and _full_name(url) not in names:
            return f"repository {shown} is not one of FP_GIT_REPOSITORIES"
        return None


def _full_name(url: str) -> str:
    """``org/repo`` of ``https://host/org/repo.git``: the URL's path, in lower case."""
    address = without_credentials(url).split("://", 1)[1]
    path = address.partition("/")[2].strip("/")
    return path.removesuffix(".git").lower()


def skip_reason(push: Push, branch: str, repositories: RepositoryAllowlist) -> str | None:
    """Why ``push`` is not applied, or None when it is a new commit on ``refs/heads/{branch}``
    of a repository ``repositories`` accepts."""
    refused = repositories.refusal(push.repository_url)
    if refused is not None:
        return refused
    applied_ref = f"refs/heads/{branch}"
    if push.ref.startswith("refs/tags/"):
        return f"tag push ({push.ref}): only pushes to {applied_ref} are applied"
    if push.deletes_ref:
        return f"{push.ref} was deleted: a deletion removes nothing from the registry"
    if push.ref != applied_ref:
        return f"push to {push.ref}: only pushes to {applied_ref} are applied (FP_GIT_BRANCH)"
    return None


def _object(payload: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = _optional_object(payload, key)
    if not value:
        raise PayloadError(f"the push payload has no '{key}' object")
    return value


def _optional_object(payload: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = payload.get(key)
    return value if isinstance(value, dict) else {}


def _text(payload: Mapping[str, Any], key: str, prefix: str = "") -> str:
    value = payload.get(key)
    if not isinstance(value, str) or not value:
        raise PayloadError(f"the push payload has no '{prefix}{key}' text")
    return value


def _optional_text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
