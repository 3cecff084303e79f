"""Payload → push facts, delivery ids and skip rules: pure, no services."""

from __future__ import annotations

import json
from typing import Any

import pytest

from registry.webhooks.payloads import (
    EventKind,
    PayloadError,
    Provider,
    RepositoryAllowlist,
    parse_json,
    read_event,
    read_push,
    skip_reason,
)
from tests.webhooks.support import FIXTURES, NULL_SHA, github_push, gitlab_push

SHA = "6113728f27ae82c7b1a177c8d03f9e96e0adf246"


def fixture(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return loaded


def test_github_example_push_as_published():
    push = read_push(Provider.GITHUB, fixture("github_push.json"))

    assert (push.ref, push.before, push.after) == ("refs/heads/master", NULL_SHA, SHA)
    assert push.repository_url == "https://github.com/Codertocat/Hello-World.git"
    assert (push.pusher, push.message) == ("Codertocat", "Initial commit")


def test_gitlab_push_reads_the_same_facts():
    push = read_push(Provider.GITLAB, fixture("gitlab_push.json"))

    assert (push.ref, push.after) == ("refs/heads/master", SHA)
    assert push.repository_url == "https://gitlab.example.com/codercat/hello-world.git"
    assert (push.pusher, push.message) == ("codercat", "Initial commit\n")


def test_gitlab_push_without_project_falls_back_to_the_old_repository_object():
    payload = gitlab_push("file:///srv/repo.git", SHA)
    del payload["project"]
    assert read_push(Provider.GITLAB, payload).repository_url == "file:///srv/repo.git"


@pytest.mark.parametrize(("provider", "payload"), [
    (Provider.GITHUB, github_push("file:///srv/repo.git", SHA)),
    (Provider.GITLAB, gitlab_push("file:///srv/repo.git", SHA)),
])
@pytest.mark.parametrize("missing", ["ref", "after"])
def test_a_push_without_ref_or_commit_is_refused(provider, payload, missing):
    del payload[missing]
    with pytest.raises(PayloadError, match=missing):
        read_push(provider, payload)


def test_a_push_whose_commit_is_not_a_sha_is_refused():
    with pytest.raises(PayloadError, match="after"):
        read_push(Provider.GITHUB, github_push("file:///srv/repo.git", "HEAD"))


def test_pusher_and_message_are_optional():
    payload = github_push("file:///srv/repo.git", SHA)
    del payload["pusher"], payload["head_commit"]
    payload["commits"] = []
    assert (read_push(Provider.GITHUB, payload).pusher,
            read_push(Provider.GITHUB, payload).message) == (None, None)


def test_a_push_without_a_clone_url_is_refused():
    payload = github_push("file:///srv/repo.git", SHA)
    del payload["repository"]["clone_url"]
    with pytest.raises(PayloadError, match=r"repository\.clone_url"):
        read_push(Provider.GITHUB, payload)


ANY_REPOSITORY = RepositoryAllowlist()
REPOSITORY = "https://github.com/Codertocat/Hello-World.git"


def push(ref: str, after: str = SHA, url: str = REPOSITORY):
    return read_push(Provider.GITHUB, github_push(url, after, ref=ref))


def test_a_new_commit_on_the_configured_branch_is_applied():
    assert skip_reason(push("refs/heads/main"), "main", ANY_REPOSITORY) is None
    assert skip_reason(push("refs/heads/release/2.x"), "release/2.x", ANY_REPOSITORY) is None


@pytest.mark.parametrize(("ref", "after", "reason"), [
    ("refs/heads/feature", SHA, "push to refs/heads/feature: only pushes to refs/heads/main"),
    ("refs/heads/main-old", SHA, "push to refs/heads/main-old"),
    ("refs/tags/v1.0", SHA, "tag push (refs/tags/v1.0)"),
    ("refs/tags/v1.0", NULL_SHA, "tag push"),
    ("refs/heads/main", NULL_SHA, "refs/heads/main was deleted"),
])
def test_other_branches_tags_and_deletions_are_skipped(ref, after, reason):
    assert reason in (skip_reason(push(ref, after), "main", ANY_REPOSITORY) or "")


def test_githubs_own_tag_deletion_example_is_skipped():
    # The published example deleting refs/tags/simple-tag, reduced to what is read.
    payload = github_push("https://github.com/Codertocat/Hello-World.git", NULL_SHA,
                          before=SHA, ref="refs/tags/simple-tag")
    assert "tag push" in (skip_reason(read_push(Provider.GITHUB, payload), "main",
                                          ANY_REPOSITORY) or "")


@pytest.mark.parametrize("url", [
    "https://github.com/Codertocat/Hello-World.git",
    "ssh://git@github.com/Codertocat/Hello-World.git",
    "ssh://internal-host/srv/features.git",
])
def test_without_a_list_any_https_or_ssh_repository_is_applied(url):
    assert RepositoryAllowlist().refusal(url) is None


@pytest.mark.parametrize("url", [
    "file:///srv/git/features.git",
    "http://169.254.169.254/latest/meta-data.git",
    "http://gitlab.internal/group/repo.git",
    "git://github.com/Codertocat/Hello-World.git",
    "ext::sh -c touch% /tmp/pwned",
    "git@github.com:Codertocat/Hello-World.git",
    "https://[unbalanced/repo.git",
])
def test_without_a_list_other_transports_are_refused(url):
    refusal = RepositoryAllowlist().refusal(url)
    assert refusal is not None and "only https:// and ssh://" in refusal
    assert "is not fetched" in (skip_reason(push("refs/heads/main", url=url), "main",
                                            RepositoryAllowlist()) or "")


def test_a_listed_name_admits_that_repository_on_https_or_ssh_only():
    listed = RepositoryAllowlist(("codertocat/hello-world", "acme/group/features"))
    for url in ("https://github.com/Codertocat/Hello-World.git",
                "https://github.com/Codertocat/Hello-World",
                "ssh://git@github.com/Codertocat/Hello-World.git",
                "https://gitlab.example/acme/group/features.git"):
        assert listed.refusal(url) is None, url
    for url in ("https://github.com/Codertocat/Other.git",  # an org-wide hook's other repository
                "https://github.com/Codertocat/Hello-World/extra.git",
                "https://gitlab.example/acme/features.git"):
        assert "is not one of FP_GIT_REPOSITORIES" in (listed.refusal(url) or ""), url
    assert "only https:// and ssh://" in (
        listed.refusal("http://github.com/Codertocat/Hello-World.git") or "")


def test_a_listed_url_is_admitted_exactly_whatever_its_scheme():
    mirror = "file:///srv/mirrors/features.git"
    listed = RepositoryAllowlist((mirror,))
    assert listed.refusal(mirror) is None
    assert listed.refusal("file:///srv/mirrors/other.git") is not None
    assert listed.refusal("https://github.com/srv/mirrors/features.git") is not None


def test_a_refusal_shows_the_url_without_credentials():
    url = "http://oauth2:glpat-secret@gitlab.internal/g/r.git?private_token=glpat-secret"
    refusal = RepositoryAllowlist().refusal(url)
    assert refusal is not None and "gitlab.internal/g/r.git" in refusal
    assert "glpat-secret" not in refusal


@pytest.mark.parametrize(("provider", "headers", "kind"), [
    (Provider.GITHUB, {"x-github-event": "push"}, EventKind.PUSH),
    (Provider.GITHUB, {"x-github-event": "ping"}, EventKind.PING),
    (Provider.GITHUB, {"x-github-event": "issues"}, EventKind.OTHER),
    (Provider.GITLAB, {"x-gitlab-event": "Push Hook"}, EventKind.PUSH),
    (Provider.GITLAB, {"x-gitlab-event": "Tag Push Hook"}, EventKind.PUSH),
    (Provider.GITLAB, {"x-gitlab-event": "Merge Request Hook"}, EventKind.OTHER),
])
def test_event_kinds(provider, headers, kind):
    assert read_event(provider, headers, b"{}").kind is kind


def test_a_request_without_an_event_header_is_refused():
    with pytest.raises(PayloadError, match="X-GitHub-Event"):
        read_event(Provider.GITHUB, {"x-github-delivery": "d1"}, b"{}")


def test_delivery_ids():
    github = {"x-github-event": "push", "x-github-delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958"}
    assert read_event(Provider.GITHUB, github, b"{}").delivery_id == github["x-github-delivery"]

    gitlab = {"x-gitlab-event": "Push Hook", "x-gitlab-event-uuid": "event-uuid"}
    assert read_event(Provider.GITLAB, gitlab, b"{}").delivery_id == "event-uuid"
    # Idempotency-Key survives GitLab's resends; the event UUID may not.
    resent = {**gitlab, "idempotency-key": "idempotency-key"}
    assert read_event(Provider.GITLAB, resent, b"{}").delivery_id == "idempotency-key"


def test_without_a_delivery_id_the_body_digest_stands_in():
    headers = {"x-gitlab-event": "Push Hook"}
    first = read_event(Provider.GITLAB, headers, b'{"a": 1}').delivery_id
    assert first.startswith("sha256-")
    assert read_event(Provider.GITLAB, headers, b'{"a": 1}').delivery_id == first
    assert read_event(Provider.GITLAB, headers, b'{"a": 2}').delivery_id != first


@pytest.mark.parametrize("delivery", ["a/b", "x" * 201, "tab\there"])
def test_unusable_delivery_ids_are_refused(delivery):
    with pytest.raises(PayloadError, match="delivery id"):
        read_event(Provider.GITHUB, {"x-github-event": "push", "x-github-delivery": delivery},
                   b"{}")


@pytest.mark.parametrize("body", [b"{not json", b"", b"[1, 2]", b'"text"', b"\xff\xfe"])
def test_bodies_that_are_not_a_json_object_are_refused(body):
    with pytest.raises(PayloadError):
        parse_json(body)
